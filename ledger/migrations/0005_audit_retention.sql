-- Retention (issue 6, item 6): the audit records live in monthly partitions of their ingest
-- time, so records past retention leave by dropping whole partitions (`countersign audit
-- prune`, run as the schema owner), never by rewriting rows.
--
-- What the prune keeps so the remaining log still verifies: a signed checkpoint written first
-- (covering the pruned records), the Merkle nodes (hashes only, no record content), and one
-- row in `audit_prune_anchors` naming the last pruned sequence and its chain hash. `audit
-- verify` then starts the chain at the anchor and proves the anchor's leaf against the signed
-- checkpoint, so an anchor cannot be invented to hide a cut.
--
-- The small per-record tables (seals, index, encrypted inputs, outbox) are not partitioned:
-- the prune deletes their rows of the pruned sequences in the same transaction. audit_seals
-- keeps its global primary key on `sequence`, the second line of defence against two sealers.

-- 1. A unique key of a partitioned table must contain the partition key, so foreign keys
--    into audit_records (record_id alone) cannot stay. The chain and `audit verify` are what
--    tie seals, inputs and outbox rows to their records.
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT conname, conrelid::regclass AS referencing
        FROM pg_constraint
        WHERE contype = 'f' AND confrelid = 'audit_records'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.referencing, fk.conname);
    END LOOP;
END;
$$;

-- 2. audit_records becomes a table partitioned by month of ingested_at (UTC).
ALTER TABLE audit_records RENAME TO audit_records_unpartitioned;
ALTER INDEX audit_records_decision_id RENAME TO audit_records_unpartitioned_decision_id;
ALTER TABLE audit_records_unpartitioned
    RENAME CONSTRAINT audit_records_pkey TO audit_records_unpartitioned_pkey;
CREATE TABLE audit_records (LIKE audit_records_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (ingested_at);
ALTER TABLE audit_records ADD PRIMARY KEY (record_id, ingested_at);
ALTER SEQUENCE audit_records_ingest_id_seq OWNED BY audit_records.ingest_id;
CREATE INDEX audit_records_decision_id ON audit_records (decision_id);
CREATE INDEX audit_records_record_id ON audit_records (record_id);
CREATE INDEX audit_records_ingest_id ON audit_records (ingest_id);

-- Creates the monthly partitions [first_month, first_month + months) that do not exist yet.
-- SECURITY DEFINER: the gateway (countersign_app, no DDL rights) keeps the next months ready.
CREATE FUNCTION countersign_audit_partitions(first_month date, months integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public
AS $$
DECLARE
    month_start date;
    created integer := 0;
    name text;
BEGIN
    IF months < 1 OR months > 240 THEN
        RAISE EXCEPTION 'months must be 1..240, got %', months;
    END IF;
    FOR step IN 0 .. months - 1 LOOP
        month_start := (date_trunc('month', first_month) + make_interval(months => step))::date;
        name := 'audit_records_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_records FOR VALUES FROM (%L) TO (%L)',
                name,
                to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char((month_start + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
REVOKE ALL ON FUNCTION countersign_audit_partitions(date, integer) FROM PUBLIC;

-- Months of the existing rows, and three months ahead.
DO $$
DECLARE
    first_month date := date_trunc('month', COALESCE(
        (SELECT min(ingested_at) FROM audit_records_unpartitioned), now()) AT TIME ZONE 'UTC')::date;
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    PERFORM countersign_audit_partitions(
        first_month,
        ((EXTRACT(YEAR FROM this_month) - EXTRACT(YEAR FROM first_month)) * 12
            + EXTRACT(MONTH FROM this_month) - EXTRACT(MONTH FROM first_month))::integer + 4
    );
END;
$$;
-- A safety net: should the next month's partition be missing (nobody ran the gateway for
-- months), records still land here instead of failing. The prune never drops it.
CREATE TABLE audit_records_default PARTITION OF audit_records DEFAULT;

INSERT INTO audit_records SELECT * FROM audit_records_unpartitioned;
DROP TABLE audit_records_unpartitioned;

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();

GRANT SELECT, INSERT ON audit_records TO countersign_app;
GRANT EXECUTE ON FUNCTION countersign_audit_partitions(date, integer) TO countersign_app;

-- 3. One row per prune: where the remaining chain starts and what vouches for it.
CREATE TABLE audit_prune_anchors (
    pruned_through        BIGINT      NOT NULL PRIMARY KEY CHECK (pruned_through > 0),
    last_hash             BYTEA       NOT NULL CHECK (octet_length(last_hash) = 32),
    checkpoint_tree_size  BIGINT      NOT NULL CHECK (checkpoint_tree_size >= pruned_through),
    inclusion_proof       BYTEA[]     NOT NULL,
    before_month          DATE        NOT NULL,
    records_pruned        BIGINT      NOT NULL,
    pruned_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TRIGGER audit_prune_anchors_append_only BEFORE UPDATE OR DELETE ON audit_prune_anchors
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
GRANT SELECT ON audit_prune_anchors TO countersign_app;
