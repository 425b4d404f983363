//! The aggregate stage's configuration, read from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TALLY_PARTIALS_TABLE` | required | the partial items (exact sums per bucket of a day) |
//! | `TALLY_TOTALS_TABLE` | required | the totals table, one item per (counter, date) |
//! | `TALLY_STATE_TABLE` | unset | the state table, read by the scheduled reconcile only (without it the function refuses a reconcile request) |
//!
//! AWS settings (region, credentials, `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`)
//! are the SDK's own. One reader for the Lambda, `tally invoke aggregate`
//! and `tally dev pump`, so all three run the stage on the same tables.

use tally_aws::settings::Environment;
pub use tally_aws::settings::SettingsError;

/// The variables the aggregate stage reads, for the deployment's check of
/// its template (and `tally dev up`, which prints them).
pub const VARIABLES: &[&str] = &[
    "TALLY_PARTIALS_TABLE",
    "TALLY_TOTALS_TABLE",
    "TALLY_STATE_TABLE",
];

/// The aggregate stage's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub partials_table: String,
    pub totals_table: String,
    /// The stream path never reads the state table; only the scheduled
    /// reconcile does, so the tools that run the stage need not name it.
    pub state_table: Option<String>,
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
        Ok(Settings {
            partials_table: env.required("TALLY_PARTIALS_TABLE", "the partial items table")?,
            totals_table: env.required("TALLY_TOTALS_TABLE", "the totals table")?,
            state_table: env.optional("TALLY_STATE_TABLE"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn both_tables_are_read() {
        assert_eq!(
            settings(&[("TALLY_PARTIALS_TABLE", "p"), ("TALLY_TOTALS_TABLE", "t")]).unwrap(),
            Settings {
                partials_table: "p".into(),
                totals_table: "t".into(),
                state_table: None,
            }
        );
        assert_eq!(
            settings(&[
                ("TALLY_PARTIALS_TABLE", "p"),
                ("TALLY_TOTALS_TABLE", "t"),
                ("TALLY_STATE_TABLE", "s")
            ])
            .unwrap()
            .state_table
            .as_deref(),
            Some("s")
        );
    }

    #[test]
    fn a_missing_or_empty_table_is_named_with_what_it_is_for() {
        assert_eq!(
            settings(&[("TALLY_TOTALS_TABLE", "t")])
                .unwrap_err()
                .to_string(),
            "TALLY_PARTIALS_TABLE is not set: it must name the partial items table"
        );
        assert_eq!(
            settings(&[("TALLY_PARTIALS_TABLE", "p"), ("TALLY_TOTALS_TABLE", "")])
                .unwrap_err()
                .to_string(),
            "TALLY_TOTALS_TABLE is not set: it must name the totals table"
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
