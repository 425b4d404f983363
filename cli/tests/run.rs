//! `tally run` end to end, as a person runs it: the binary on a directory,
//! files written, overwritten and deleted underneath it, restarts, Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn today() -> String {
    chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

struct Bucket {
    _dir: tempfile::TempDir,
    root: PathBuf,
    date: String,
}

impl Bucket {
    fn new() -> Bucket {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        let date = today();
        std::fs::create_dir_all(root.join("counters").join(&date)).unwrap();
        Bucket {
            _dir: dir,
            root,
            date,
        }
    }

    fn upload(&self, instance: &str, body: &str) {
        let path = self.root.join("counters").join(&self.date).join(instance);
        // Written beside and renamed, as upload tools do, so the runtime
        // never sees half a file.
        let partial = path.with_file_name(format!(".{instance}.partial"));
        std::fs::write(&partial, body).unwrap();
        std::fs::rename(&partial, &path).unwrap();
    }

    fn delete(&self, instance: &str) {
        std::fs::remove_file(self.root.join("counters").join(&self.date).join(instance)).unwrap();
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.parent().unwrap().join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn snapshot(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("totals").join(&self.date)).ok()
    }

    /// What a batch job computes from the directory; `last_accepted` stands
    /// in for instances whose current file is rejected.
    fn batch(&self, last_accepted: &[(&str, &str)]) -> String {
        let mut totals: BTreeMap<String, i128> = BTreeMap::new();
        let dir = self.root.join("counters").join(&self.date);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            let body = match tally_core::body::parse(&bytes, 1 << 20) {
                Ok(_) => bytes,
                Err(_) => last_accepted
                    .iter()
                    .find(|(instance, _)| *instance == name)
                    .map(|(_, body)| body.as_bytes().to_vec())
                    .unwrap(),
            };
            for counter in tally_core::body::parse(&body, 1 << 20).unwrap() {
                *totals.entry(counter.name.to_owned()).or_default() += i128::from(counter.value);
            }
        }
        totals.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        command
            .arg("run")
            .arg("--bucket")
            .arg(&self.root)
            .arg("--alerts")
            .arg(self.root.parent().unwrap().join("alerts.jsonl"));
        command
    }

    fn once(&self) -> String {
        let output = self.command().arg("--once").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    }

    /// `tally run` watching with `rules` (YAML of one rules file) and a
    /// one-second tick.
    fn watch_ticking(&self, rules: &str) -> Child {
        let folder = self.root.parent().unwrap().join("rules");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("rules.yaml"), rules).unwrap();
        self.command()
            .arg("--rules")
            .arg(&folder)
            .args(["--tick", "1s", "--interval-ms", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn watch(&self) -> Child {
        self.command()
            .args(["--interval-ms", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn tally_run_follows_the_directory_across_restarts_without_repeating_alerts() {
    let bucket = Bucket::new();
    let uploads = [
        ("i-1", "COUNTER1 12345\nbids-won 1\n"),
        ("i-2", "COUNTER1 123456\n"),
        ("i-3", "COUNTER1 1000 заказы 7\n"),
        ("i-4", "COUNTER1 54321\n"),
    ];
    for (instance, body) in uploads {
        bucket.upload(instance, body);
    }
    bucket.once();
    assert_eq!(
        bucket.snapshot().as_deref(),
        Some(bucket.batch(&[]).as_str())
    );
    assert!(bucket.snapshot().unwrap().starts_with("COUNTER1 191122\n"));
    let alerts = bucket.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["rule"], "counter1-max");
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["value"], 191_122);

    // A restart with nothing new: no duplicate alert.
    bucket.once();
    assert_eq!(bucket.alerts().len(), 1);

    // Watching: an overwrite resolves the alert within a second or so.
    let mut child = bucket.watch();
    bucket.upload("i-2", "COUNTER1 100\n");
    eventually("the resolution", || bucket.alerts().len() == 2);
    assert_eq!(bucket.alerts()[1]["state"], "resolved");
    // A delete, and a body that is rejected (i-3 keeps its last upload).
    bucket.delete("i-4");
    bucket.upload("i-3", "COUNTER1 12x\n");
    let expected = bucket.batch(&[("i-3", "COUNTER1 1000 заказы 7\n")]);
    eventually("the snapshot to follow", || {
        bucket.snapshot().as_deref() == Some(expected.as_str())
    });
    assert!(expected.starts_with("COUNTER1 13445\n"), "{expected}");

    // Ctrl-C stops it cleanly.
    interrupt(&mut child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("rejected counters/"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");

    // Changes made while it was stopped are caught up on restart, and what
    // was already sent is not sent again.
    bucket.upload("i-1", "COUNTER1 200000\nbids-won 1\n");
    bucket.delete("i-3");
    bucket.once();
    assert_eq!(
        bucket.snapshot().as_deref(),
        Some(bucket.batch(&[]).as_str())
    );
    let alerts = bucket.alerts();
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    assert_eq!(
        (alerts[2]["state"].as_str(), alerts[2]["value"].as_i64()),
        (Some("firing"), Some(200_100))
    );
    assert!(
        Path::new(
            &bucket
                .root
                .join("totals")
                .join(format!("{}.json", bucket.date))
        )
        .is_file()
    );
}

#[test]
fn tally_run_explains_a_missing_directory() {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["run", "--once", "--bucket", "/nonexistent/tally-bucket"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/tally-bucket is not a directory"),
        "{stderr}"
    );
}

#[test]
fn a_second_tally_run_on_a_database_in_use_exits_1_at_once_naming_the_lock() {
    let bucket = Bucket::new();
    bucket.upload("i-1", "COUNTER1 1\n");
    let mut first = bucket.watch();
    eventually("the first process to take the database", || {
        bucket.snapshot().is_some()
    });

    let started = Instant::now();
    let second = bucket.command().arg("--once").output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(1), "took {took:?}: {stderr}");
    let lock = bucket.root.join(".tally").join("tally.sqlite.lock");
    assert!(
        stderr.contains(&lock.display().to_string()),
        "the message names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("process {}", first.id())),
        "the message names the holder: {stderr}"
    );

    interrupt(&mut first);
    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Once the holder has stopped, the database is free again.
    bucket.once();
}

#[test]
fn ten_rounds_of_the_same_fleet_leave_the_database_no_larger_than_two() {
    let bucket = Bucket::new();
    let database = bucket.root.join(".tally").join("tally.sqlite");
    let mut sizes = Vec::new();
    for round in 1..=10u64 {
        // 50 instances × 20 counters, every body different from the last.
        for instance in 0..50u64 {
            let body: String = (0..20u64)
                .map(|counter| {
                    format!(
                        "c{counter} {}\n",
                        round * 1_000_000 + instance * 100 + counter
                    )
                })
                .collect();
            bucket.upload(&format!("i-{instance}"), &body);
        }
        bucket.once();
        sizes.push(std::fs::metadata(&database).unwrap().len());
    }
    let (after_two, after_ten) = (sizes[1], sizes[9]);
    eprintln!("database size after each round: {sizes:?}");
    assert!(
        after_ten * 2 <= after_two * 3,
        "the database grew from {after_two} bytes after two rounds to {after_ten} after ten: {sizes:?}"
    );
}

#[test]
fn tally_run_decides_again_on_its_tick_while_nothing_changes() {
    let bucket = Bucket::new();
    bucket.upload("i-1", "COUNTER1 100\n");
    let mut child = bucket.watch_ticking(
        "rules:\n  - name: steady-high\n    counter: COUNTER1\n    max: 10\n    repeat: 2s\n",
    );
    // The total never changes after the first upload: only the clock can
    // send the reminders.
    eventually("two reminders", || {
        bucket
            .alerts()
            .iter()
            .filter(|alert| alert["reminder"] == true)
            .count()
            >= 2
    });
    interrupt(&mut child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("rules decided again every 1s"), "{stderr}");
    let alerts = bucket.alerts();
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["reminder"], false);
    assert!(
        alerts.iter().all(|alert| alert["state"] == "firing"),
        "{alerts:#?}"
    );
    // Reminders two seconds apart at least, never one per tick.
    let sent: Vec<chrono::DateTime<chrono::Utc>> = alerts
        .iter()
        .map(|alert| alert["sent_at"].as_str().unwrap().parse().unwrap())
        .collect();
    for pair in sent.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::seconds(2),
            "{sent:?}"
        );
    }
}

#[test]
fn tally_run_names_an_instance_that_stops_uploading_and_resolves_when_it_writes_again() {
    let bucket = Bucket::new();
    let body = "COUNTER1 5\n";
    for instance in ["i-1", "i-2", "i-3"] {
        bucket.upload(instance, body);
    }
    let silent_since =
        std::fs::metadata(bucket.root.join("counters").join(&bucket.date).join("i-3"))
            .unwrap()
            .modified()
            .unwrap();
    let mut child = bucket.watch_ticking(
        "rules:\n  - name: instances-silent\n    stale: {after: 3s}\n    severity: critical\n",
    );
    // i-1 and i-2 rewrite the same bytes every half second: nothing
    // changes in the tables, only the objects' write times move.
    let rewrite_until = |done: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            bucket.upload("i-1", body);
            bucket.upload("i-2", body);
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    rewrite_until(&mut || !bucket.alerts().is_empty());
    let fired = bucket.alerts()[0].clone();
    assert_eq!(fired["state"], "firing", "{fired:#}");
    assert_eq!(fired["stale"]["stale"], 1, "{fired:#}");
    assert_eq!(fired["stale"]["fleet"], 3, "{fired:#}");
    assert_eq!(
        fired["stale"]["instances"][0]["instance"], "i-3",
        "{fired:#}"
    );
    let sent = |alert: &serde_json::Value| -> std::time::SystemTime {
        let at: chrono::DateTime<chrono::Utc> = alert["sent_at"].as_str().unwrap().parse().unwrap();
        at.into()
    };
    let to_fire = sent(&fired).duration_since(silent_since).unwrap();
    assert!(
        to_fire <= Duration::from_secs(6),
        "fired {to_fire:?} after i-3's last write"
    );

    bucket.upload("i-3", body);
    let wrote_again = std::time::SystemTime::now();
    rewrite_until(&mut || bucket.alerts().len() >= 2);
    let alerts = bucket.alerts();
    assert_eq!(alerts.len(), 2, "one message each way: {alerts:#?}");
    assert_eq!(alerts[1]["state"], "resolved");
    assert_eq!(alerts[1]["reason"], "the stale instances wrote again");
    let to_resolve = sent(&alerts[1])
        .duration_since(wrote_again)
        .unwrap_or_default();
    assert!(
        to_resolve <= Duration::from_secs(3),
        "resolved {to_resolve:?} after i-3 wrote"
    );
    eprintln!(
        "fired {to_fire:?} after the last write; resolved {to_resolve:?} after writing again"
    );
    interrupt(&mut child);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
