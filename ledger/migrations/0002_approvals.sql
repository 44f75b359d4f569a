-- Maker-checker: transfers held for approval by someone other than their initiator.
--
-- A pending request's amount is *reserved* on its debit account. The reservation is not a
-- column but the sum over pending requests (partial index `approval_requests_reserved`), so it
-- can never drift from the requests. Every writer that creates or posts a request holds the
-- debit account's row lock (`FOR UPDATE`, taken at batch start), so the sum it reads cannot
-- grow under it; expiry and rejection only shrink it.

CREATE TABLE approval_requests (
    id                     UUID        NOT NULL PRIMARY KEY,
    transfer_id            UUID        NOT NULL UNIQUE,
    debit_account          TEXT        NOT NULL REFERENCES accounts (id),
    credit_account         TEXT        NOT NULL REFERENCES accounts (id),
    amount_minor           BIGINT      NOT NULL CHECK (amount_minor > 0),
    currency               TEXT        NOT NULL,
    end_to_end_id          TEXT,
    purpose                TEXT,
    remittance_info        TEXT,
    initiation_decision_id UUID        NOT NULL,
    initiator_fingerprint  TEXT        NOT NULL,
    initiator_common_name  TEXT,
    approvals_required     INTEGER     NOT NULL CHECK (approvals_required BETWEEN 1 AND 10),
    approver_roles         TEXT[]      NOT NULL,
    status                 TEXT        NOT NULL
        CHECK (status IN ('pending', 'posted', 'rejected', 'expired', 'failed')),
    created_at             TIMESTAMPTZ NOT NULL,
    expires_at             TIMESTAMPTZ NOT NULL,
    resolved_at            TIMESTAMPTZ,
    resolution_decision_id UUID,
    CHECK ((status = 'pending') = (resolved_at IS NULL)),
    CHECK (debit_account <> credit_account)
);
CREATE INDEX approval_requests_reserved ON approval_requests (debit_account)
    WHERE status = 'pending';
CREATE INDEX approval_requests_due ON approval_requests (expires_at) WHERE status = 'pending';
CREATE INDEX approval_requests_by_status ON approval_requests (status, id);

CREATE TABLE approval_events (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id          UUID        NOT NULL REFERENCES approval_requests (id),
    action               TEXT        NOT NULL CHECK (action IN ('approve', 'reject')),
    approver_fingerprint TEXT        NOT NULL,
    approver_common_name TEXT,
    decision_id          UUID        NOT NULL,
    comment              TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    -- One accepted action per person per request, whatever the code above it does.
    UNIQUE (approval_id, approver_fingerprint)
);

CREATE TRIGGER approval_events_append_only BEFORE UPDATE OR DELETE ON approval_events
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER approval_events_no_truncate BEFORE TRUNCATE ON approval_events
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER approval_requests_no_delete BEFORE DELETE ON approval_requests
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER approval_requests_no_truncate BEFORE TRUNCATE ON approval_requests
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();

-- A request leaves `pending` once, and only its outcome columns change.
CREATE FUNCTION countersign_approval_resolve_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' OR NEW.status = 'pending'
        OR (NEW.id, NEW.transfer_id, NEW.debit_account, NEW.credit_account, NEW.amount_minor,
            NEW.currency, NEW.initiation_decision_id, NEW.initiator_fingerprint,
            NEW.approvals_required, NEW.expires_at, NEW.created_at)
           IS DISTINCT FROM
           (OLD.id, OLD.transfer_id, OLD.debit_account, OLD.credit_account, OLD.amount_minor,
            OLD.currency, OLD.initiation_decision_id, OLD.initiator_fingerprint,
            OLD.approvals_required, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'an approval request leaves pending once, and only its outcome changes'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER approval_requests_resolve_once BEFORE UPDATE ON approval_requests
    FOR EACH ROW EXECUTE FUNCTION countersign_approval_resolve_once();

-- Idempotency rows of held transfers point at their request.
ALTER TABLE idempotency ADD COLUMN approval_id UUID REFERENCES approval_requests (id);
ALTER TABLE idempotency DROP CONSTRAINT idempotency_outcome_check;
ALTER TABLE idempotency ADD CONSTRAINT idempotency_outcome_check
    CHECK (outcome IN ('posted', 'denied', 'pending'));
ALTER TABLE idempotency ADD CONSTRAINT idempotency_pending_has_approval
    CHECK ((outcome = 'pending') = (approval_id IS NOT NULL));

GRANT SELECT, INSERT, UPDATE ON approval_requests TO countersign_app;
GRANT SELECT, INSERT ON approval_events TO countersign_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO countersign_app;
