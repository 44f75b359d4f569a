//! `countersign audit prune`: drops the audit partitions of months past retention
//! (PostgreSQL), after a signed checkpoint so the remaining log still verifies. See
//! `countersign_audit::retention` for what is kept and why.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use countersign_audit::checkpoint::CheckpointSigner;
use countersign_audit::merkle;
use countersign_audit::retention::{self, RetentionError};
use countersign_ledger::{Store, StoreLimits, StoreOptions};
use sqlx::ConnectOptions;
use time::{Date, Month, OffsetDateTime};

use super::{redact_url, runtime};

/// Shortest retention accepted: Chinese law asks for six months of logs (PCI DSS twelve).
pub const RETENTION_MONTHS_MIN: u32 = 6;
const PRUNED: u8 = 0;
const REFUSED: u8 = 1;
/// The default: PCI DSS 10.5.1 keeps audit logs twelve months.
pub const RETENTION_MONTHS_DEFAULT: u32 = 12;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// PostgreSQL URL of the schema owner (the gateway's app role cannot drop partitions).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Drop records ingested before this month: the first day of a month, e.g. 2025-11-01.
    #[arg(long, value_name = "YYYY-MM-01")]
    pub before: String,
    /// The retention period in months; a cutoff younger than it is refused.
    #[arg(long, default_value_t = RETENTION_MONTHS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(RETENTION_MONTHS_MIN)..=240))]
    pub retention_months: u32,
    /// The checkpoint signing key (PKCS#8 PEM): a checkpoint covering the pruned records is
    /// written before anything is dropped.
    #[arg(long, value_name = "PEM")]
    pub signing_key: PathBuf,
    /// Only print what would be dropped.
    #[arg(long)]
    pub dry_run: bool,
}

/// The first day of the month `months` before the month of `today`.
pub fn oldest_allowed_cutoff(today: Date, months: u32) -> Date {
    let index = today.year() * 12 + i32::from(u8::from(today.month())) - 1 - months as i32;
    let month = Month::try_from((index.rem_euclid(12) + 1) as u8).expect("1..=12");
    Date::from_calendar_date(index.div_euclid(12), month, 1).expect("a valid first of month")
}

/// Exit code 0 pruned (or nothing to prune), 1 refused; errors are the caller's exit 2.
pub fn prune(args: PruneArgs) -> Result<u8> {
    let before = Date::parse(
        &args.before,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| format!("--before {:?} is not a date YYYY-MM-DD", args.before))?;
    let oldest = oldest_allowed_cutoff(OffsetDateTime::now_utc().date(), args.retention_months);
    if before > oldest {
        println!(
            "refused: records before {before} include some younger than the {}-month retention; \
             the latest cutoff allowed today is {oldest}",
            args.retention_months
        );
        return Ok(REFUSED);
    }
    if !args.store.starts_with("postgres://") && !args.store.starts_with("postgresql://") {
        bail!("prune works on PostgreSQL partitions; the embedded SQLite store keeps everything");
    }
    let signer = CheckpointSigner::from_pem_file(&args.signing_key)
        .with_context(|| format!("reading {}", args.signing_key.display()))?;
    let url = args.store.clone();
    runtime()?.block_on(async move {
        let mut owner = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .context("parsing --store")?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", redact_url(&url)))?;
        let plan = match retention::plan_prune(&mut owner, before).await {
            Ok(plan) => plan,
            Err(RetentionError::Refused(reason)) => {
                println!("refused: {reason}");
                return Ok(REFUSED);
            }
            Err(error) => return Err(error.into()),
        };
        if plan.pruned_through == 0 {
            println!("nothing to prune before {before}");
            return Ok(PRUNED);
        }
        println!(
            "{} records (sequence 1..={}) in {} partition(s): {}",
            plan.records,
            plan.pruned_through,
            plan.partitions.len(),
            plan.partitions.join(", ")
        );
        if args.dry_run {
            println!("dry run: nothing dropped");
            return Ok(PRUNED);
        }
        // A reader of the same database for the Merkle tree and the checkpoint; it neither
        // seals nor streams, so it never takes the lead from a gateway.
        let store = Store::open_with(
            &url,
            StoreLimits::default(),
            StoreOptions {
                migrate_on_start: false,
                outbox_enabled: false,
                sealer_enabled: false,
            },
        )
        .await
        .context("opening the store")?;
        let indexed = store.indexed_size().await?;
        if indexed < plan.pruned_through as u64 {
            println!(
                "refused: the Merkle tree holds {indexed} records, fewer than the {} to prune; \
                 let a gateway's indexer catch up first",
                plan.pruned_through
            );
            store.shutdown().await?;
            return Ok(REFUSED);
        }
        let checkpoint = store
            .write_checkpoint_now(&signer)
            .await?
            .context("the Merkle tree is empty")?;
        let leaf_index = (plan.pruned_through - 1) as u64;
        let ids = merkle::inclusion_node_ids(leaf_index, checkpoint.tree_size);
        let nodes = store.merkle_nodes(&ids).await?;
        let proof = merkle::inclusion_proof(leaf_index, checkpoint.tree_size, &|id| {
            nodes.get(&id).copied()
        })
        .context("computing the anchor's inclusion proof")?;
        store.shutdown().await?;
        match retention::execute_prune(&mut owner, &plan, &checkpoint, proof).await {
            Ok(anchor) => {
                println!(
                    "pruned {} records; the chain now starts at sequence {}, anchored by \
                     checkpoint {} (key {})",
                    plan.records,
                    anchor.pruned_through + 1,
                    checkpoint.tree_size,
                    checkpoint.key_id
                );
                Ok(PRUNED)
            }
            Err(RetentionError::Refused(reason)) => {
                println!("refused: {reason}");
                Ok(REFUSED)
            }
            Err(error) => Err(error.into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_cutoff_is_the_month_retention_months_ago() {
        let date = |y, m, d| Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap();
        assert_eq!(
            oldest_allowed_cutoff(date(2026, 11, 26), 12),
            date(2025, 11, 1)
        );
        assert_eq!(oldest_allowed_cutoff(date(2026, 1, 1), 6), date(2025, 7, 1));
        assert_eq!(
            oldest_allowed_cutoff(date(2026, 12, 31), 12),
            date(2025, 12, 1)
        );
    }
}
