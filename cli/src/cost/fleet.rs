//! The sample fleet both designs are priced on: instance ids, counter
//! names and values like the measured runs' (`i-000`…, `COUNTER1`…,
//! `1000 × instance + counter`), which instances land in which bucket, and
//! which of them change each period. DynamoDB bills by item size, so the
//! models build real items from this fleet rather than assume their size;
//! a large fleet is sampled, since every instance's body has the same
//! shape.
//!
//! Also here: how the stream batches a period's records, which both
//! designs' stream-fed functions are billed by.

use serde::Serialize;
use serde_dynamo::Item;
use tally_core::capacity;
use tally_core::key::Date;
use tally_core::state::{BUCKETS, bucket_of};

use super::error::CostError;
use super::inputs::{Inputs, Shape};

/// Without a batching window Lambda polls a stream shard four times a second.
const STREAM_POLL_SECONDS: f64 = 0.25;
/// Items are built for at most this many counter values; a larger fleet is
/// sampled (every instance's body has the same shape, so sizes differ by a
/// byte or two between instances).
const SAMPLE_VALUES: u64 = 250_000;
/// The date the items carry (the day of the measured runs' example).
pub const DATE: &str = "2015-11-16";

/// The representative fleet: names, values, buckets, and who changes.
pub struct Fleet {
    pub shape: Shape,
    pub instances: u64,
    pub counters: u64,
    pub date: Date,
    pub names: Vec<String>,
    /// The bucket of every instance.
    pub buckets: Vec<u64>,
    /// Instances per bucket.
    pub occupied: [u64; BUCKETS as usize],
    /// Instances whose body changes each period, in upload order.
    pub changed: Vec<u64>,
    /// How many counters move on a changing instance (the first ones).
    pub changed_counters: u64,
    /// Instances whose items are built (all of them for small fleets).
    pub sample: Vec<u64>,
    /// Each counter's sum over each bucket's instances.
    pub sums: Vec<Vec<i128>>,
}

/// `percent` of `of`, rounded up so that any share above 0 is at least one.
fn share(percent: f64, of: u64) -> u64 {
    // The small tolerance keeps 10% of 100 at 10 despite binary fractions.
    (((percent / 100.0) * of as f64 - 1e-9).ceil().max(0.0) as u64).min(of)
}

impl Fleet {
    pub fn new(inputs: &Inputs) -> Result<Fleet, CostError> {
        let w = &inputs.workload;
        let shape = inputs.shape.clone();
        if let Some(bytes) = shape.instance_id_bytes {
            let needed = 2 + format!("{:x}", w.instances - 1).len() as u64;
            if bytes < needed {
                return Err(CostError::IdsTooShort {
                    bytes,
                    instances: w.instances,
                    needed,
                });
            }
        }
        if let Some(bytes) = shape.counter_name_bytes {
            let needed = 1 + w.counters.to_string().len() as u64;
            if bytes < needed {
                return Err(CostError::NamesTooShort {
                    bytes,
                    counters: w.counters,
                    needed,
                });
            }
        }
        let date = Date::parse(DATE).map_err(|e| CostError::Item(e.to_string()))?;
        let names = (0..w.counters).map(|c| shape.counter_name(c)).collect();
        let buckets: Vec<u64> = (0..w.instances)
            .map(|i| bucket_of(&shape.instance_id(i)))
            .collect();
        let mut occupied = [0; BUCKETS as usize];
        for &b in &buckets {
            occupied[b as usize] += 1;
        }
        let changed_counters = share(w.changed_counters_percent, w.counters);
        let changing = if changed_counters == 0 {
            0
        } else {
            share(w.changed_instances_percent, w.instances)
        };
        // Spread the changing instances evenly over the fleet.
        let changed = (0..changing)
            .map(|k| k * w.instances / changing.max(1))
            .collect();
        let step = (w.instances * w.counters).div_ceil(SAMPLE_VALUES).max(1);
        let sample = (0..w.instances).step_by(step as usize).collect();
        let mut fleet = Fleet {
            shape,
            instances: w.instances,
            counters: w.counters,
            date,
            names,
            buckets,
            occupied,
            changed,
            changed_counters,
            sample,
            sums: Vec::new(),
        };
        fleet.sums = fleet.bucket_sums();
        Ok(fleet)
    }

    pub fn value(&self, instance: u64, counter: u64) -> i64 {
        self.shape.value(instance, counter)
    }

    pub fn occupied_buckets(&self) -> impl Iterator<Item = u64> + '_ {
        (0..BUCKETS).filter(|&b| self.occupied[b as usize] > 0)
    }

    /// Each counter's sum over each bucket's instances: exact when the
    /// fleet is small, otherwise the bucket's size times the sampled mean.
    fn bucket_sums(&self) -> Vec<Vec<i128>> {
        let mut sums = vec![vec![0i128; self.counters as usize]; BUCKETS as usize];
        if self.sample.len() as u64 == self.instances {
            for (i, &b) in self.buckets.iter().enumerate() {
                for (c, sum) in sums[b as usize].iter_mut().enumerate() {
                    *sum += i128::from(self.value(i as u64, c as u64));
                }
            }
        } else {
            let n = self.sample.len() as i128;
            for c in 0..self.counters {
                let mean = self
                    .sample
                    .iter()
                    .map(|&i| i128::from(self.value(i, c)))
                    .sum::<i128>()
                    / n.max(1);
                for (bucket, instances) in sums.iter_mut().zip(self.occupied) {
                    bucket[c as usize] = mean * i128::from(instances);
                }
            }
        }
        sums
    }
}

impl Shape {
    pub fn instance_id(&self, i: u64) -> String {
        match self.instance_id_bytes {
            // As the measured runs name them (the tally-tests crate's sample fleet).
            None => format!("i-{i:03}"),
            Some(bytes) => format!("i-{i:0width$x}", width = bytes as usize - 2),
        }
    }

    fn counter_name(&self, c: u64) -> String {
        match self.counter_name_bytes {
            None => format!("COUNTER{}", c + 1),
            Some(bytes) => format!("C{:0width$}", c + 1, width = bytes as usize - 1),
        }
    }

    fn value(&self, instance: u64, counter: u64) -> i64 {
        let base = 1000 * instance + counter;
        match self.value_digits {
            // As the measured runs upload them (the tally-tests crate's sample fleet).
            None => base as i64,
            Some(digits) => {
                // Spread over [10^(d-1), 10^d) so every value has `digits` digits.
                let low = 10u128.pow(digits - 1);
                let span = 9 * low;
                (low + (u128::from(base) * 7919) % span) as i64
            }
        }
    }
}

/// The size DynamoDB bills `item` by.
pub fn item_bytes<T: Serialize>(item: T) -> Result<usize, CostError> {
    serde_dynamo::to_item::<_, Item>(item)
        .map(|item| capacity::item_size(&item))
        .map_err(|e| CostError::Item(e.to_string()))
}

/// Records per stream batch: what arrives on one shard within the batching
/// window (or one poll), at least one, at most the batch size. `records` is
/// how many arrive on the shard per period, evenly spread (the worst case
/// for batching: uploads aligned to the minute batch better), and `burst`
/// how many arrive together.
pub fn records_per_batch(records: f64, burst: f64, period: f64, window: f64, size: u64) -> f64 {
    let window = if window > 0.0 {
        window
    } else {
        STREAM_POLL_SECONDS
    };
    // The tolerance keeps 100 records × 60 s / 60 s at 100.
    let gathered = (records * window / period + 1e-9).floor();
    gathered.max(burst).max(1.0).min(size as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_above_nothing_is_at_least_one() {
        assert_eq!(share(10.0, 100), 10);
        assert_eq!(share(0.5, 100), 1);
        assert_eq!(share(0.0, 100), 0);
    }
}
