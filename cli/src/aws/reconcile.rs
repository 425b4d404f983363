//! `tally reconcile`: recompute a date's totals from the state table and,
//! with `--repair`, put right what drifted.
//!
//! What the polling batch job tally replaces did, kept as a safety net, over
//! [`tally_aggregate::reconcile::reconcile`] (whose docs say when it is safe
//! to run: once the day's stream backlog has drained). By default it only
//! checks, so it can run daily from a scheduler as an alarm: exit code 1
//! means the totals table disagrees with the state table, and the report
//! says where. `--repair` then writes the recomputed partial items and
//! totals.

use anyhow::anyhow;
use clap::Args;
use tally_aggregate::reconcile::{ReconcileReport, reconcile};
use tally_aws::state_table::DynamoStateStore;
use tally_core::key::Date;

use super::{Aws, environment_with, parse_date};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  tally reconcile --date 2015-11-16            # check only
  tally reconcile --date 2015-11-16 --repair   # write what differs

Tables come from TALLY_STATE_TABLE, TALLY_PARTIALS_TABLE and TALLY_TOTALS_TABLE (or the
flags); AWS_REGION, credentials and AWS_ENDPOINT_URL as usual. Run it once the aggregate
stage has drained the day's stream backlog.

Exit codes: 0 no drift (or, with --repair, drift repaired); 1 drift found by a check
(run again with --repair), or the command failed; 2 the command line was wrong.")]
pub struct ReconcileArgs {
    /// The date to check (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date, value_name = "DATE")]
    date: Date,
    /// Write the recomputed partial items and totals where they differ.
    #[arg(long)]
    repair: bool,
    /// The state table [default: TALLY_STATE_TABLE].
    #[arg(long, value_name = "TABLE")]
    state_table: Option<String>,
    /// The partial items table [default: TALLY_PARTIALS_TABLE].
    #[arg(long, value_name = "TABLE")]
    partials_table: Option<String>,
    /// The totals table [default: TALLY_TOTALS_TABLE].
    #[arg(long, value_name = "TABLE")]
    totals_table: Option<String>,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let aws = Aws::load().await?;
    let lookup = environment_with(vec![
        ("TALLY_STATE_TABLE", args.state_table.clone()),
        ("TALLY_PARTIALS_TABLE", args.partials_table.clone()),
        ("TALLY_TOTALS_TABLE", args.totals_table.clone()),
    ]);
    let state_table = tally_ingest::settings::Settings::from_lookup(&lookup)
        .map_err(|e| anyhow!("{e} (or pass --state-table)"))?
        .state_table;
    let settings = tally_aggregate::settings::Settings::from_lookup(&lookup)
        .map_err(|e| anyhow!("{e} (or pass --partials-table and --totals-table)"))?;
    let states = DynamoStateStore::new(tally_aws::config::dynamodb(&aws.sdk), &state_table);
    let aggregator = tally_aggregate::wiring::aggregator(&aws.sdk, &settings);
    let report = reconcile(&states, &aggregator, &args.date, args.repair)
        .await
        .map_err(|e| aws.explain(e))?;
    print!("{}", render(&args.date, &report));
    let drifted = report.partials_repaired + report.totals_repaired > 0;
    if drifted && !args.repair {
        return Err(anyhow!(
            "drift found on {}: {} partial items and {} totals differ from the state table; run `tally reconcile --date {} --repair` to repair them",
            args.date,
            report.partials_repaired,
            report.totals_repaired,
            args.date
        ));
    }
    Ok(())
}

fn render(date: &Date, report: &ReconcileReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if report.repaired { "repair" } else { "check" };
    let _ = writeln!(
        out,
        "reconcile {date} ({mode}): {} instances, {} counters",
        report.instances, report.counters
    );
    let done = if report.repaired {
        "repaired"
    } else {
        "differing"
    };
    let _ = writeln!(
        out,
        "  partial items {done}: {} of {}",
        report.partials_repaired,
        tally_core::state::BUCKETS
    );
    let _ = writeln!(out, "  totals {done}: {}", report.totals_repaired);
    let shown = |value: Option<tally_core::aggregate::Exact>| match value {
        Some(value) => value.0.to_string(),
        None => "(none)".to_owned(),
    };
    for drift in report.drift.iter().take(50) {
        let _ = writeln!(
            out,
            "    {}: stored {} from {} instances, recomputed {} from {}",
            drift.counter,
            shown(drift.stored),
            drift.stored_contributors,
            shown(drift.recomputed),
            drift.recomputed_contributors
        );
    }
    if report.drift.len() > 50 {
        let _ = writeln!(out, "    ... and {} more", report.drift.len() - 50);
    }
    if report.partials_repaired + report.totals_repaired == 0 {
        let _ = writeln!(out, "no drift");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_aggregate::reconcile::TotalDrift;
    use tally_core::aggregate::Exact;

    #[test]
    fn the_report_names_each_drifted_counter() {
        let date = Date::parse("2015-11-16").unwrap();
        let report = ReconcileReport {
            instances: 4,
            partials_repaired: 1,
            totals_repaired: 1,
            counters: 2,
            repaired: false,
            drift: vec![TotalDrift {
                counter: "COUNTER1".into(),
                stored: Some(Exact(136801)),
                stored_contributors: 3,
                recomputed: Some(Exact(191122)),
                recomputed_contributors: 4,
            }],
        };
        let text = render(&date, &report);
        assert!(
            text.starts_with("reconcile 2015-11-16 (check): 4 instances, 2 counters\n"),
            "{text}"
        );
        assert!(
            text.contains("COUNTER1: stored 136801 from 3 instances, recomputed 191122 from 4"),
            "{text}"
        );
        assert!(!text.contains("no drift"));
        let clean = render(&date, &ReconcileReport::default());
        assert!(clean.ends_with("no drift\n"), "{clean}");
    }
}
