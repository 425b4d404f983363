//! The local pipeline: the three stages on one machine, over a directory
//! laid out like the bucket and one SQLite file for the tables; what `tally
//! run` and `tally demo` drive.
//!
//! It runs the Lambda code (ingest's `Ingestor`, aggregate's `Aggregator`,
//! the rules stage) over the embedded adapters; only the plumbing Lambda
//! provides on AWS is here:
//!
//! - **S3 notifications** are a scan of `DIR/<prefix>/`: a file new or
//!   changed since the last scan (modification time, size, and on Unix
//!   inode and status-change time: see [`FileStamp`]) is an
//!   `ObjectCreated`, one gone is an `ObjectRemoved`. Each event gets a
//!   sequencer from a counter kept in the database, so an event seen after
//!   a restart orders after every event seen before it, as S3's do. On the
//!   first scan of a process every file is an event (an unchanged file
//!   costs a read and no write: ingest skips an identical body), and every
//!   live state whose file is gone is a removal, so whatever happened while
//!   it was stopped is caught up.
//! - **Streams** are the database's change logs; each stage consumes its log
//!   from a checkpoint kept in the same database, moved on only after the
//!   stage finished the records before it. A restart redoes at most the
//!   last unfinished batch, which both stages treat as a redelivery: the
//!   aggregate stage skips changes already folded in, and the rules stage
//!   sends nothing twice. Each log has that one consumer (nothing else
//!   reads them), so at the end of a cycle its rows up to the consumer's
//!   checkpoint are deleted: the file holds the fleet's tables, not its
//!   history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use tally_aggregate::{AggregateReport, Aggregator};
use tally_core::aggregate::{SequenceNumber, StateChange};
use tally_core::key::Date;
use tally_core::ordering::OrderingKey;
use tally_core::rules::RuleSet;
use tally_core::rules::alert::Trigger;
use tally_core::state::StateItem;
use tally_embedded::alerts_table::SqliteAlertStore;
use tally_embedded::database::{ChangeLog, Database};
use tally_embedded::directory::{DirectoryStore, FileStamp};
use tally_embedded::notifier::JsonLinesNotifier;
use tally_embedded::state_table::SqliteStateStore;
use tally_embedded::totals_tables::SqliteTotalsStore;
use tally_ingest::event::{Change, Notice};
use tally_ingest::{IngestConfig, IngestReport, Ingestor};
use tally_rules::changes;
use tally_rules::stage::{Clock, RulesReport, RulesStage, StageConfig, Uploads};

/// The bucket name events carry: one directory is one bucket.
pub const BUCKET: &str = "local";
/// Change-log records handed to a stage at once (Lambda's batch size).
const BATCH: usize = 1000;
/// The aggregate stage's checkpoint in the state's change log.
const AGGREGATE_POSITION: &str = "aggregate";
/// The rules stage's checkpoint in the totals' change log.
const RULES_POSITION: &str = "rules";

/// How to run.
pub struct LocalPipelineConfig {
    /// The directory laid out like the bucket.
    pub root: PathBuf,
    /// The database file.
    pub database: PathBuf,
    /// The uploads' key prefix (`counters`).
    pub prefix: String,
    /// The snapshots' key prefix (`totals`).
    pub snapshot_prefix: String,
    pub rules: RuleSet,
    pub notifier: JsonLinesNotifier,
    /// Dates alerted on, counting back from today (the rules stage's
    /// [`StageConfig::alert_days`]).
    pub alert_days: u32,
}

/// What one cycle (scan, ingest, aggregate, rules) did.
#[derive(Debug, Default)]
pub struct CycleReport {
    pub created: usize,
    pub removed: usize,
    pub ingest: IngestReport,
    pub state_changes: usize,
    pub aggregate: AggregateReport,
    pub total_changes: usize,
    pub rules: RulesReport,
    /// Dates whose snapshot was written.
    pub dates: BTreeSet<Date>,
    /// Files under the prefix whose names are not UTF-8 (no key).
    pub unnamed: Vec<PathBuf>,
    pub elapsed: Duration,
}

impl CycleReport {
    /// Whether the cycle saw anything at all.
    pub fn is_idle(&self) -> bool {
        self.created + self.removed + self.state_changes + self.total_changes == 0
    }
}

type Stage = RulesStage<SqliteTotalsStore, SqliteAlertStore, JsonLinesNotifier, DirectoryStore>;

/// The pipeline over one directory.
pub struct LocalPipeline {
    root: PathBuf,
    prefix: String,
    db: Database,
    bucket: DirectoryStore,
    state: SqliteStateStore,
    ingestor: Ingestor<SqliteStateStore, DirectoryStore>,
    aggregator: Aggregator<SqliteTotalsStore>,
    stage: Stage,
    rules: RuleSet,
    /// What each file looked like at the last scan; `None` before the first.
    known: Option<BTreeMap<String, FileStamp>>,
}

impl LocalPipeline {
    pub fn open(config: LocalPipelineConfig) -> Result<LocalPipeline> {
        if !config.root.is_dir() {
            bail!(
                "{} is not a directory; give the folder laid out like the bucket ({}/<date>/<instance>)",
                config.root.display(),
                config.prefix
            );
        }
        if let Some(parent) = config.database.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {} for the database", parent.display()))?;
        }
        let db = Database::open(&config.database)?;
        let bucket = DirectoryStore::new(&config.root);
        let state = db.state();
        let ingestor = Ingestor::new(
            state.clone(),
            bucket.clone(),
            IngestConfig {
                prefix: config.prefix.clone(),
                ..IngestConfig::default()
            },
        );
        let aggregator = Aggregator::new(db.totals());
        let mut stage_config = StageConfig::new(BUCKET);
        stage_config.snapshot_prefix = config.snapshot_prefix.clone();
        stage_config.alert_days = config.alert_days;
        // One process owns the database: there is no concurrent invocation
        // to wait for, and an outbox left by a crash is this process's own.
        stage_config.lease = Duration::from_secs(1);
        let stage = RulesStage::new(
            db.totals(),
            db.alerts(),
            config.notifier,
            bucket.clone(),
            stage_config,
        );
        Ok(LocalPipeline {
            root: config.root,
            prefix: config.prefix,
            db,
            bucket,
            state,
            ingestor,
            aggregator,
            stage,
            rules: config.rules,
            known: None,
        })
    }

    /// The same pipeline with the rules stage on `clock` instead of the
    /// system's: `tally demo` runs its minutes on a clock of its own.
    pub fn with_clock(self, clock: Clock) -> LocalPipeline {
        LocalPipeline {
            stage: self.stage.with_clock(clock),
            ..self
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The live totals of a day.
    pub fn totals(&self, date: &Date) -> Result<BTreeMap<String, i128>> {
        Ok(self.db.totals().live_totals(date)?)
    }

    /// Scans the directory, ingests what changed, and runs the aggregate and
    /// rules stages over what that changed. `progress` counts the uploads
    /// ingested (the first scan may find thousands).
    pub async fn cycle(&mut self, progress: Option<&ProgressBar>) -> Result<CycleReport> {
        let started = Instant::now();
        let mut report = CycleReport::default();
        let (files, unnamed) = self.bucket.scan(&format!("{}/", self.prefix))?;
        report.unnamed = unnamed;
        let mut notices = Vec::new();
        match &self.known {
            None => {
                for key in files.keys() {
                    notices.push(self.notice(key, true)?);
                }
                // Removed while the process was stopped.
                for key in self.state.live_object_keys()? {
                    if !files.contains_key(&key) {
                        notices.push(self.notice(&key, false)?);
                    }
                }
            }
            Some(known) => {
                for (key, stamp) in &files {
                    if known.get(key) != Some(stamp) {
                        notices.push(self.notice(key, true)?);
                    }
                }
                for key in known.keys().filter(|key| !files.contains_key(*key)) {
                    notices.push(self.notice(key, false)?);
                }
            }
        }
        report.created = notices
            .iter()
            .filter(|n| matches!(n.change, Change::Created { .. }))
            .count();
        report.removed = notices.len() - report.created;
        if let Some(progress) = progress {
            progress.set_length(notices.len() as u64);
        }
        let mut failed_keys = BTreeSet::new();
        for chunk in notices.chunks(256) {
            for (position, error) in self.ingestor.apply_all(chunk, &mut report.ingest).await {
                let key = &chunk[position].object_key;
                eprintln!("tally: {key}: {error}; it will be tried again");
                failed_keys.insert(key.clone());
            }
            if let Some(progress) = progress {
                progress.inc(chunk.len() as u64);
            }
        }
        // A file that failed keeps its old stamp, so the next scan retries
        // it: a changed file is seen as changed again, a removal as a
        // removal (a stamp no file has stands in when there was none).
        let mut known: BTreeMap<String, FileStamp> = files;
        if !failed_keys.is_empty() {
            let previous = self.known.take().unwrap_or_default();
            for key in &failed_keys {
                match previous.get(key) {
                    Some(stamp) => known.insert(key.clone(), *stamp),
                    None if known.contains_key(key) => known.remove(key),
                    None => known.insert(key.clone(), FileStamp::NO_FILE),
                };
            }
        }
        self.known = Some(known);

        self.aggregate(&mut report).await?;
        self.evaluate(&mut report).await?;
        self.prune()?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn notice(&self, key: &str, created: bool) -> Result<Notice> {
        let sequence = self.db.next_in_sequence("sequencer")?;
        let ordering = OrderingKey::from_sequencer(&format!("{sequence:016X}"))
            .map_err(|e| anyhow::anyhow!("the runtime's sequencer {sequence}: {e}"))?;
        Ok(Notice {
            bucket: BUCKET.to_owned(),
            object_key: key.to_owned(),
            version_id: None,
            ordering,
            change: if created {
                Change::Created { etag: None }
            } else {
                Change::Removed
            },
        })
    }

    /// Deletes the change-log rows their one consumer has passed.
    fn prune(&self) -> Result<()> {
        self.db
            .prune_changes_through(ChangeLog::State, self.db.position(AGGREGATE_POSITION)?)?;
        self.db
            .prune_changes_through(ChangeLog::Totals, self.db.position(RULES_POSITION)?)?;
        Ok(())
    }

    /// One tick of the rules stage's clock: every alerting date decided
    /// again on its standing totals (see [`RulesStage::tick`]). A failed
    /// date is logged by the stage and tried again at the next tick.
    pub async fn tick(&self) -> RulesReport {
        let mut report = RulesReport::default();
        let uploads = Uploads {
            states: &self.state,
            bucket: BUCKET,
            prefix: &self.prefix,
        };
        // The stage logs each failed date itself, and the next tick retries.
        let _ = self
            .stage
            .tick_watching(&self.rules, &uploads, &mut report)
            .await;
        report
    }

    /// The aggregate stage over the state's change log.
    async fn aggregate(&self, report: &mut CycleReport) -> Result<()> {
        const POSITION: &str = AGGREGATE_POSITION;
        loop {
            let after = self.db.position(POSITION)?;
            let rows = self.state.changes_after(after, BATCH)?;
            let Some(last) = rows.last().map(|row| row.sequence) else {
                return Ok(());
            };
            let mut changes = Vec::with_capacity(rows.len());
            for row in &rows {
                let sequence = SequenceNumber::parse(&row.sequence.to_string())
                    .map_err(|e| anyhow::anyhow!("state change {}: {e}", row.sequence))?;
                let change = StateChange::from_images(
                    sequence,
                    row.old.as_ref().map(StateItem::from),
                    Some(StateItem::from(&row.new)),
                )
                .map_err(|e| anyhow::anyhow!("state change {}: {e}", row.sequence))?;
                changes.push(change);
            }
            report.state_changes += rows.len();
            let (batch, failures) = self.aggregator.apply(&changes).await;
            add_aggregate(&mut report.aggregate, &batch);
            if let Some(first) = failures.iter().min_by(|a, b| a.from.cmp(&b.from)) {
                // Lambda would redeliver from there; the next cycle does.
                let from: i64 = first.from.as_reported().parse().unwrap_or(after + 1);
                self.db.set_position(POSITION, from - 1)?;
                bail!("the aggregate stage failed: {}", first.error);
            }
            self.db.set_position(POSITION, last)?;
        }
    }

    /// The rules stage over the totals' change log.
    async fn evaluate(&self, report: &mut CycleReport) -> Result<()> {
        const POSITION: &str = RULES_POSITION;
        loop {
            let after = self.db.position(POSITION)?;
            let rows = self.db.total_changes_after(after, BATCH)?;
            let Some(last) = rows.last().map(|row| row.sequence) else {
                return Ok(());
            };
            report.total_changes += rows.len();
            // As Lambda hands the stream to the handler: every record,
            // one that only moves a total's basis included.
            let dates = changes::by_date(
                rows.iter()
                    .map(|row| (row.new.date.clone(), row.new.counter.clone(), row.sequence)),
            );
            for (date, changes) in &dates {
                self.stage
                    .process_date(
                        &self.rules,
                        date,
                        Trigger::Changed(&changes.counters),
                        &mut report.rules,
                    )
                    .await
                    .with_context(|| format!("evaluating {date}"))?;
                report.dates.insert(date.clone());
            }
            self.db.set_position(POSITION, last)?;
        }
    }
}

fn add_aggregate(total: &mut AggregateReport, batch: &AggregateReport) {
    total.changes += batch.changes;
    total.already_applied += batch.already_applied;
    total.partial_writes += batch.partial_writes;
    total.total_writes += batch.total_writes;
    total.totals_removed += batch.totals_removed;
    total.write_units += batch.write_units;
    total.read_units += batch.read_units;
    total.failed += batch.failed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::key::UploadKey;
    use tally_core::ports::{Precondition, PutOutcome, StateStore};
    use tally_core::state::{Content, InstanceState, bucket_of};

    const DATE: &str = "2015-11-16";

    fn state(instance: &str, sequencer: u64, counters: BTreeMap<String, i64>) -> InstanceState {
        InstanceState {
            key: UploadKey {
                date: Date::parse(DATE).unwrap(),
                instance: instance.to_owned(),
            },
            object_key: format!("counters/{DATE}/{instance}"),
            ordering: OrderingKey::from_sequencer(&format!("{sequencer:016X}")).unwrap(),
            content: Content::Live {
                counters,
                etag: format!("e{sequencer}"),
                version_id: None,
            },
        }
    }

    async fn write(pipeline: &LocalPipeline, state: &InstanceState) {
        let outcome = pipeline
            .state
            .put(state, &Precondition::Supersedes)
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Written);
    }

    fn requests(value: i64) -> BTreeMap<String, i64> {
        [("requests".to_owned(), value)].into()
    }

    /// The pipeline resumes a failed batch from its checkpoint, as Lambda
    /// resumes from the reported record: r2 (i: A → B), r3 (j, another
    /// bucket, fails: its partial would be over DynamoDB's item limit), r4
    /// (i: B → A); then r5 shrinks j's state, and the batch from r3 on goes
    /// through. i's bucket netted to zero in the failed batch and must not
    /// fold r4 again.
    #[tokio::test]
    async fn a_net_zero_group_then_a_failure_in_another_group_resumes_from_the_checkpoint_exactly()
    {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = LocalPipeline::open(LocalPipelineConfig {
            root: dir.path().to_owned(),
            database: dir.path().join("tally.db"),
            prefix: "counters".into(),
            snapshot_prefix: "totals".into(),
            rules: RuleSet::load::<&str, &str>(&[]).unwrap(),
            notifier: JsonLinesNotifier::silent(),
            alert_days: 2,
        })
        .unwrap();
        let i = "i-0";
        let j = (1..)
            .map(|n| format!("i-{n}"))
            .find(|name| bucket_of(name) != bucket_of(i))
            .unwrap();
        let huge: BTreeMap<String, i64> = (0..30_000)
            .map(|n| (format!("counter-{n:06}"), 1))
            .collect();
        let mut report = CycleReport::default();

        write(&pipeline, &state(i, 1, requests(10))).await;
        pipeline.aggregate(&mut report).await.unwrap();
        write(&pipeline, &state(i, 2, requests(3))).await;
        write(&pipeline, &state(&j, 3, huge)).await;
        write(&pipeline, &state(i, 4, requests(10))).await;
        let failed = pipeline.aggregate(&mut report).await.unwrap_err();
        assert!(failed.to_string().contains("item limit"), "{failed}");

        write(&pipeline, &state(&j, 5, requests(100))).await;
        pipeline.aggregate(&mut report).await.unwrap();
        // The batch job: i holds 10, j holds 100.
        let totals = pipeline.totals(&Date::parse(DATE).unwrap()).unwrap();
        assert_eq!(totals, [("requests".to_owned(), 110)].into());
    }

    fn open(root: &Path) -> LocalPipeline {
        LocalPipeline::open(LocalPipelineConfig {
            root: root.to_path_buf(),
            database: root.join(".tally").join("tally.sqlite"),
            prefix: "counters".to_owned(),
            snapshot_prefix: "totals".to_owned(),
            rules: tally_rules::bundled::rules(),
            notifier: JsonLinesNotifier::silent(),
            alert_days: 2,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn two_same_size_renames_within_one_mtime_tick_are_two_changes() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("counters").join("2015-11-16");
        std::fs::create_dir_all(&folder).unwrap();
        let date = Date::parse("2015-11-16").unwrap();
        let mut pipeline = open(dir.path());
        let path = folder.join("web-1");
        std::fs::write(&path, "a 1\n").unwrap();
        pipeline.cycle(None).await.unwrap();
        assert_eq!(pipeline.totals(&date).unwrap()["a"], 1);

        // A second upload of the same size renamed into place within the
        // same tick of the file system's clock as the first.
        let aside = folder.join(".web-1.partial");
        std::fs::write(&aside, "a 2\n").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&aside)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&aside, &path).unwrap();
        let report = pipeline.cycle(None).await.unwrap();
        assert_eq!(report.created, 1, "{report:?}");
        assert_eq!(pipeline.totals(&date).unwrap()["a"], 2);
    }
}
