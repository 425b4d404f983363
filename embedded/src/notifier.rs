//! Alerts on one machine: each message as one JSON line (the body SNS
//! subscribers get), to stdout and/or appended to a file, so `jq` and log
//! shippers can follow them.

use std::fs::{File, OpenOptions};
use std::io::Write;
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

    /// Also appends each line to `path` (created if missing).
    pub fn appending_to(mut self, path: &Path) -> Result<JsonLinesNotifier, StoreError> {
        let file = OpenOptions::new()
            .create(true)
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
            file.write_all(line.as_bytes())
                .and_then(|()| file.flush())
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
