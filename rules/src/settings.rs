//! The rules stage's configuration, read from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TALLY_PARTIALS_TABLE` | required | the aggregate stage's partial items (the day's exact totals) |
//! | `TALLY_TOTALS_TABLE` | required | the totals table |
//! | `TALLY_ALERTS_TABLE` | required | the alert-state table |
//! | `TALLY_ALERT_TOPIC_ARN` | required | the SNS topic on-call subscribe to |
//! | `TALLY_SNAPSHOT_BUCKET` | required | where the downstream job's snapshot goes |
//! | `TALLY_SNAPSHOT_PREFIX` | `totals` | its key prefix |
//! | `TALLY_BUCKET` | `TALLY_SNAPSHOT_BUCKET` | the bucket the fleet uploads to, which a tick lists |
//! | `TALLY_COUNTERS_PREFIX` | `counters` | the uploads' key prefix there |
//! | `TALLY_STATE_TABLE` | unset | the state table, whose tombstones a tick reads for stale rules; unset, stale rules are reported as rule errors |
//! | `TALLY_RULES_BUCKET` | unset | when set, rules come from `*.yaml` under `TALLY_RULES_PREFIX` there |
//! | `TALLY_RULES_PREFIX` | `rules/` | |
//! | `TALLY_RULES_REFRESH_SECONDS` | `60` | how often that prefix is listed |
//! | `TALLY_ALERT_DAYS` | `2` | dates alerted on: today and yesterday (UTC); older dates get snapshots only |
//!
//! AWS settings (region, credentials, `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`)
//! are the SDK's own.

use std::time::Duration;

use tally_aws::settings::Environment;
pub use tally_aws::settings::SettingsError;

/// The rules stage's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub partials_table: String,
    pub totals_table: String,
    pub alerts_table: String,
    pub alert_topic_arn: String,
    pub snapshot_bucket: String,
    pub snapshot_prefix: String,
    /// The bucket the fleet uploads to, listed by a tick.
    pub uploads_bucket: String,
    /// The uploads' key prefix, without a trailing slash.
    pub counters_prefix: String,
    /// The state table, whose tombstones tell a tick which instances'
    /// objects were deleted; without it stale rules are not judged.
    pub state_table: Option<String>,
    /// Bucket and prefix of the rules files, when not bundled.
    pub rules_location: Option<(String, String)>,
    pub rules_refresh: Duration,
    pub alert_days: u32,
}

/// The variables the rules stage reads, for the deployment's check.
pub const VARIABLES: &[&str] = &[
    "TALLY_PARTIALS_TABLE",
    "TALLY_TOTALS_TABLE",
    "TALLY_ALERTS_TABLE",
    "TALLY_ALERT_TOPIC_ARN",
    "TALLY_SNAPSHOT_BUCKET",
    "TALLY_SNAPSHOT_PREFIX",
    "TALLY_BUCKET",
    "TALLY_COUNTERS_PREFIX",
    "TALLY_STATE_TABLE",
    "TALLY_RULES_BUCKET",
    "TALLY_RULES_PREFIX",
    "TALLY_RULES_REFRESH_SECONDS",
    "TALLY_ALERT_DAYS",
];

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
        let alert_days = env.number(
            "TALLY_ALERT_DAYS",
            2,
            "a whole number of days above 0 (2: today and yesterday)",
        )?;
        let mut settings = Settings {
            partials_table: env.required(
                "TALLY_PARTIALS_TABLE",
                "the aggregate stage's partial items table",
            )?,
            totals_table: env.required("TALLY_TOTALS_TABLE", "the totals table")?,
            alerts_table: env.required("TALLY_ALERTS_TABLE", "the alert-state table")?,
            alert_topic_arn: env.required(
                "TALLY_ALERT_TOPIC_ARN",
                "the SNS topic alerts are published to",
            )?,
            snapshot_bucket: env.required(
                "TALLY_SNAPSHOT_BUCKET",
                "the bucket the downstream job's snapshot is written to",
            )?,
            snapshot_prefix: env.optional("TALLY_SNAPSHOT_PREFIX").map_or_else(
                || "totals".to_owned(),
                |prefix| prefix.trim_end_matches('/').to_owned(),
            ),
            // The snapshot's bucket unless told: the template puts both in one.
            uploads_bucket: String::new(),
            counters_prefix: env.optional("TALLY_COUNTERS_PREFIX").map_or_else(
                || "counters".to_owned(),
                |prefix| prefix.trim_end_matches('/').to_owned(),
            ),
            state_table: env.optional("TALLY_STATE_TABLE"),
            rules_location: env.optional("TALLY_RULES_BUCKET").map(|bucket| {
                let prefix = env
                    .optional("TALLY_RULES_PREFIX")
                    .unwrap_or_else(|| "rules/".to_owned());
                (bucket, prefix)
            }),
            rules_refresh: env.seconds("TALLY_RULES_REFRESH_SECONDS", Duration::from_secs(60))?,
            alert_days: u32::try_from(alert_days).map_err(|_| SettingsError::Invalid {
                name: "TALLY_ALERT_DAYS",
                value: alert_days.to_string(),
                expected: "a whole number of days above 0 (2: today and yesterday)",
            })?,
        };
        settings.uploads_bucket = env
            .optional("TALLY_BUCKET")
            .unwrap_or_else(|| settings.snapshot_bucket.clone());
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const REQUIRED: &[(&str, &str)] = &[
        ("TALLY_PARTIALS_TABLE", "p"),
        ("TALLY_TOTALS_TABLE", "t"),
        ("TALLY_ALERTS_TABLE", "a"),
        ("TALLY_ALERT_TOPIC_ARN", "arn:aws:sns:eu-west-1:1:alerts"),
        ("TALLY_SNAPSHOT_BUCKET", "b"),
    ];

    #[test]
    fn defaults_apply_and_rules_are_bundled_unless_a_bucket_is_named() {
        let settings = Settings::from_lookup(lookup(REQUIRED)).unwrap();
        assert_eq!(settings.snapshot_prefix, "totals");
        // A tick lists the uploads where the snapshot goes, unless told.
        assert_eq!(settings.uploads_bucket, "b");
        assert_eq!(settings.counters_prefix, "counters");
        assert_eq!(settings.rules_location, None);
        assert_eq!(settings.rules_refresh, Duration::from_secs(60));
        let mut with_bucket = REQUIRED.to_vec();
        with_bucket.push(("TALLY_RULES_BUCKET", "ops"));
        let settings = Settings::from_lookup(lookup(&with_bucket)).unwrap();
        assert_eq!(
            settings.rules_location,
            Some(("ops".into(), "rules/".into()))
        );
    }

    #[test]
    fn a_missing_or_bad_setting_is_named() {
        let error = Settings::from_lookup(lookup(&REQUIRED[1..])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "TALLY_PARTIALS_TABLE is not set: it must name the aggregate stage's partial items table"
        );
        let mut bad = REQUIRED.to_vec();
        bad.push(("TALLY_RULES_REFRESH_SECONDS", "soon"));
        assert!(
            Settings::from_lookup(lookup(&bad))
                .unwrap_err()
                .to_string()
                .contains("soon")
        );
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
