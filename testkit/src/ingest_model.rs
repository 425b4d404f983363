//! A model-based property test of ingest, written once over
//! [`IngestWorld`]: `ingest/tests/model.rs` runs it over SQLite and a bucket
//! in memory, tally-tests over DynamoDB and S3 on the AWS API server.
//!
//! Each case builds a fresh bucket (versioned or not) and state table, with
//! events that carry S3's sequencer or, in some cases, only their time (as
//! some emulators send them, with uploads now and then in the same
//! millisecond), then runs a random script over three instances of one day:
//!
//! - uploads of valid bodies, of a rejected body, and of an empty body;
//! - deletes;
//! - deliveries of any event produced so far: out of order, duplicated, two
//!   at once for concurrent invocations, and deliveries that crash after a
//!   random number of store operations, where the crash either loses the
//!   write or lands it and loses only the response (a timeout after the
//!   write).
//!
//! At the end every event that was never delivered successfully is
//! delivered once, in a random order: at-least-once delivery, no more. The
//! state table must then hold, for each instance:
//!
//! - the last upload's counters, when the last upload was accepted;
//! - a tombstone, when the object was deleted last;
//! - when the last upload was rejected, on a versioned bucket exactly what
//!   came last before it among accepted uploads and deletes (nothing, if
//!   neither came); on an unversioned bucket no contribution or a body
//!   accepted since the last delete (the limit no design can pass there: the
//!   older bodies are gone; see `ingest/src/apply.rs`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use tally_core::key::{Date, UploadKey};
use tally_core::ports::StateStore;
use tally_core::state::{Content, InstanceState};
use tally_ingest::{IngestConfig, Ingestor};

use crate::faults::crashing;
use crate::world::IngestWorld;

const INSTANCES: usize = 3;
const DATE: &str = "2015-11-16";

/// Bodies a script can upload: three accepted, one empty, one rejected.
const BODIES: [&str; 5] = [
    "requests 10\nerrors 1\n",
    "requests 12\nerrors 1\nbids-won 3\n",
    "requests 20\n",
    "",
    "requests 21 errors",
];
const REJECTED: usize = 4;

#[derive(Debug, Clone)]
pub enum Step {
    Upload {
        instance: usize,
        body: usize,
        same_millisecond: bool,
    },
    Delete {
        instance: usize,
    },
    Deliver {
        pick: usize,
    },
    DeliverTogether {
        first: usize,
        second: usize,
    },
    Crash {
        pick: usize,
        after_ops: i64,
        write_lands: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..INSTANCES, 0..BODIES.len(), proptest::bool::weighted(0.2))
            .prop_map(|(instance, body, same_millisecond)| Step::Upload { instance, body, same_millisecond }),
        1 => (0..INSTANCES).prop_map(|instance| Step::Delete { instance }),
        3 => any::<usize>().prop_map(|pick| Step::Deliver { pick }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(first, second)| Step::DeliverTogether { first, second }),
        1 => (any::<usize>(), 0..6i64, any::<bool>()).prop_map(|(pick, after_ops, write_lands)| Step::Crash { pick, after_ops, write_lands }),
    ]
}

/// What the script did to one instance's object, in order.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Upload(usize),
    Delete,
}

fn counters_of(body: usize) -> BTreeMap<String, i64> {
    let parsed =
        tally_core::body::parse(BODIES[body].as_bytes(), 1 << 20).expect("an accepted body");
    parsed
        .iter()
        .map(|c| (c.name.to_owned(), c.value))
        .collect()
}

/// Bodies accepted since the instance's last delete, oldest first.
fn accepted_since_delete(ops: &[Op]) -> Vec<usize> {
    let start = ops
        .iter()
        .rposition(|op| *op == Op::Delete)
        .map_or(0, |i| i + 1);
    ops[start..]
        .iter()
        .filter_map(|op| match op {
            Op::Upload(body) if *body != REJECTED => Some(*body),
            _ => None,
        })
        .collect()
}

fn check(
    instance: usize,
    ops: &[Op],
    versioned: bool,
    state: Option<&InstanceState>,
) -> Result<(), String> {
    let content = state.map(|s| &s.content);
    let live = content.and_then(Content::counters);
    let describe =
        || format!("instance {instance}, ops {ops:?}, versioned {versioned}: state {content:?}");
    match ops.last() {
        None => (content.is_none()).then_some(()).ok_or_else(describe),
        Some(Op::Delete) => (content == Some(&Content::Deleted))
            .then_some(())
            .ok_or_else(describe),
        Some(Op::Upload(body)) if *body != REJECTED => (live == Some(&counters_of(*body)))
            .then_some(())
            .ok_or_else(describe),
        Some(Op::Upload(_)) if versioned => {
            let last_kept = ops.iter().rev().find(|op| **op != Op::Upload(REJECTED));
            let ok = match last_kept {
                Some(Op::Upload(body)) => live == Some(&counters_of(*body)),
                Some(Op::Delete) => content == Some(&Content::Deleted),
                None => live.is_none(),
            };
            ok.then_some(()).ok_or_else(describe)
        }
        Some(Op::Upload(_)) => {
            let accepted = accepted_since_delete(ops);
            let ok = live.is_none() || accepted.iter().any(|b| live == Some(&counters_of(*b)));
            ok.then_some(()).ok_or_else(describe)
        }
    }
}

/// One case: the script, whether the bucket is versioned, whether events
/// carry only their time, and the order undelivered events go in at the end.
#[derive(Debug, Clone)]
pub struct Case {
    pub steps: Vec<Step>,
    pub versioned: bool,
    pub timed: bool,
    pub final_order: Vec<u32>,
}

/// The cases, drawn as they always were, so the saved regressions replay.
pub fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(step(), 1..24),
        any::<bool>(),
        proptest::bool::weighted(0.25),
        proptest::collection::vec(any::<u32>(), 24),
    )
        .prop_map(|(steps, versioned, timed, final_order)| Case {
            steps,
            versioned,
            timed,
            final_order,
        })
}

/// Runs `case` on `world`, which must be fresh, versioned as
/// `case.versioned` says and with events timed as `case.timed` says.
pub async fn run<W: IngestWorld>(world: &W, case: Case) -> Result<(), String> {
    let Case {
        steps,
        versioned,
        timed: _,
        final_order,
    } = case;
    let objects = world.object_store();
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); INSTANCES];
    let mut events: Vec<Value> = Vec::new();
    let mut delivered: Vec<bool> = Vec::new();
    let key = |instance: usize| format!("counters/{DATE}/i-{instance}");

    for step in steps {
        match step {
            Step::Upload {
                instance,
                body,
                same_millisecond,
            } => {
                if same_millisecond && !events.is_empty() {
                    world.same_millisecond_next();
                }
                let event = world.upload(&key(instance), BODIES[body]).await;
                ops[instance].push(Op::Upload(body));
                events.push(event);
                delivered.push(false);
            }
            Step::Delete { instance } => {
                let event = world.delete(&key(instance)).await;
                ops[instance].push(Op::Delete);
                events.push(event);
                delivered.push(false);
            }
            Step::Deliver { pick } if !events.is_empty() => {
                let i = pick % events.len();
                world
                    .ingestor()
                    .handle(&events[i])
                    .await
                    .map_err(|e| e.to_string())?;
                delivered[i] = true;
            }
            Step::DeliverTogether { first, second } if !events.is_empty() => {
                let (i, j) = (first % events.len(), second % events.len());
                let (ri, rj) = tokio::join!(
                    world.ingestor().handle(&events[i]),
                    world.ingestor().handle(&events[j])
                );
                ri.map_err(|e| e.to_string())?;
                rj.map_err(|e| e.to_string())?;
                delivered[i] = true;
                delivered[j] = true;
            }
            Step::Crash {
                pick,
                after_ops,
                write_lands,
            } if !events.is_empty() => {
                let i = pick % events.len();
                let (state, objects) = crashing(
                    world.state_store().clone(),
                    objects.clone(),
                    after_ops,
                    write_lands,
                );
                let crashing = Ingestor::new(state, objects, IngestConfig::default());
                // A delivery that crashed failed, and Lambda delivers it again,
                // even when an earlier delivery of the same event succeeded (a
                // duplicate that crashes is retried like any other). One that
                // finished despite the budget counts as delivered.
                delivered[i] = crashing.handle(&events[i]).await.is_ok();
            }
            _ => {}
        }
    }

    let mut pending: Vec<usize> = (0..events.len()).filter(|&i| !delivered[i]).collect();
    pending.sort_by_key(|&i| final_order.get(i).copied().unwrap_or(0));
    for i in pending {
        world
            .ingestor()
            .handle(&events[i])
            .await
            .map_err(|e| e.to_string())?;
    }

    for (instance, ops) in ops.iter().enumerate() {
        let key = UploadKey {
            date: Date::parse(DATE).map_err(|e| e.to_string())?,
            instance: format!("i-{instance}"),
        };
        let state = world
            .state_store()
            .get(&key)
            .await
            .map_err(|e| e.to_string())?;
        check(instance, ops, versioned, state.as_ref())?;
    }
    Ok(())
}
