//! A model-based property test of the whole ingest → aggregate path,
//! written once over [`PipelineWorld`] (`aggregate/tests/model.rs` runs it
//! over SQLite and a bucket in memory, tally-tests over DynamoDB, its
//! stream and S3 on the AWS API server), checked against the invariant of
//! docs/design.md §1: once the
//! stream is drained, every (date, counter) total equals what a batch job
//! computes from the objects in the bucket, and `reconcile` (a second oracle,
//! recomputing from the state table) finds no drift.
//!
//! Each case runs a random script of uploads over six instances and two
//! dates (overwrites, counters that disappear from a body, deletes, rejected
//! bodies followed by a good one, and an instance going back to the body it
//! had before, so that two changes of one bucket cancel out), ingests every
//! upload, reads the state
//! table's stream, and delivers it to the aggregate handler the ways Lambda
//! may:
//!
//! - **several shards**: records are spread over one to three shards by their
//!   hash key, as DynamoDB spreads partitions, each shard in order and the
//!   shards interleaved at random, sometimes two batches at once;
//! - **random batching**: batches of one to eight records;
//! - **whole redelivery**: a batch delivered twice;
//! - **bisection**: a batch delivered as two halves;
//! - **resumption**: after a reported failure, from the failed record on;
//! - **crashes**: an invocation whose table calls fail after a random number
//!   of operations, its last write lost or landed with the response lost;
//!   then either Lambda resumes from the record it reported, or (the process
//!   died) delivers the whole batch again;
//! - **one group fails**: the writes of one (date, bucket) group, or of one
//!   date's totals, fail (lost, or landed with the response lost) while the
//!   rest of the batch goes through; Lambda resumes from the lowest record
//!   reported.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_aggregate::Aggregator;
use tally_aggregate::reconcile::reconcile;
use tally_core::key::Date;
use tally_core::ports::TotalsStore;

use crate::faults::{Crashing, FailingPart, Part};
use crate::world::{IngestWorld, PipelineWorld};

const INSTANCES: usize = 6;
const DATES: [&str; 2] = ["2015-11-16", "2015-11-17"];

/// Bodies a script can upload. Counters come and go between them; the last
/// is rejected.
const BODIES: [&str; 6] = [
    "requests 10\nerrors 1\n",
    "requests 12\nbids-won 3\n",
    "requests -4\nzähler 7\nerrors 2\n",
    "",
    "bids-won 9223372036854775807\n",
    "requests 5 errors",
];
const REJECTED: usize = 5;

#[derive(Debug, Clone)]
pub enum Op {
    Upload {
        instance: usize,
        date: usize,
        body: usize,
    },
    Delete {
        instance: usize,
        date: usize,
    },
    /// Uploads the body the instance had before its last upload again: the
    /// instance's counters go there and back (B → A after A → B).
    UploadBack {
        instance: usize,
        date: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..INSTANCES, 0..DATES.len(), 0..BODIES.len()).prop_map(|(instance, date, body)| Op::Upload { instance, date, body }),
        1 => (0..INSTANCES, 0..DATES.len()).prop_map(|(instance, date)| Op::Delete { instance, date }),
        2 => (0..INSTANCES, 0..DATES.len()).prop_map(|(instance, date)| Op::UploadBack { instance, date }),
    ]
}

/// How Lambda delivers the next batch of a shard.
#[derive(Debug, Clone)]
pub enum Delivery {
    Once,
    Twice,
    Bisected,
    Crash {
        after_ops: i64,
        write_lands: bool,
        /// Lambda resumes from the reported record (a handled failure) rather
        /// than delivering the whole batch again (a crash of the process).
        resume_from_reported: bool,
    },
    AlongsideAnotherShard,
    /// The writes of one part fail: the group of the batch's record at
    /// offset `pick` (its date's totals, when `totals`).
    PartFails {
        pick: usize,
        totals: bool,
        write_lands: bool,
    },
}

fn delivery() -> impl Strategy<Value = (usize, usize, Delivery)> {
    let mode = prop_oneof![
        4 => Just(Delivery::Once),
        1 => Just(Delivery::Twice),
        1 => Just(Delivery::Bisected),
        1 => (0..12i64, any::<bool>(), any::<bool>()).prop_map(|(after_ops, write_lands, resume_from_reported)| Delivery::Crash { after_ops, write_lands, resume_from_reported }),
        1 => Just(Delivery::AlongsideAnotherShard),
        2 => (any::<usize>(), prop::bool::weighted(0.2), any::<bool>()).prop_map(|(pick, totals, write_lands)| Delivery::PartFails { pick, totals, write_lands }),
    ];
    (any::<usize>(), 1..=8usize, mode)
}

fn shard_of(partition_key: &str, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    partition_key.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

/// The part of the aggregate stage's tables a record's change is written
/// to: its (date, bucket) partial item, or its date's totals.
fn part_of(partition_key: &str, totals: bool) -> Result<Part, String> {
    let (date, bucket) = partition_key
        .split_once('#')
        .ok_or_else(|| format!("state hash key {partition_key:?} is not <date>#<bucket>"))?;
    let date = Date::parse(date).map_err(|e| e.to_string())?;
    Ok(if totals {
        Part::Totals { date }
    } else {
        Part::Partial {
            date,
            bucket: bucket
                .parse()
                .map_err(|e| format!("{partition_key:?}: {e}"))?,
        }
    })
}

/// Delivers a shard's next batch as a successful invocation would, and
/// returns where the shard goes on from.
async fn deliver<W: PipelineWorld, T: TotalsStore>(
    aggregator: &Aggregator<T>,
    records: &[W::Record],
    from: usize,
    size: usize,
) -> usize {
    let end = (from + size).min(records.len());
    match W::deliver(aggregator, &records[from..end]).await {
        None => end,
        Some(offset) => from + offset,
    }
}

/// The script with each [`Op::UploadBack`] turned into the upload it makes:
/// the body before the instance's last upload, or the first body if there
/// was none.
fn going_back_resolved(ops: Vec<Op>) -> Vec<Op> {
    let mut uploaded: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    ops.into_iter()
        .map(|op| {
            let op = match op {
                Op::UploadBack { instance, date } => {
                    let history = uploaded.get(&(instance, date));
                    let body = history
                        .and_then(|bodies| bodies.len().checked_sub(2).map(|at| bodies[at]))
                        .unwrap_or(0);
                    Op::Upload {
                        instance,
                        date,
                        body,
                    }
                }
                op => op,
            };
            if let Op::Upload {
                instance,
                date,
                body,
            } = op
            {
                uploaded.entry((instance, date)).or_default().push(body);
            }
            op
        })
        .collect()
}

/// One case: the script, how many shards the stream has, and how Lambda
/// delivers each batch (plain deliveries once the plan runs out).
#[derive(Debug, Clone)]
pub struct Case {
    pub ops: Vec<Op>,
    pub shards: usize,
    pub deliveries: Vec<(usize, usize, Delivery)>,
}

/// The cases, drawn as they always were, so the saved regressions replay.
pub fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(op(), 1..14),
        1..=3usize,
        proptest::collection::vec(delivery(), 0..24),
    )
        .prop_map(|(ops, shards, deliveries)| Case {
            ops,
            shards,
            deliveries,
        })
}

/// Runs `case` on `world`, which must be fresh, over an unversioned bucket.
pub async fn run<W: PipelineWorld>(world: &mut W, case: Case) -> Result<(), String> {
    let Case {
        ops,
        shards,
        deliveries,
    } = case;
    let mut last_body: BTreeMap<(usize, usize), Option<usize>> = BTreeMap::new();
    let mut ops = going_back_resolved(ops);
    // A rejected upload is never an instance's last: a good one follows.
    let mut fixes = Vec::new();
    for op in &ops {
        match op {
            Op::Upload {
                instance,
                date,
                body,
            } => {
                last_body.insert((*instance, *date), Some(*body));
            }
            Op::Delete { instance, date } => {
                last_body.insert((*instance, *date), None);
            }
            Op::UploadBack { .. } => {}
        }
    }
    for ((instance, date), body) in &last_body {
        if *body == Some(REJECTED) {
            fixes.push(Op::Upload {
                instance: *instance,
                date: *date,
                body: 0,
            });
        }
    }
    ops.extend(fixes);

    for op in &ops {
        let event = match op {
            Op::Upload {
                instance,
                date,
                body,
            } => {
                let key = format!("counters/{}/i-{instance}", DATES[*date]);
                world.ingest().upload(&key, BODIES[*body]).await
            }
            Op::Delete { instance, date } => {
                let key = format!("counters/{}/i-{instance}", DATES[*date]);
                world.ingest().delete(&key).await
            }
            Op::UploadBack { .. } => return Err(format!("{op:?} was not resolved to an upload")),
        };
        world
            .ingest()
            .ingestor()
            .handle(&event)
            .await
            .map_err(|e| e.to_string())?;
    }

    let records = world.read_new().await;
    let mut queues: Vec<Vec<W::Record>> = vec![Vec::new(); shards];
    for record in records {
        queues[shard_of(&W::partition_key(&record), shards)].push(record);
    }
    let mut positions = vec![0usize; shards];
    let store = world.aggregator().store().clone();
    let mut plan = deliveries.into_iter();
    loop {
        let open: Vec<usize> = (0..shards)
            .filter(|&s| positions[s] < queues[s].len())
            .collect();
        if open.is_empty() {
            break;
        }
        // Once the random plan runs out, each shard drains in plain deliveries.
        let (pick, size, mode) = plan.next().unwrap_or((0, 8, Delivery::Once));
        let shard = open[pick % open.len()];
        let from = positions[shard];
        let records = &queues[shard];
        positions[shard] = match mode {
            Delivery::Once => deliver::<W, _>(world.aggregator(), records, from, size).await,
            Delivery::Twice => {
                deliver::<W, _>(world.aggregator(), records, from, size).await;
                deliver::<W, _>(world.aggregator(), records, from, size).await
            }
            Delivery::Bisected => {
                let half = (size / 2).max(1);
                let after_first = deliver::<W, _>(world.aggregator(), records, from, half).await;
                if after_first < from + half {
                    after_first
                } else {
                    deliver::<W, _>(world.aggregator(), records, after_first, size - half).await
                }
            }
            Delivery::Crash {
                after_ops,
                write_lands,
                resume_from_reported,
            } => {
                let crashing =
                    Aggregator::new(Crashing::new(store.clone(), after_ops, write_lands));
                if resume_from_reported {
                    deliver::<W, _>(&crashing, records, from, size).await
                } else {
                    // The process died: Lambda delivers the whole batch again,
                    // unless the invocation had finished within its budget.
                    let end = (from + size).min(records.len());
                    match W::deliver(&crashing, &records[from..end]).await {
                        None => end,
                        Some(_) => from,
                    }
                }
            }
            Delivery::PartFails {
                pick,
                totals,
                write_lands,
            } => {
                let end = (from + size).min(records.len());
                let picked = &records[from + pick % (end - from)];
                let part = part_of(&W::partition_key(picked), totals)?;
                let failing = Aggregator::new(FailingPart::new(store.clone(), part, write_lands));
                deliver::<W, _>(&failing, records, from, size).await
            }
            Delivery::AlongsideAnotherShard => {
                let other = open.iter().copied().find(|&s| s != shard);
                match other {
                    None => deliver::<W, _>(world.aggregator(), records, from, size).await,
                    Some(other) => {
                        let other_from = positions[other];
                        let (mine, theirs) = tokio::join!(
                            deliver::<W, _>(world.aggregator(), records, from, size),
                            deliver::<W, _>(world.aggregator(), &queues[other], other_from, size)
                        );
                        positions[other] = theirs;
                        mine
                    }
                }
            }
        };
    }

    for date in DATES {
        let expected = batch_totals(world.ingest(), date).await?;
        let totals = live_totals(world.aggregator().store(), date).await?;
        if totals != expected {
            return Err(format!(
                "{date}: totals {totals:?}, batch job {expected:?}; ops {ops:?}"
            ));
        }
        let report = reconcile(
            world.ingest().state_store(),
            world.aggregator(),
            &Date::parse(date).map_err(|e| e.to_string())?,
            false,
        )
        .await
        .map_err(|e| e.to_string())?;
        if report.partials_repaired != 0 || report.totals_repaired != 0 {
            return Err(format!(
                "{date}: reconcile found drift {report:?}; ops {ops:?}"
            ));
        }
    }
    Ok(())
}

/// The day's live totals, removed ones left out.
pub async fn live_totals<T: TotalsStore>(
    store: &T,
    date: &str,
) -> Result<BTreeMap<String, i128>, String> {
    let date = Date::parse(date).map_err(|e| e.to_string())?;
    Ok(store
        .totals(&date)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|t| t.value.map(|v| (t.counter, v.0)))
        .collect())
}

/// What a batch job computes from the bucket: the sum over the day's
/// objects of their bodies (every object's body must be accepted).
pub async fn batch_totals<W: IngestWorld>(
    world: &W,
    date: &str,
) -> Result<BTreeMap<String, i128>, String> {
    let mut totals = BTreeMap::new();
    for (key, body) in world.current_objects(&format!("counters/{date}/")).await {
        let counters = tally_core::body::parse(&body, tally_core::body::DEFAULT_MAX_BODY_BYTES)
            .map_err(|e| format!("{key}: {e}"))?;
        for counter in counters {
            *totals.entry(counter.name.to_owned()).or_insert(0i128) += i128::from(counter.value);
        }
    }
    Ok(totals)
}
