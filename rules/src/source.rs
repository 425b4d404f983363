//! Which rules apply: the ones bundled at build time, or the `*.yaml` files
//! under a bucket prefix, so ops can change rules without a code deploy.
//!
//! The prefix is listed at most once per refresh interval; files are read
//! again only when an ETag changed. A set that does not validate is never
//! used: every problem is logged (with file, line and column) on each
//! refresh until it is fixed, and the last good set (the bundled one, at
//! first) stays in force, so a typo silences nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_core::ports::{ObjectBody, ObjectLocation, ObjectStore, ObjectWriter, StoreError};
use tally_core::rules::RuleSet;
use tally_core::rules::load::MAX_FILE_BYTES;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

/// Where rules come from.
pub struct RuleSource<S> {
    bucket: Option<(S, String, String)>,
    refresh: Duration,
    state: Mutex<Cached>,
}

struct Cached {
    rules: Arc<RuleSet>,
    /// Key → ETag of the files the rules were loaded from.
    etags: BTreeMap<String, String>,
    checked_at: Option<Instant>,
}

/// Why the files under a prefix could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("s3://{bucket}/{key} is over {MAX_FILE_BYTES} bytes; rules files are small")]
    TooLarge { bucket: String, key: String },
    #[error(
        "no rules files (*.yaml) under s3://{bucket}/{prefix}; still using the previous rules (to silence every alert, upload a file with `rules: []`)"
    )]
    Empty { bucket: String, prefix: String },
    #[error("s3://{bucket}/{key} is not UTF-8 text")]
    NotText { bucket: String, key: String },
    #[error(
        "the rules under s3://{bucket}/{prefix} do not validate; still using the previous rules:\n{problems}"
    )]
    Invalid {
        bucket: String,
        prefix: String,
        problems: tally_core::rules::Problems,
    },
}

impl<S: ObjectStore + ObjectWriter> RuleSource<S> {
    /// The bundled rules only.
    pub fn bundled(rules: RuleSet) -> RuleSource<S> {
        RuleSource {
            bucket: None,
            refresh: Duration::MAX,
            state: Mutex::new(Cached {
                rules: Arc::new(rules),
                etags: BTreeMap::new(),
                checked_at: None,
            }),
        }
    }

    /// The rules under `s3://bucket/prefix`, checked every `refresh`;
    /// `fallback` applies until they first load.
    pub fn from_bucket(
        store: S,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        refresh: Duration,
        fallback: RuleSet,
    ) -> RuleSource<S> {
        RuleSource {
            bucket: Some((store, bucket.into(), prefix.into())),
            refresh,
            state: Mutex::new(Cached {
                rules: Arc::new(fallback),
                etags: BTreeMap::new(),
                checked_at: None,
            }),
        }
    }

    /// The rules to evaluate now.
    pub async fn current(&self) -> Arc<RuleSet> {
        let mut cached = self.state.lock().await;
        let Some((store, bucket, prefix)) = &self.bucket else {
            return cached.rules.clone();
        };
        if cached
            .checked_at
            .is_some_and(|at| at.elapsed() < self.refresh)
        {
            return cached.rules.clone();
        }
        cached.checked_at = Some(Instant::now());
        match reload(store, bucket, prefix, &cached.etags).await {
            Ok(None) => {}
            Ok(Some((rules, etags))) => {
                info!(bucket = %bucket, prefix = %prefix, files = etags.len(), rules = rules.rules().len(), "rules loaded");
                if rules.is_empty() {
                    warn!(bucket = %bucket, prefix = %prefix, "the rules files define no rules: no alerts will be sent");
                }
                cached.rules = Arc::new(rules);
                cached.etags = etags;
            }
            Err(e) => error!(error = %e, "rules not reloaded"),
        }
        cached.rules.clone()
    }
}

/// The new rule set when any file changed, `None` when none did.
async fn reload<S: ObjectStore + ObjectWriter>(
    store: &S,
    bucket: &str,
    prefix: &str,
    known: &BTreeMap<String, String>,
) -> Result<Option<(RuleSet, BTreeMap<String, String>)>, SourceError> {
    let etags: BTreeMap<String, String> = store
        .list(bucket, prefix)
        .await?
        .into_iter()
        .map(|listed| (listed.key, listed.etag))
        .filter(|(key, _)| {
            // Only files directly under the prefix: ops' tests may sit in a
            // folder beside them.
            key.strip_prefix(prefix).is_some_and(|relative| {
                let relative = relative.trim_start_matches('/');
                !relative.contains('/')
                    && (relative.ends_with(".yaml") || relative.ends_with(".yml"))
            })
        })
        .collect();
    if &etags == known {
        return Ok(None);
    }
    if etags.is_empty() {
        // Deleting every file is far more likely a mistake (a wrong prefix,
        // a sync gone wrong) than a wish for silence.
        return Err(SourceError::Empty {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    let mut files = Vec::with_capacity(etags.len());
    for key in etags.keys() {
        let location = ObjectLocation {
            bucket: bucket.to_owned(),
            key: key.clone(),
            version_id: None,
        };
        // A file deleted between the list and the read is simply gone.
        let Some((_, body)) = store.get(&location, MAX_FILE_BYTES as u64).await? else {
            continue;
        };
        let ObjectBody::Read(bytes) = body else {
            return Err(SourceError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.clone(),
            });
        };
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| SourceError::NotText {
            bucket: bucket.to_owned(),
            key: key.clone(),
        })?;
        files.push((format!("s3://{bucket}/{key}"), text));
    }
    match RuleSet::load(&files) {
        Ok(rules) => Ok(Some((rules, etags))),
        Err(problems) => Err(SourceError::Invalid {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            problems,
        }),
    }
}
