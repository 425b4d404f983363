//! Which instances stopped uploading: the stale instances of a day.
//!
//! The totals change only when an upload changes something, so a dead
//! instance looks exactly like an idle one to everything downstream of the
//! state table. The bucket tells them apart: each instance overwrites its
//! object for the day periodically, and every upload moves the object's last
//! write time (S3's `LastModified`, a file's modification time), even an
//! identical re-upload that writes nothing to the tables. A listing of the
//! day's prefix therefore says when each instance was last heard from, at
//! one LIST request per 1,000 instances and no read of any body.
//!
//! **Why two days.** Objects are per day, and at midnight (UTC, the dates of
//! the keys) every instance starts a new one. An instance that died at 23:59
//! has no object under the new day at all, so a listing of D alone would
//! never see it go quiet. The fleet expected on D is the instances with an
//! object under D, plus those with one under D−1 only, until `forget_after`
//! has passed since their last write: at 00:05 an instance that last wrote
//! at 23:59 the day before is stale with `after: 5m`. An instance's last
//! write is its newest object's, D's when it has one. Once D's midnight plus
//! `forget_after` has passed, every object under D−1 is older than
//! `forget_after`, so nothing there can still count and D−1 is listed only
//! during the first `forget_after` of the day ([`needs_previous_day`]).
//! A `forget_after` longer than a day still carries an instance over one
//! day only: the fleet of D is read from D and D−1.
//!
//! **Forgotten instances.** An instance silent for `forget_after` is taken
//! for decommissioned: it leaves the fleet and stops counting as stale, so
//! a fleet that scales in does not page forever. It is reported apart,
//! among [`Staleness::forgotten`], so the alert can say how many were
//! forgotten; that holds the instances that were in D's fleet at some point
//! of D. A carried-over instance already forgotten before D's midnight was
//! never in D's fleet and is not reported; the others are reported while
//! D−1 is listed, which is until the last of them has been forgotten.
//!
//! **A deleted object leaves the fleet, and tombstones come from the state
//! table.** A deleted object is not listed, which takes care of D by
//! itself. But an instance whose object under D was deleted still has one
//! under D−1 and would be carried over and called stale. S3 can tell only by
//! listing the prefix's versions (a versioned bucket keeps a delete marker):
//! every version of every object, which at 100,000 instances uploading every
//! minute is thousands of requests per tick, and nothing at all on an
//! unversioned bucket. Ingest already records each delete as a tombstone in
//! the state table (the item for (D, instance) holds [`Content::Deleted`]).
//! So the computation has two phases: [`Fleet::to_confirm`] names the few
//! carried-over instances that would be stale or forgotten, the caller reads
//! their items (one strongly consistent read each, never one per instance
//! of the fleet), and [`Fleet::staleness`] takes the instances found
//! deleted. A carried-over instance still fresh is not read: if its object
//! under D was deleted it counts in the fleet's size until it would have
//! been stale, at most `after`. [`stale_instances`] does both phases over
//! the ports, for the AWS and the embedded stages alike.
//!
//! **A closed day** is judged as of its end by [`Fleet`]: evaluated later,
//! its instances, which now upload under the next day, are not all stale.
//! The rules stage does not list a closed day at all: it gives it
//! [`Staleness::day_over`], so an alert still firing on it resolves, and
//! the next day's alert (whose fleet carries the silent instances over)
//! takes the watch.
//!
//! An instance is stale when its last write is older than `after`, and
//! forgotten when it is `forget_after` old or older. A last write in the
//! future (a clock ahead of the caller's) is fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

use crate::key::{Date, UploadKey, parse_key};
use crate::ports::{ListedObject, ObjectWriter, StateStore, StoreError};
use crate::state::Content;

/// How long silence may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// An instance whose last write is older than this is stale.
    pub after: Duration,
    /// An instance this silent is taken for decommissioned: it leaves the
    /// fleet and is reported as forgotten instead of stale.
    pub forget_after: Duration,
}

/// An instance and when it last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWrite {
    pub instance: String,
    pub at: DateTime<Utc>,
}

/// The verdict on one day's fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staleness {
    pub date: Date,
    /// The instances that count now: the stale ones included, the forgotten
    /// and deleted ones not.
    pub fleet: usize,
    /// Silent longer than `after`, oldest last write first.
    pub stale: Vec<LastWrite>,
    /// In the day's fleet at some point of the day and silent for
    /// `forget_after` since, oldest last write first.
    pub forgotten: Vec<LastWrite>,
    /// The verdict on a day that is over ([`Staleness::day_over`]).
    pub day_over: bool,
}

impl Staleness {
    /// The verdict the rules stage gives a day that is over: nothing stale.
    /// Its instances now upload under the next day, whose own alert
    /// watches them; an alert still firing on the closed day resolves
    /// rather than firing, unresolvable, until its date leaves the
    /// alerting window.
    pub fn day_over(date: &Date) -> Staleness {
        Staleness {
            date: date.clone(),
            fleet: 0,
            stale: Vec::new(),
            forgotten: Vec::new(),
            day_over: true,
        }
    }
}

/// The key prefix a day's uploads are listed under: `<prefix>/<date>/`.
pub fn day_prefix(prefix: &str, date: &Date) -> String {
    format!("{prefix}/{date}/")
}

/// The day before `date`; `None` only for 0000-01-01, whose day before has
/// no `YYYY-MM-DD` form.
pub fn previous_day(date: &Date) -> Option<Date> {
    let previous = calendar_day(date).pred_opt()?;
    Date::parse(&previous.format("%Y-%m-%d").to_string()).ok()
}

/// Whether D−1's listing can still change the verdict on `date` at `now`:
/// only during the first `forget_after` of D. After that every object under
/// D−1 is older than `forget_after`, and a tick lists D alone.
pub fn needs_previous_day(date: &Date, now: DateTime<Utc>, thresholds: &Thresholds) -> bool {
    match start_of(calendar_day(date)).checked_add_signed(delta(thresholds.forget_after)) {
        Some(last_needed) => judged_at(date, now) < last_needed,
        None => true,
    }
}

/// The first phase's result: each instance's last write, before the state
/// table has said which carried-over ones were deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    date: Date,
    thresholds: Thresholds,
    /// `now`, or the day's end once the day is over.
    judged_at: DateTime<Utc>,
    /// Instances with an object under D.
    listed: BTreeMap<String, DateTime<Utc>>,
    /// Instances with an object under D−1 only, in D's fleet at some point
    /// of D.
    carried_over: BTreeMap<String, DateTime<Utc>>,
}

impl Fleet {
    /// The fleet of `date` from the listings of its prefix and, when
    /// [`needs_previous_day`], the previous day's (`None` carries no one
    /// over). Keys that are not uploads of the day listed (folder markers,
    /// stray files, nested keys) are ignored.
    pub fn new(
        date: &Date,
        prefix: &str,
        today: &[ListedObject],
        yesterday: Option<&[ListedObject]>,
        now: DateTime<Utc>,
        thresholds: &Thresholds,
    ) -> Fleet {
        let listed = last_writes(today, prefix, date);
        let start = start_of(calendar_day(date));
        let forget_after = delta(thresholds.forget_after);
        let carried_over = match (yesterday, previous_day(date)) {
            (Some(yesterday), Some(previous)) => last_writes(yesterday, prefix, &previous)
                .into_iter()
                .filter(|(instance, at)| {
                    // Forgotten before D began: never in D's fleet.
                    let in_days_fleet = at
                        .checked_add_signed(forget_after)
                        .is_none_or(|forgotten_at| forgotten_at > start);
                    !listed.contains_key(instance) && in_days_fleet
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        Fleet {
            date: date.clone(),
            thresholds: *thresholds,
            judged_at: judged_at(date, now),
            listed,
            carried_over,
        }
    }

    /// The carried-over instances that would be stale or forgotten, as keys
    /// under D: the caller reads their state items and passes those found
    /// deleted to [`Fleet::staleness`]. Fresh ones are not named, so a tick
    /// reads a handful of items, not one per instance.
    pub fn to_confirm(&self) -> Vec<UploadKey> {
        self.carried_over
            .iter()
            .filter(|(_, at)| self.is_stale(**at))
            .map(|(instance, _)| UploadKey {
                date: self.date.clone(),
                instance: instance.clone(),
            })
            .collect()
    }

    /// The verdict, given the carried-over instances whose object under D
    /// the state table knows was deleted.
    pub fn staleness(&self, deleted: &BTreeSet<String>) -> Staleness {
        let carried_over = self
            .carried_over
            .iter()
            .filter(|(instance, _)| !deleted.contains(*instance));
        let mut fleet = 0;
        let mut stale = Vec::new();
        let mut forgotten = Vec::new();
        for (instance, at) in self.listed.iter().chain(carried_over) {
            let last_write = LastWrite {
                instance: instance.clone(),
                at: *at,
            };
            if self.age(*at) >= delta(self.thresholds.forget_after) {
                forgotten.push(last_write);
                continue;
            }
            fleet += 1;
            if self.is_stale(*at) {
                stale.push(last_write);
            }
        }
        let oldest_first =
            |a: &LastWrite, b: &LastWrite| (a.at, &a.instance).cmp(&(b.at, &b.instance));
        stale.sort_by(oldest_first);
        forgotten.sort_by(oldest_first);
        Staleness {
            date: self.date.clone(),
            fleet,
            stale,
            forgotten,
            day_over: false,
        }
    }

    fn age(&self, at: DateTime<Utc>) -> TimeDelta {
        self.judged_at.signed_duration_since(at)
    }

    /// Stale or forgotten: silent longer than `after`.
    fn is_stale(&self, at: DateTime<Utc>) -> bool {
        self.age(at) > delta(self.thresholds.after)
    }
}

/// The stale instances of `date` at `now`, from the bucket's listings and
/// the state table's tombstones: D's prefix, D−1's while
/// [`needs_previous_day`], and one strongly consistent read per carried-over
/// instance that would be stale ([`Fleet::to_confirm`]).
pub async fn stale_instances<S: StateStore, L: ObjectWriter>(
    states: &S,
    objects: &L,
    bucket: &str,
    prefix: &str,
    date: &Date,
    now: DateTime<Utc>,
    thresholds: &Thresholds,
) -> Result<Staleness, StoreError> {
    let today = objects.list(bucket, &day_prefix(prefix, date)).await?;
    let yesterday = match previous_day(date) {
        Some(previous) if needs_previous_day(date, now, thresholds) => {
            Some(objects.list(bucket, &day_prefix(prefix, &previous)).await?)
        }
        _ => None,
    };
    let fleet = Fleet::new(date, prefix, &today, yesterday.as_deref(), now, thresholds);
    confirm(states, &fleet).await
}

/// The second phase over the state table: reads the items
/// [`Fleet::to_confirm`] names and gives the verdict. For a caller that
/// judges one listing against several thresholds (several `stale:` rules).
pub async fn confirm<S: StateStore>(states: &S, fleet: &Fleet) -> Result<Staleness, StoreError> {
    let mut deleted = BTreeSet::new();
    for key in fleet.to_confirm() {
        if let Some(state) = states.get(&key).await?
            && matches!(state.content, Content::Deleted)
        {
            deleted.insert(key.instance);
        }
    }
    Ok(fleet.staleness(&deleted))
}

/// Each instance's newest write under `date`.
fn last_writes(
    listing: &[ListedObject],
    prefix: &str,
    date: &Date,
) -> BTreeMap<String, DateTime<Utc>> {
    let mut writes = BTreeMap::new();
    for object in listing {
        let Ok(key) = parse_key(&object.key, prefix) else {
            continue;
        };
        if key.date != *date {
            continue;
        }
        writes
            .entry(key.instance)
            .and_modify(|at: &mut DateTime<Utc>| *at = (*at).max(object.last_modified))
            .or_insert(object.last_modified);
    }
    writes
}

fn calendar_day(date: &Date) -> NaiveDate {
    NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d")
        .expect("a Date is a calendar date in YYYY-MM-DD form by construction")
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// `now`, or the day's end when `now` is past it.
fn judged_at(date: &Date, now: DateTime<Utc>) -> DateTime<Utc> {
    match calendar_day(date).succ_opt() {
        Some(next) => now.min(start_of(next)),
        None => now,
    }
}

/// Durations beyond chrono's range (hundreds of millions of years) are
/// never reached.
fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "counters";

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn listed(key: &str, last_modified: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            last_modified: at(last_modified),
            size: 0,
        }
    }

    fn thresholds(after_minutes: u64, forget_after_hours: u64) -> Thresholds {
        Thresholds {
            after: Duration::from_secs(after_minutes * 60),
            forget_after: Duration::from_secs(forget_after_hours * 3600),
        }
    }

    fn ids(writes: &[LastWrite]) -> Vec<&str> {
        writes.iter().map(|w| w.instance.as_str()).collect()
    }

    /// The verdict when no carried-over instance was deleted.
    fn verdict(
        today: &[ListedObject],
        yesterday: &[ListedObject],
        now: &str,
        thresholds: &Thresholds,
    ) -> Staleness {
        Fleet::new(
            &date("2015-11-17"),
            PREFIX,
            today,
            Some(yesterday),
            at(now),
            thresholds,
        )
        .staleness(&BTreeSet::new())
    }

    #[test]
    fn an_instance_silent_since_just_before_midnight_is_stale_after_the_delay() {
        let yesterday = [listed("counters/2015-11-16/web-1", "2015-11-16T23:59:00Z")];
        let limits = thresholds(5, 6);

        let early = verdict(&[], &yesterday, "2015-11-17T00:03:00Z", &limits);
        assert_eq!(early.fleet, 1, "carried over from the day before");
        assert!(early.stale.is_empty());

        let late = verdict(&[], &yesterday, "2015-11-17T00:05:00Z", &limits);
        assert_eq!(late.fleet, 1);
        assert_eq!(
            late.stale,
            [LastWrite {
                instance: "web-1".into(),
                at: at("2015-11-16T23:59:00Z")
            }]
        );
        assert!(late.forgotten.is_empty());
    }

    #[test]
    fn an_instance_that_wrote_recently_is_not_stale() {
        let today = [listed("counters/2015-11-17/web-1", "2015-11-17T10:00:00Z")];
        let staleness = verdict(&today, &[], "2015-11-17T10:04:59Z", &thresholds(5, 6));
        assert_eq!(staleness.fleet, 1);
        assert!(staleness.stale.is_empty());
        assert!(staleness.forgotten.is_empty());
    }

    #[test]
    fn an_identical_re_upload_makes_an_instance_fresh_again() {
        let limits = thresholds(5, 6);
        let before = [listed("counters/2015-11-17/web-1", "2015-11-17T10:00:00Z")];
        let silent = verdict(&before, &[], "2015-11-17T10:10:00Z", &limits);
        assert_eq!(ids(&silent.stale), ["web-1"]);
        // Same key, same ETag: only the last write time moved.
        let after = [listed("counters/2015-11-17/web-1", "2015-11-17T10:09:00Z")];
        assert_eq!(before[0].etag, after[0].etag);
        let back = verdict(&after, &[], "2015-11-17T10:10:00Z", &limits);
        assert!(back.stale.is_empty());
        assert_eq!(back.fleet, 1);
    }

    #[test]
    fn todays_write_outranks_yesterdays_and_the_instance_counts_once() {
        let yesterday = [listed("counters/2015-11-16/web-1", "2015-11-16T20:00:00Z")];
        let today = [listed("counters/2015-11-17/web-1", "2015-11-17T00:01:00Z")];
        let fleet = Fleet::new(
            &date("2015-11-17"),
            PREFIX,
            &today,
            Some(&yesterday),
            at("2015-11-17T00:04:00Z"),
            &thresholds(5, 6),
        );
        assert!(
            fleet.to_confirm().is_empty(),
            "nothing carried over to read"
        );
        let staleness = fleet.staleness(&BTreeSet::new());
        assert_eq!(staleness.fleet, 1);
        assert!(staleness.stale.is_empty());
    }

    #[test]
    fn stale_instances_are_listed_oldest_first() {
        let today = [
            listed("counters/2015-11-17/b", "2015-11-17T09:00:00Z"),
            listed("counters/2015-11-17/c", "2015-11-17T08:00:00Z"),
            listed("counters/2015-11-17/a", "2015-11-17T09:00:00Z"),
            listed("counters/2015-11-17/fresh", "2015-11-17T09:59:00Z"),
        ];
        let yesterday = [listed("counters/2015-11-16/d", "2015-11-16T23:00:00Z")];
        let staleness = verdict(
            &today,
            &yesterday,
            "2015-11-17T10:00:00Z",
            &thresholds(5, 24),
        );
        assert_eq!(ids(&staleness.stale), ["d", "c", "a", "b"]);
        assert_eq!(staleness.fleet, 5);
    }

    #[test]
    fn an_instance_silent_for_forget_after_is_forgotten_not_stale() {
        let limits = thresholds(5, 6);
        let today = [
            listed("counters/2015-11-17/gone", "2015-11-17T01:00:00Z"),
            listed("counters/2015-11-17/quiet", "2015-11-17T06:00:00Z"),
            listed("counters/2015-11-17/up", "2015-11-17T06:59:00Z"),
        ];
        let staleness = verdict(&today, &[], "2015-11-17T07:00:00Z", &limits);
        assert_eq!(ids(&staleness.forgotten), ["gone"]);
        assert_eq!(ids(&staleness.stale), ["quiet"]);
        assert_eq!(staleness.fleet, 2, "a forgotten instance stops counting");
    }

    #[test]
    fn a_carried_over_instance_is_forgotten_in_the_night_and_yesterday_is_then_not_listed() {
        let limits = thresholds(5, 6);
        let d = date("2015-11-17");
        let yesterday = [
            listed("counters/2015-11-16/late", "2015-11-16T23:00:00Z"),
            // Forgotten before midnight: never in the new day's fleet.
            listed("counters/2015-11-16/long-gone", "2015-11-16T12:00:00Z"),
        ];

        let night = verdict(&[], &yesterday, "2015-11-17T04:59:00Z", &limits);
        assert_eq!(ids(&night.stale), ["late"]);
        assert!(night.forgotten.is_empty());

        let dawn = verdict(&[], &yesterday, "2015-11-17T05:00:00Z", &limits);
        assert!(dawn.stale.is_empty());
        assert_eq!(ids(&dawn.forgotten), ["late"]);
        assert_eq!(dawn.fleet, 0);

        assert!(needs_previous_day(&d, at("2015-11-17T05:59:59Z"), &limits));
        assert!(!needs_previous_day(&d, at("2015-11-17T06:00:00Z"), &limits));
        // Every object under yesterday is forgotten by then, listed or not.
        let listed_anyway = verdict(&[], &yesterday, "2015-11-17T06:00:00Z", &limits);
        assert!(listed_anyway.stale.is_empty());
        assert_eq!(listed_anyway.fleet, 0);
    }

    #[test]
    fn a_deleted_object_under_the_day_leaves_the_fleet() {
        let yesterday = [
            listed("counters/2015-11-16/deleted", "2015-11-16T23:00:00Z"),
            listed("counters/2015-11-16/silent", "2015-11-16T23:00:00Z"),
            listed("counters/2015-11-16/fresh", "2015-11-16T23:59:00Z"),
        ];
        let fleet = Fleet::new(
            &date("2015-11-17"),
            PREFIX,
            &[],
            Some(&yesterday),
            at("2015-11-17T00:01:00Z"),
            &thresholds(5, 6),
        );
        let to_read = fleet.to_confirm();
        let instances: Vec<&str> = to_read.iter().map(|k| k.instance.as_str()).collect();
        assert_eq!(
            instances,
            ["deleted", "silent"],
            "the fresh one is not read"
        );
        assert!(
            to_read.iter().all(|k| k.date == date("2015-11-17")),
            "their items under the day judged, where a delete leaves a tombstone"
        );

        let deleted = BTreeSet::from(["deleted".to_owned()]);
        let staleness = fleet.staleness(&deleted);
        assert_eq!(ids(&staleness.stale), ["silent"]);
        assert!(staleness.forgotten.is_empty());
        assert_eq!(staleness.fleet, 2);
    }

    #[test]
    fn keys_that_are_not_uploads_of_the_day_are_ignored() {
        let today = [
            listed("counters/2015-11-17/", "2015-11-17T00:00:00Z"),
            listed("counters/2015-11-17/nested/web-2", "2015-11-17T00:00:00Z"),
            listed("counters/2015-11-16/web-3", "2015-11-17T00:00:00Z"),
            listed("other/2015-11-17/web-4", "2015-11-17T00:00:00Z"),
            listed("counters/2015-11-17/web-1", "2015-11-17T09:59:00Z"),
        ];
        let staleness = verdict(&today, &[], "2015-11-17T10:00:00Z", &thresholds(5, 6));
        assert_eq!(staleness.fleet, 1);
        assert!(staleness.stale.is_empty());
    }

    #[test]
    fn a_day_that_is_over_keeps_the_verdict_of_its_last_instant() {
        let limits = thresholds(5, 6);
        let today = [
            listed("counters/2015-11-17/up", "2015-11-17T23:58:00Z"),
            listed("counters/2015-11-17/down", "2015-11-17T23:00:00Z"),
        ];
        // The next morning, when every instance uploads under the next day.
        let staleness = verdict(&today, &[], "2015-11-18T09:00:00Z", &limits);
        assert_eq!(ids(&staleness.stale), ["down"]);
        assert_eq!(staleness.fleet, 2);
        assert!(!needs_previous_day(
            &date("2015-11-17"),
            at("2015-11-18T09:00:00Z"),
            &limits
        ));
    }

    #[test]
    fn a_write_stamped_ahead_of_the_clock_is_fresh() {
        let today = [listed("counters/2015-11-17/web-1", "2015-11-17T10:02:00Z")];
        let staleness = verdict(&today, &[], "2015-11-17T10:00:00Z", &thresholds(5, 6));
        assert!(staleness.stale.is_empty());
        assert_eq!(staleness.fleet, 1);
    }

    #[test]
    fn the_day_before_crosses_months_years_and_leap_days() {
        let previous = |text| previous_day(&date(text)).unwrap();
        assert_eq!(previous("2016-03-01"), date("2016-02-29"));
        assert_eq!(previous("2016-01-01"), date("2015-12-31"));
        assert_eq!(previous_day(&date("0000-01-01")), None);
        assert_eq!(
            day_prefix(PREFIX, &date("2015-11-17")),
            "counters/2015-11-17/"
        );
    }
}
