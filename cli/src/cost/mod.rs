//! `tally cost`: what tally costs on AWS per month and per year, next to the
//! per-counter design it replaces (one DynamoDB item per counter holding
//! every instance's value, written on every upload), computed rather than
//! guessed.
//!
//! # The job
//!
//! Given a fleet (instances, counters, upload period, how much of it changes)
//! and the stream batching, the command prints the DynamoDB write and read
//! units, Lambda invocations and GB-seconds, SNS and S3 requests, and dollars
//! per month and per year, for tally and for the per-counter design; then
//! where each figure comes from, and every price and assumption with the
//! flag that overrides it. The yearly figure at the measured workload (100
//! instances × 100 counters every minute) is what gets put next to the
//! figures reported for the designs tally replaces ($4,471 for Lambda +
//! DynamoDB, $701 on EC2), so the yearly figures are printed for both
//! DynamoDB billing modes.
//!
//! # Units from items, not from constants
//!
//! DynamoDB bills a request by the size of the item it touches, and that is
//! the whole argument between the two designs. So the command does not
//! carry "2 write units per upload": it builds representative items of both
//! designs from a sample fleet and bills them with the functions the stages
//! use to log their capacity ([`tally_core::capacity`]). At the measured
//! workload this reproduces the measured tables of docs/design.md §5 and §6 exactly (the output
//! says so, and a test pins it); elsewhere it computes what those runs would
//! have measured.
//!
//! # The rooms
//!
//! Dependencies run one way, from the inputs up to this file, which alone
//! puts the pieces together:
//!
//! - [`inputs`] and [`prices`]: the flags, which are the model's inputs
//!   ([`parse`] checks their values);
//! - [`fleet`]: the sample fleet the items are built from;
//! - [`bill`]: units to dollars, the same for both designs;
//! - [`tally_model`] and [`per_counter_model`]: each design's units per
//!   period (the latter also prices `tally demo`'s rounds);
//! - [`tick_model`]: what the rules stage's clock adds, per tick and per
//!   year, whatever the uploads do (printed as its own line);
//! - [`report`]: what is printed, as text or JSON ([`numbers`] formats).
//!
//! Numbers are `f64` because batches per period can be fractional (a
//! batching window longer than the period merges rounds); units per item
//! are exact integers from the billing functions.

mod bill;
mod error;
mod fleet;
mod inputs;
mod numbers;
mod parse;
pub(crate) mod per_counter_model;
mod prices;
mod report;
mod tally_model;
mod tick_model;

use anyhow::Result;

pub use error::CostError;
use inputs::Inputs;
use report::Estimate;

const AFTER_HELP: &str = "\
Examples:
  tally cost                                   the measured workload: 100 instances × 100 counters every 60 s
  tally cost --instances 100000                a large fleet (the per-counter design cannot hold it: the output says why)
  tally cost --changed-counters 10             only a tenth of the counters move each period
  tally cost --batch-window 10                 react faster: smaller stream batches, more writes
  tally cost --billing provisioned             DynamoDB provisioned capacity instead of on-demand
  tally cost --ingest-ms 35 --memory-mb 128    use measured Lambda figures
  tally cost --json                            every figure, input and assumption, for machines

The per-counter design is the one tally replaces: one DynamoDB item per (counter, date) holding
every instance's value, written on every upload. Its flags start with --seed-, and --json reports
it under the keys `seed`, `seed_items`, ...: the names scripts have always read.
Units are computed from item sizes by DynamoDB's billing rules; prices are us-east-1 list prices
(see the assumptions the command prints). Durations are assumptions until measured.";

/// What tally costs on AWS per month and per year, next to the per-counter
/// design it replaces.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CostArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Print every figure, input and assumption as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CostArgs) -> Result<()> {
    let estimate = estimate(&args.inputs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate)?);
    } else {
        print!("{}", report::render(&estimate));
    }
    Ok(())
}

/// Computes the estimate: tally always, the per-counter design when it can
/// hold the fleet.
fn estimate(inputs: &Inputs) -> Result<Estimate, CostError> {
    let fleet = fleet::Fleet::new(inputs)?;
    let periods = inputs.periods_per_month();
    let (tally_parts, stages) = tally_model::tally(inputs, &fleet)?;
    let tally = bill::design("tally", inputs, tally_parts);
    let (per_counter, per_counter_items, per_counter_infeasible) =
        match per_counter_model::per_counter(inputs, &fleet)? {
            // Named `seed` in the JSON, as it always was.
            Ok((parts, items)) => (Some(bill::design("seed", inputs, parts)), Some(items), None),
            Err(reason) => (None, None, Some(reason)),
        };
    let uploads_per_month = inputs.workload.instances as f64 * periods;
    let checks = report::checks(inputs, &fleet, &stages, per_counter_items.as_ref());
    let ticks = tick_model::ticks(inputs, &stages);
    Ok(Estimate {
        inputs: inputs.clone(),
        periods_per_month: periods,
        assumptions: report::assumptions(inputs, &stages, per_counter_items.as_ref()),
        tally,
        tally_stages: stages,
        ticks,
        per_counter,
        per_counter_items,
        per_counter_infeasible,
        reported_per_year_usd: per_counter_model::REPORTED,
        uploads_per_month,
        uploads_per_month_usd: uploads_per_month / 1000.0 * inputs.prices.s3_put_per_thousand,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::inputs::{Shape, Workload};
    use super::per_counter_model::REPORTED_SERVERLESS_PER_YEAR;
    use super::prices::Billing;
    use super::*;
    use clap::Parser;

    /// `tally cost` as the command line parses it.
    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: CostArgs,
    }

    fn parse(args: &[&str]) -> Result<Inputs, clap::Error> {
        let args = std::iter::once("cost").chain(args.iter().copied());
        Command::try_parse_from(args).map(|c| c.args.inputs)
    }

    /// `tally cost` with no flags.
    fn defaults() -> Inputs {
        parse(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_defaults_are_the_measured_workload() {
        let d = defaults();
        let w = &d.workload;
        assert_eq!((w.instances, w.counters, w.period_seconds), (100, 100, 60));
        assert_eq!(
            (w.changed_counters_percent, w.changed_instances_percent),
            (100.0, 100.0)
        );
        assert_eq!(d.shape, Shape::default());
        assert_eq!((d.streams.batch_size, d.streams.shards), (100, 1));
        assert_eq!(d.lambda.memory_mb, 128);
        assert_eq!(d.per_counter.memory_mb, 1536);
        assert_eq!(d.prices.billing, Billing::OnDemand);
        assert!(d.prices.taken.contains("2025"), "{}", d.prices.taken);
        let inputs = parse(&[
            "--instances",
            "1000",
            "--billing",
            "provisioned",
            "--changed-counters",
            "10%",
        ]);
        let inputs = inputs.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inputs.workload.instances, 1000);
        assert_eq!(inputs.workload.changed_counters_percent, 10.0);
        assert_eq!(inputs.prices.billing, Billing::Provisioned);
        assert!(parse(&["--instances", "0"]).is_err());
        assert!(parse(&["--batch-window", "301"]).is_err());
    }

    fn with(change: impl FnOnce(&mut Inputs)) -> Estimate {
        let mut inputs = defaults();
        change(&mut inputs);
        match estimate(&inputs) {
            Ok(e) => e,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_measured_workload_reproduces_every_measured_figure() {
        let e = with(|_| {});
        assert!(e.checks.len() >= 7, "{:?}", e.checks);
        for check in &e.checks {
            assert!(check.matches, "{check:?}");
        }
        // docs/design.md §3: 100 uploads × 2 write units.
        assert_eq!(e.tally_stages.ingest_write_units, 200.0);
        assert_eq!(e.tally_stages.ingest_write_units_per_upload, 2.0);
        assert_eq!(e.tally_stages.aggregate_write_units, 362.0);
        assert_eq!(e.tally_stages.aggregate_read_units, 208.0);
        assert_eq!(e.tally_stages.rules_read_units_per_batch, 130.0);
        assert_eq!(e.tally_stages.occupied_buckets, 54);
    }

    #[test]
    fn smaller_changes_and_batches_match_the_readme_table() {
        for (size, percent, wu, ru) in [
            (10, 10.0, 500.0, 740.0),
            (10, 50.0, 1300.0, 1140.0),
            (10, 100.0, 2300.0, 1640.0),
            (100, 10.0, 182.0, 118.0),
            (100, 50.0, 262.0, 158.0),
        ] {
            let e = with(|i| {
                i.streams.batch_size = size;
                i.workload.changed_counters_percent = percent;
            });
            assert_eq!(e.tally_stages.aggregate_write_units, wu, "{size} {percent}");
            assert_eq!(e.tally_stages.aggregate_read_units, ru, "{size} {percent}");
            assert!(e.checks.iter().all(|c| c.matches), "{:?}", e.checks);
        }
    }

    #[test]
    fn a_tick_a_minute_reads_what_a_batch_reads_per_date_and_lists_by_the_thousand() {
        let e = with(|_| {});
        let t = &e.ticks;
        assert_eq!(t.ticks_per_year, 525_600.0);
        // Today's and yesterday's partials read twice, each mark, each
        // day's alert records: docs/design.md §6's 130, twice.
        assert_eq!(t.read_units_per_tick, 260.0);
        // One page of 100 keys; yesterday's too for 6 of the 24 hours.
        assert_eq!(t.list_requests_per_tick, 1.25);
        let d = &t.per_year_usd;
        assert!((d.dynamodb - 525_600.0 * 260.0 / 1e6 * 0.125).abs() < 1e-6);
        assert!((d.s3_list - 525_600.0 * 1.25 / 1000.0 * 0.005).abs() < 1e-6);
        let parts = d.dynamodb + d.s3_list + d.lambda + d.scheduler + d.logs + d.metrics_and_alarms;
        assert!((d.total - parts).abs() < 1e-9);
        // The ticks do not change what the uploads cost.
        assert_eq!(
            e.tally.per_year_usd,
            with(|i| i.ticks.tick_seconds = 3600).tally.per_year_usd
        );

        // At 100,000 instances the listing is 100 pages, 125 a tick on
        // average; the partials' reads do not grow with the fleet.
        let large = with(|i| i.workload.instances = 100_000);
        assert_eq!(large.ticks.list_requests_per_tick, 125.0);
        assert_eq!(large.ticks.read_units_per_tick, 260.0);
        assert!(large.ticks.per_year_usd.s3_list > 300.0);
        // A tick every five minutes costs a fifth, but for the fixed metrics.
        let slow = with(|i| i.ticks.tick_seconds = 300);
        assert!(
            (slow.ticks.per_year_usd.dynamodb * 5.0 - d.dynamodb).abs() < 1e-6,
            "{:?}",
            slow.ticks
        );
    }

    #[test]
    fn an_identical_round_costs_reads_only() {
        let e = with(|i| i.workload.changed_counters_percent = 0.0);
        let s = &e.tally_stages;
        assert_eq!(s.ingest_write_units, 0.0);
        assert_eq!(s.ingest_read_units, 100.0);
        assert_eq!(s.identical_uploads, 100);
        assert_eq!(s.aggregate_batches, 0.0);
        assert_eq!(s.rules_batches, 0.0);
        assert_eq!(e.tally.per_period.write_units, 0.0);
        assert_eq!(e.tally.per_period.s3_gets, 0.0);
        // The per-counter design writes every counter's item anyway.
        let per_counter = e.per_counter_items.as_ref().map(|s| s.state_write_units);
        assert_eq!(per_counter, Some(20_000.0));
    }

    #[test]
    fn doubling_the_fleet_doubles_the_per_counter_item_and_not_tallys() {
        let small = with(|_| {});
        let large = with(|i| i.workload.instances = 200);
        let (Some(a), Some(b)) = (&small.per_counter_items, &large.per_counter_items) else {
            panic!("the per-counter design holds 200 instances");
        };
        // The map of instance values is nearly all of the item.
        let ratio = b.item_bytes as f64 / a.item_bytes as f64;
        assert!(
            (1.9..2.1).contains(&ratio),
            "{} → {}",
            a.item_bytes,
            b.item_bytes
        );
        // The same body; only the measured runs' values (1000 × instance +
        // counter) gain a digit on the new instances.
        let (x, y) = (
            small.tally_stages.state_item_bytes,
            large.tally_stages.state_item_bytes,
        );
        assert!(y.abs_diff(x) * 100 < x, "{x} → {y}");
        assert_eq!(
            small.tally_stages.ingest_write_units_per_upload,
            large.tally_stages.ingest_write_units_per_upload
        );
    }

    #[test]
    fn tally_costs_less_than_the_per_counter_design_in_both_billing_modes() {
        let e = with(|_| {});
        let Some(per_counter) = &e.per_counter else {
            panic!("the per-counter design holds 100 instances");
        };
        assert!(e.tally.per_year_usd < per_counter.per_year_usd);
        assert!(e.tally.per_year_on_demand_usd < per_counter.per_year_on_demand_usd);
        assert!(e.tally.per_year_provisioned_usd < per_counter.per_year_provisioned_usd);
        // docs/design.md §5: 20,000 + 20,000 write units a minute.
        assert_eq!(per_counter.per_period.write_units, 40_000.0);
    }

    #[test]
    fn the_per_counter_provisioned_figure_is_near_its_reported_one() {
        let e = with(|_| {});
        let Some(per_counter) = &e.per_counter else {
            panic!("the per-counter design holds 100 instances");
        };
        let off = per_counter.per_year_provisioned_usd / REPORTED_SERVERLESS_PER_YEAR - 1.0;
        assert!(off.abs() < 0.15, "{}", per_counter.per_year_provisioned_usd);
    }

    #[test]
    fn a_year_is_twelve_months_and_a_month_730_hours() {
        let e = with(|_| {});
        assert!((e.tally.per_year_usd - 12.0 * e.tally.per_month_usd.total).abs() < 1e-9);
        assert_eq!(e.periods_per_month, 43_800.0);
        assert_eq!(e.tally.per_month.uploads, 4_380_000.0);
    }

    #[test]
    fn no_batching_window_means_more_batches_and_more_writes() {
        let windowed = with(|_| {});
        let eager = with(|i| i.streams.batch_window_seconds = 0.0);
        assert_eq!(windowed.tally_stages.aggregate_batches, 1.0);
        // 100 records a minute, polled four times a second: one per batch.
        assert_eq!(eager.tally_stages.aggregate_batches, 100.0);
        assert!(
            eager.tally_stages.aggregate_write_units > windowed.tally_stages.aggregate_write_units
        );
    }

    #[test]
    fn a_window_longer_than_the_period_merges_rounds() {
        let e = with(|i| {
            i.streams.batch_window_seconds = 120.0;
            i.streams.batch_size = 1000;
        });
        assert_eq!(e.tally_stages.aggregate_batches, 0.5);
        assert_eq!(e.tally_stages.aggregate_write_units, 181.0);
    }

    #[test]
    fn provisioned_tables_get_at_least_one_unit() {
        let e = with(|i| i.prices.billing = Billing::Provisioned);
        assert!(
            e.tally
                .tables
                .iter()
                .all(|t| t.provisioned_wcu >= 1 && t.provisioned_rcu >= 1)
        );
        let state = &e.tally.tables[0];
        // 200 write units a minute is 3.3 a second.
        assert_eq!(state.provisioned_wcu, 4);
        assert!(
            (e.tally.per_month_usd.dynamodb - 6.643).abs() < 0.01,
            "{}",
            e.tally.per_month_usd.dynamodb
        );
    }

    #[test]
    fn a_fleet_past_the_per_counter_item_limit_leaves_only_tally() {
        let e = with(|i| i.workload.instances = 100_000);
        assert!(e.per_counter.is_none());
        let reason = e.per_counter_infeasible.clone().unwrap_or_default();
        assert!(reason.contains("item limit"), "{reason}");
        // Tally's per-upload write stays at one body's size.
        assert_eq!(e.tally_stages.ingest_write_units_per_upload, 2.0);
        assert_eq!(e.tally_stages.occupied_buckets, 64);
        assert!(report::render(&e).contains("cannot run"));
    }

    #[test]
    fn longer_ids_grow_the_per_counter_item_and_are_checked() {
        let e = with(|i| i.shape.instance_id_bytes = Some(19));
        let Some(per_counter) = &e.per_counter_items else {
            panic!("the per-counter design holds 100 instances");
        };
        assert_eq!(per_counter.write_units_per_upload, 300);
        let short = estimate(&Inputs {
            shape: Shape {
                instance_id_bytes: Some(3),
                ..Shape::default()
            },
            ..defaults()
        });
        assert!(matches!(
            short,
            Err(CostError::IdsTooShort { needed: 4, .. })
        ));
    }

    #[test]
    fn too_many_counters_for_one_item_is_an_error_that_says_what_to_do() {
        let result = estimate(&Inputs {
            workload: Workload {
                instances: 1,
                counters: 30_000,
                ..defaults().workload
            },
            ..defaults()
        });
        let Err(error) = result else {
            panic!("30,000 counters do not fit one item");
        };
        assert!(matches!(error, CostError::ItemTooLarge { .. }));
        assert!(error.to_string().contains("fewer --counters"), "{error}");
    }

    #[test]
    fn the_report_names_every_assumption_kind_and_the_reported_figures() {
        // Compare words, not line breaks: the prose is wrapped.
        let text = report::render(&with(|_| {}))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for needle in [
            "total per year",
            "$4,471.00 a year on Lambda + DynamoDB",
            "$701.00 on EC2",
            "assumed",
            "measured 362, computed 362: matches",
            "--ingest-ms",
            "2025",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
