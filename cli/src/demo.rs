//! `tally demo`: the ingest stage on a sample fleet, on this machine.
//!
//! Everything goes through the code the Lambda runs ([`Ingestor::apply_all`])
//! over the embedded adapters. Write units are computed from the items
//! written by DynamoDB's billing rules, so the figures are what the same
//! rounds would cost on DynamoDB; the seed's per-counter design is costed
//! the same way, from the item it would write.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use tally_core::capacity;
use tally_core::key::{Date, UploadKey};
use tally_core::ordering::OrderingKey;
use tally_core::state::StateItem;
use tally_embedded::directory::DirectoryStore;
use tally_embedded::sqlite::SqliteStateStore;
use tally_ingest::event::{Change, Notice};
use tally_ingest::{IngestConfig, IngestReport, Ingestor};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Instances in the sample fleet.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    instances: u32,
    /// Counters each instance reports.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    counters: u32,
    /// Where to lay out the bucket and the state database (default: a new
    /// temporary directory, kept so you can look at it).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The sample fleet and the stores it uploads to.
struct Fleet {
    date: Date,
    instances: u32,
    counters: u32,
    /// Current values, per instance, per counter.
    values: Vec<Vec<i64>>,
    bucket: DirectoryStore,
    state: SqliteStateStore,
    ingestor: Ingestor<SqliteStateStore, DirectoryStore>,
    next_sequencer: u64,
    log_position: i64,
}

const BUCKET_NAME: &str = "local";

impl Fleet {
    fn instance_id(i: u32) -> String {
        format!("i-{i:05}")
    }

    fn counter_name(c: u32) -> String {
        format!("COUNTER{}", c + 1)
    }

    fn key(&self, i: u32) -> String {
        UploadKey {
            date: self.date.clone(),
            instance: Self::instance_id(i),
        }
        .object_key(tally_core::key::DEFAULT_PREFIX)
    }

    fn body(&self, i: u32) -> String {
        let mut body = String::with_capacity(self.counters as usize * 16);
        for (c, value) in self.values[i as usize].iter().enumerate() {
            body.push_str(&Self::counter_name(c as u32));
            body.push(' ');
            body.push_str(&value.to_string());
            body.push('\n');
        }
        body
    }

    fn sequencer(&mut self) -> OrderingKey {
        self.next_sequencer += 1;
        // S3 sequencers are hex; this one starts where a real one might.
        OrderingKey::from_sequencer(&format!(
            "{:X}",
            0x0055_AED6_DCD9_0000 + self.next_sequencer
        ))
        .expect("hex is a sequencer")
    }

    /// Writes an object as an instance would and returns the S3 event's notice.
    fn upload(&mut self, i: u32, body: &str) -> Result<Notice> {
        let key = self.key(i);
        let path = self.bucket.path_of(&key)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        Ok(Notice {
            bucket: BUCKET_NAME.into(),
            object_key: key,
            version_id: None,
            ordering: self.sequencer(),
            change: Change::Created {
                etag: Some(DirectoryStore::etag_of(body.as_bytes())),
            },
        })
    }

    fn delete(&mut self, i: u32) -> Result<Notice> {
        let key = self.key(i);
        let path = self.bucket.path_of(&key)?;
        std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
        Ok(Notice {
            bucket: BUCKET_NAME.into(),
            object_key: key,
            version_id: None,
            ordering: self.sequencer(),
            change: Change::Removed,
        })
    }

    /// Applies the notices as one batch and reports the round.
    async fn round(
        &mut self,
        title: &str,
        notices: &[Notice],
        seed_writes: Option<u64>,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let mut report = IngestReport {
            records: notices.len() as u64,
            ..IngestReport::default()
        };
        let failed = self.ingestor.apply_all(notices, &mut report).await;
        let elapsed = started.elapsed();
        if let Some((position, error)) = failed.first() {
            anyhow::bail!("{}: {error}", notices[*position].object_key);
        }
        let changes = self
            .state
            .changes_after(self.log_position, usize::MAX >> 1)?;
        if let Some(last) = changes.last() {
            self.log_position = last.sequence;
        }
        println!("{title}");
        println!(
            "  events: {} → {} written, {} unchanged, {} stale or duplicate, {} rejected, {} ignored",
            report.records,
            report.written,
            report.unchanged,
            report.stale + report.duplicate,
            report.rejected,
            report.ignored
        );
        println!(
            "  state table: {} writes, {} write units, {} read units; {} change records for the aggregate stage; {:.1} ms",
            report.capacity.writes,
            report.capacity.write_units,
            report.capacity.read_units,
            changes.len(),
            elapsed.as_secs_f64() * 1000.0
        );
        if let Some(seed_writes) = seed_writes {
            println!(
                "  the seed's per-counter design: {} writes, {} write units",
                seed_writes,
                seed_writes * self.seed_item_units()
            );
        }
        Ok(report)
    }

    /// Write units of one item of the seed's table: (Counter, Date) with a
    /// map of every instance's value, billed whole on every write.
    fn seed_item_units(&self) -> u64 {
        #[derive(Serialize)]
        struct SeedItem {
            #[serde(rename = "Counter")]
            counter: String,
            #[serde(rename = "Date")]
            date: String,
            #[serde(rename = "InstanceValues")]
            instance_values: BTreeMap<String, i64>,
        }
        let item = SeedItem {
            counter: Self::counter_name(0),
            date: self.date.to_string(),
            instance_values: (0..self.instances)
                .map(|i| (Self::instance_id(i), self.values[i as usize][0]))
                .collect(),
        };
        serde_dynamo::to_item::<_, serde_dynamo::Item>(item)
            .map(|item| capacity::write_units(capacity::item_size(&item)))
            .unwrap_or(0)
    }
}

/// A small deterministic generator, so every run shows the same fleet.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let root = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => tempfile::Builder::new()
            .prefix("tally-demo-")
            .tempdir()
            .context("creating a temporary directory (set TMPDIR or pass --dir)")?
            .keep(),
    };
    let bucket = DirectoryStore::new(root.join("bucket"));
    let state_path = root.join("state.sqlite");
    let state = SqliteStateStore::open(&state_path)?;
    let date = Date::parse(&chrono::Utc::now().format("%Y-%m-%d").to_string())?;
    let mut random = Lcg(20151116);
    let values = (0..args.instances)
        .map(|_| {
            (0..args.counters)
                .map(|_| (random.next() % 100_000) as i64)
                .collect()
        })
        .collect();
    let ingestor = Ingestor::new(state.clone(), bucket.clone(), IngestConfig::default());
    let mut fleet = Fleet {
        date,
        instances: args.instances,
        counters: args.counters,
        values,
        bucket,
        state,
        ingestor,
        next_sequencer: 0,
        log_position: 0,
    };
    let per_round = u64::from(args.instances) * u64::from(args.counters);

    println!(
        "tally demo: the ingest stage on a fleet of {} instances × {} counters, on this machine",
        args.instances, args.counters
    );
    println!("  bucket:      {}", fleet.bucket.root().display());
    println!(
        "  state table: {} (SQLite, same items as DynamoDB)",
        state_path.display()
    );
    println!();

    let mut first_round = Vec::new();
    for i in 0..args.instances {
        let body = fleet.body(i);
        first_round.push(fleet.upload(i, &body)?);
    }
    fleet
        .round(
            "round 1 — every instance uploads its counters",
            &first_round,
            Some(per_round),
        )
        .await?;

    let mut notices = Vec::new();
    for i in 0..args.instances {
        let body = fleet.body(i);
        notices.push(fleet.upload(i, &body)?);
    }
    fleet
        .round(
            "round 2 — every instance uploads the same counters again",
            &notices,
            Some(per_round),
        )
        .await?;

    let changed_per_instance = (args.counters / 10).max(1);
    let mut notices = Vec::new();
    for i in 0..args.instances {
        for c in 0..changed_per_instance {
            let slot = (c * 10 + i % 10) % args.counters;
            fleet.values[i as usize][slot as usize] += 1 + i64::from(c);
        }
        let body = fleet.body(i);
        notices.push(fleet.upload(i, &body)?);
    }
    fleet
        .round(
            &format!(
                "round 3 — {changed_per_instance} of each instance's {} counters change",
                args.counters
            ),
            &notices,
            Some(per_round),
        )
        .await?;

    let broken = 0;
    let deleted = args.instances.saturating_sub(1);
    let mut notices = vec![fleet.upload(broken, "COUNTER1 5\nCOUNTER2 12x\n")?];
    if deleted != broken {
        notices.push(fleet.delete(deleted)?);
    }
    notices.push(Notice {
        bucket: BUCKET_NAME.into(),
        object_key: "counters/2015-13-45/i-00001".into(),
        version_id: None,
        ordering: fleet.sequencer(),
        change: Change::Created { etag: None },
    });
    let report = fleet
        .round(
            &format!(
                "round 4 — {} uploads a broken body, {} deletes its object, and a key with no real date arrives",
                Fleet::instance_id(broken),
                Fleet::instance_id(deleted)
            ),
            &notices,
            None,
        )
        .await?;
    let rejection = fleet.ingestor.apply(&notices[0]).await?.0;
    println!("  {}: {rejection}", notices[0].object_key);
    println!(
        "  {} keeps its last accepted counters; {}'s contribution is gone ({} written)",
        Fleet::instance_id(broken),
        Fleet::instance_id(deleted),
        report.written
    );

    fleet
        .round(
            "round 5 — round 1's event for the first instance arrives again, late",
            &first_round[..1],
            None,
        )
        .await?;

    println!();
    let states = fleet.state.all()?;
    let totals = tally_core::totals::sum(states.iter().filter(|s| s.key.date == fleet.date));
    println!(
        "fleet totals for {} from the state table: {} counters; {} = {}, {} = {}",
        fleet.date,
        totals.len(),
        Fleet::counter_name(0),
        totals.get(&Fleet::counter_name(0)).copied().unwrap_or(0),
        Fleet::counter_name(1),
        totals.get(&Fleet::counter_name(1)).copied().unwrap_or(0),
    );
    println!(
        "  (on AWS the aggregate stage keeps these totals in the totals table; on one machine it joins with `tally run`)"
    );
    if let Some(sample) = states
        .iter()
        .find(|s| s.key.instance == Fleet::instance_id(1))
        .or(states.first())
    {
        let mut item = StateItem::from(sample);
        let shown = item.counters.len();
        item.counters = item.counters.into_iter().take(3).collect();
        println!(
            "one state item ({} of its {shown} counters shown):\n  {}",
            item.counters.len(),
            serde_json::to_string(&item)?
        );
    }
    Ok(())
}
