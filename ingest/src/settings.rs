//! Ingest's configuration, read from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TALLY_STATE_TABLE` | required | the state table's name |
//! | `TALLY_COUNTERS_PREFIX` | `counters` | the uploads' key prefix |
//! | `TALLY_MAX_BODY_BYTES` | `1048576` | bodies over this are rejected unread |
//! | `TALLY_BUCKET` | any | when set, events for other buckets are ignored |
//! | `TALLY_INGEST_CONCURRENCY` | `16` | records processed at once per invocation |
//!
//! AWS settings (region, credentials, `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`)
//! are the SDK's own.

use crate::apply::IngestConfig;

/// A setting that is missing or does not parse; says which and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} is not set: it must name the state table")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is not valid: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The variables ingest reads, for the deployment's check of its template
/// (and `tally dev up`, which prints the ones it sets).
pub const VARIABLES: &[&str] = &[
    "TALLY_STATE_TABLE",
    "TALLY_COUNTERS_PREFIX",
    "TALLY_MAX_BODY_BYTES",
    "TALLY_BUCKET",
    "TALLY_INGEST_CONCURRENCY",
];

/// Ingest's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub state_table: String,
    pub ingest: IngestConfig,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, for tests and other sources.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let defaults = IngestConfig::default();
        let state_table = lookup("TALLY_STATE_TABLE")
            .filter(|v| !v.is_empty())
            .ok_or(SettingsError::Missing {
                name: "TALLY_STATE_TABLE",
            })?;
        let number = |name: &'static str, default: u64| -> Result<u64, SettingsError> {
            match lookup(name) {
                None => Ok(default),
                Some(value) => match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(SettingsError::Invalid {
                        name,
                        value,
                        expected: "a whole number above 0",
                    }),
                },
            }
        };
        let prefix = lookup("TALLY_COUNTERS_PREFIX").unwrap_or(defaults.prefix);
        let prefix = prefix.trim_end_matches('/').to_owned();
        if prefix.is_empty() {
            return Err(SettingsError::Invalid {
                name: "TALLY_COUNTERS_PREFIX",
                value: String::new(),
                expected: "a key prefix such as counters",
            });
        }
        Ok(Settings {
            state_table,
            ingest: IngestConfig {
                prefix,
                max_body_bytes: number("TALLY_MAX_BODY_BYTES", defaults.max_body_bytes)?,
                bucket: lookup("TALLY_BUCKET").filter(|v| !v.is_empty()),
                concurrency: number("TALLY_INGEST_CONCURRENCY", defaults.concurrency as u64)?
                    as usize,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings(&[("TALLY_STATE_TABLE", "state")]).unwrap();
        assert_eq!(s.state_table, "state");
        assert_eq!(s.ingest, IngestConfig::default());
        assert_eq!(s.ingest.prefix, "counters");
        assert_eq!(s.ingest.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn errors_name_the_variable_and_what_it_expects() {
        assert_eq!(
            settings(&[]).unwrap_err().to_string(),
            "TALLY_STATE_TABLE is not set: it must name the state table"
        );
        assert_eq!(
            settings(&[("TALLY_STATE_TABLE", "s"), ("TALLY_MAX_BODY_BYTES", "1MB")])
                .unwrap_err()
                .to_string(),
            "TALLY_MAX_BODY_BYTES=\"1MB\" is not valid: expected a whole number above 0"
        );
        let s = settings(&[
            ("TALLY_STATE_TABLE", "s"),
            ("TALLY_COUNTERS_PREFIX", "a/b/"),
        ])
        .unwrap();
        assert_eq!(s.ingest.prefix, "a/b");
    }

    #[test]
    fn every_variable_read_is_listed() {
        let listed: std::collections::BTreeSet<&str> = VARIABLES.iter().copied().collect();
        assert_eq!(
            tally_aws::config::variables_read(include_str!("settings.rs")),
            listed
        );
    }
}
