//! Alerts on one machine: each message as one JSON line (the body SNS
//! subscribers get), to stdout and/or appended to a file, so `jq` and log
//! shippers can follow them.
//!
//! The rules stage publishes a message from an alert record's outbox and
//! then clears the outbox; a process killed between the two (or whose
//! clearing write failed) publishes the same message again when the outbox
//! is delivered anew. The file delivers it once: before appending, it
//! looks at its tail for a line that is this message (the same `alert`,
//! `transition` and `sent_at`: the outbox keeps the whole message, so a
//! redelivery repeats all three, while `sent_at` tells it from a message of
//! a database started afresh, whose transitions count from 1 again). One
//! process holds the database and the stage clears each outbox before it
//! publishes the next, so a repeat can only be of the file's last message;
//! the tail read ([`TAIL_BYTES`]) also covers lines other processes
//! appended to the same file since. Stdout cannot be read back: after such
//! a crash it may carry a message twice, with the same `alert` and
//! `transition`, which is how a reader drops the repeat.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tally_core::ports::{Notifier, StoreError};
use tally_core::rules::alert::Notification;

/// Where alert lines go.
#[derive(Clone, Default)]
pub struct JsonLinesNotifier {
    stdout: bool,
    file: Option<(String, Arc<Mutex<File>>)>,
    /// Every message sent, kept for callers that show them (the demo).
    sent: Option<Arc<Mutex<Vec<Notification>>>>,
}

impl JsonLinesNotifier {
    /// Lines to stdout.
    pub fn stdout() -> JsonLinesNotifier {
        JsonLinesNotifier {
            stdout: true,
            ..JsonLinesNotifier::default()
        }
    }

    /// Nothing printed; messages only kept (see [`Self::keeping`]).
    pub fn silent() -> JsonLinesNotifier {
        JsonLinesNotifier::default()
    }

    /// Also appends each line to `path` (created if missing), unless the
    /// file already ends with that message (see the module doc).
    pub fn appending_to(mut self, path: &Path) -> Result<JsonLinesNotifier, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| StoreError::new(format!("opening {} for alerts", path.display()), e))?;
        self.file = Some((path.display().to_string(), Arc::new(Mutex::new(file))));
        Ok(self)
    }

    /// Also keeps every message sent, for [`Self::take_sent`].
    pub fn keeping(mut self) -> JsonLinesNotifier {
        self.sent = Some(Arc::default());
        self
    }

    /// The messages sent since the last call.
    pub fn take_sent(&self) -> Vec<Notification> {
        self.sent
            .as_ref()
            .and_then(|sent| sent.lock().ok().map(|mut sent| std::mem::take(&mut *sent)))
            .unwrap_or_default()
    }
}

impl Notifier for JsonLinesNotifier {
    async fn publish(&self, notification: &Notification) -> Result<(), StoreError> {
        let mut line = serde_json::to_string(notification)
            .map_err(|e| StoreError::new(format!("encoding alert {}", notification.alert), e))?;
        line.push('\n');
        if self.stdout {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| StoreError::new("writing an alert to stdout", e))?;
        }
        if let Some((path, file)) = &self.file {
            let mut file = file.lock().map_err(|_| {
                StoreError::new(format!("writing an alert to {path}"), "a writer panicked")
            })?;
            append_once(&mut file, &line)
                .map_err(|e| StoreError::new(format!("writing an alert to {path}"), e))?;
        }
        if let Some(sent) = &self.sent
            && let Ok(mut sent) = sent.lock()
        {
            sent.push(notification.clone());
        }
        Ok(())
    }
}

/// How much of the alerts file's end is read for a repeat: hundreds of
/// messages, for one that can only be among the last few.
pub const TAIL_BYTES: u64 = 256 * 1024;

/// Appends `line` (one message's JSON and a newline) unless the file's tail
/// already holds that message.
fn append_once(file: &mut File, line: &str) -> std::io::Result<()> {
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    Read::take(&mut *file, TAIL_BYTES).read_to_end(&mut tail)?;
    let message = identity(line.trim_end().as_bytes());
    if message.is_some()
        && tail
            .split(|&byte| byte == b'\n')
            .any(|earlier| identity(earlier) == message)
    {
        return Ok(());
    }
    // A process killed in the middle of a write leaves a line without its
    // end: start on a fresh line so every complete line stays one message.
    let mut text = String::with_capacity(line.len() + 1);
    if tail.last().is_some_and(|&byte| byte != b'\n') {
        text.push('\n');
    }
    text.push_str(line);
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// What makes a line one message: its `alert`, `transition` and `sent_at`.
fn identity(line: &[u8]) -> Option<[serde_json::Value; 3]> {
    let mut message: serde_json::Value = serde_json::from_slice(line).ok()?;
    let mut field = |name: &str| message.get_mut(name).map(serde_json::Value::take);
    Some([field("alert")?, field("transition")?, field("sent_at")?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(transition: u64) -> Notification {
        serde_json::from_value(serde_json::json!({
            "alert": "2015-11-16/counter1-max",
            "transition": transition,
            "rule": "counter1-max",
            "state": if transition % 2 == 1 { "firing" } else { "resolved" },
            "severity": "critical",
            "date": "2015-11-16",
            "counter": "COUNTER1",
            "counters": {"COUNTER1": 191_122},
            "value": 191_122,
            "summary": "COUNTER1 is over its limit",
            "labels": {},
            "since": "2015-11-16T10:00:00Z",
            "sent_at": format!("2015-11-16T10:0{transition}:00Z"),
        }))
        .unwrap()
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn an_outbox_redelivered_after_a_crash_that_followed_the_append_is_not_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let first = message(1);
        // The process appended the message, then died before clearing the
        // outbox.
        JsonLinesNotifier::silent()
            .appending_to(&path)
            .unwrap()
            .publish(&first)
            .await
            .unwrap();

        // The restarted process delivers the outbox again.
        let restarted = JsonLinesNotifier::silent().appending_to(&path).unwrap();
        restarted.publish(&first).await.unwrap();
        assert_eq!(lines(&path).len(), 1, "{:#?}", lines(&path));

        // The next transition is a new message.
        restarted.publish(&message(2)).await.unwrap();
        let sent: Vec<_> = lines(&path)
            .iter()
            .map(|line| line["transition"].as_u64().unwrap())
            .collect();
        assert_eq!(sent, [1, 2]);
    }

    #[tokio::test]
    async fn a_database_started_afresh_appends_its_first_transition_after_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let notifier = JsonLinesNotifier::silent().appending_to(&path).unwrap();
        notifier.publish(&message(1)).await.unwrap();
        // A process killed in the middle of its next line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"alert":"2015-11-16/coun"#)
            .unwrap();

        // Transition 1 of the same alert again, decided at another time by
        // a new database: another message.
        let mut afresh = message(1);
        afresh.sent_at = message(2).sent_at;
        notifier.publish(&afresh).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let last: Notification = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last, afresh);
    }
}
