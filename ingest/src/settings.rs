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

use tally_aws::settings::Environment;
pub use tally_aws::settings::SettingsError;

use crate::apply::IngestConfig;

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
        Settings::from_environment(&Environment::process())
    }

    /// Reads the settings through `lookup`, for tests and other sources.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        Settings::from_environment(&Environment::new(lookup))
    }

    fn from_environment(
        env: &Environment<impl Fn(&str) -> Option<String>>,
    ) -> Result<Settings, SettingsError> {
        let defaults = IngestConfig::default();
        // Read raw: an empty prefix would make every key in the bucket an
        // upload, so it is refused rather than taken as unset.
        let prefix = env.raw("TALLY_COUNTERS_PREFIX").unwrap_or(defaults.prefix);
        let prefix = prefix.trim_end_matches('/').to_owned();
        if prefix.is_empty() {
            return Err(SettingsError::Invalid {
                name: "TALLY_COUNTERS_PREFIX",
                value: String::new(),
                expected: "a key prefix such as counters",
            });
        }
        let whole = "a whole number above 0";
        Ok(Settings {
            state_table: env.required("TALLY_STATE_TABLE", "the state table")?,
            ingest: IngestConfig {
                prefix,
                max_body_bytes: env.number(
                    "TALLY_MAX_BODY_BYTES",
                    defaults.max_body_bytes,
                    whole,
                )?,
                bucket: env.optional("TALLY_BUCKET"),
                concurrency: env.number(
                    "TALLY_INGEST_CONCURRENCY",
                    defaults.concurrency as u64,
                    whole,
                )? as usize,
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
            tally_aws::settings::variables_read(include_str!("settings.rs")),
            listed
        );
    }
}
