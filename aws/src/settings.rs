//! Reading a stage's environment: one reader for the three stages, so a
//! variable that is missing or malformed is reported the same way by each
//! Lambda and by the tools that run the stages (`tally invoke`, `tally dev`,
//! `tally backfill`, `tally reconcile`).
//!
//! Each stage's `settings` module lists the variables it reads in
//! `VARIABLES` and reads them through an [`Environment`]; its tests hold
//! [`variables_read`] equal to that list, and the deployment's tests hold
//! the template and `docs/design.md` (§4–§6) equal to it, so a variable
//! read is a variable deployed and documented.
//!
//! A variable set to the empty string counts as unset: CloudFormation passes
//! an empty parameter as `""`, and a stage should then fall back to its
//! default rather than fail on it.

use std::time::Duration;

/// A setting that is missing or does not parse; says which and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} is not set: it must name {what}")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("{name}={value:?} is not valid: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The variables of one process, read through a lookup: the process
/// environment in a Lambda, a map in tests and in the tools that take
/// settings from flags.
pub struct Environment<F> {
    lookup: F,
}

impl Environment<fn(&str) -> Option<String>> {
    /// The process environment.
    pub fn process() -> Self {
        Environment {
            lookup: |name| std::env::var(name).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Environment<F> {
    /// The variables `lookup` answers for.
    pub fn new(lookup: F) -> Self {
        Environment { lookup }
    }

    /// The value exactly as set, empty included, for the rare setting whose
    /// empty value is itself a mistake worth naming.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The value, when set to something.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|value| !value.is_empty())
    }

    /// The value; its absence names the variable and `what` it must name.
    pub fn required(
        &self,
        name: &'static str,
        what: &'static str,
    ) -> Result<String, SettingsError> {
        self.optional(name)
            .ok_or(SettingsError::Missing { name, what })
    }

    /// A whole number above 0, or `default` when unset; `expected` says what
    /// the number counts, for the error.
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        expected: &'static str,
    ) -> Result<u64, SettingsError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => match value.parse::<u64>() {
                Ok(number) if number > 0 => Ok(number),
                _ => Err(SettingsError::Invalid {
                    name,
                    value,
                    expected,
                }),
            },
        }
    }

    /// A whole number of seconds above 0, or `default` when unset.
    pub fn seconds(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, SettingsError> {
        self.number(name, default.as_secs(), "a whole number of seconds above 0")
            .map(Duration::from_secs)
    }
}

/// The `TALLY_*` variables a stage's settings module reads: the names quoted
/// in its code, outside its own `VARIABLES` list and its tests. Each stage
/// tests that this equals its `VARIABLES`, which the deployment template is
/// checked against, so a variable read is a variable deployed.
pub fn variables_read(settings_source: &str) -> std::collections::BTreeSet<&str> {
    let code = settings_source
        .find("#[cfg(test)]")
        .map_or(settings_source, |end| &settings_source[..end]);
    let (before, after) = match code.find("pub const VARIABLES") {
        Some(start) => {
            let end = code[start..].find("];").map_or(code.len(), |e| start + e);
            (&code[..start], &code[end..])
        }
        None => (code, ""),
    };
    [before, after]
        .into_iter()
        .flat_map(|part| part.split('"'))
        .filter(|s| {
            s.len() > 6
                && s.starts_with("TALLY_")
                && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(
        pairs: &'static [(&'static str, &'static str)],
    ) -> Environment<impl Fn(&str) -> Option<String>> {
        Environment::new(move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn an_empty_value_is_unset_except_when_read_raw() {
        let env = environment(&[("TALLY_A", "")]);
        assert_eq!(env.optional("TALLY_A"), None);
        assert_eq!(env.raw("TALLY_A"), Some(String::new()));
        assert_eq!(env.number("TALLY_A", 7, "a count").unwrap(), 7);
        assert_eq!(
            env.required("TALLY_A", "the table")
                .unwrap_err()
                .to_string(),
            "TALLY_A is not set: it must name the table"
        );
    }

    #[test]
    fn numbers_and_durations_are_whole_and_above_zero() {
        let env = environment(&[("TALLY_N", "0"), ("TALLY_S", "90"), ("TALLY_X", "1.5")]);
        assert_eq!(
            env.number("TALLY_N", 1, "a whole number above 0")
                .unwrap_err()
                .to_string(),
            "TALLY_N=\"0\" is not valid: expected a whole number above 0"
        );
        assert_eq!(
            env.seconds("TALLY_S", Duration::from_secs(60)).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            env.seconds("TALLY_X", Duration::from_secs(60))
                .unwrap_err()
                .to_string(),
            "TALLY_X=\"1.5\" is not valid: expected a whole number of seconds above 0"
        );
        assert_eq!(
            env.seconds("TALLY_UNSET", Duration::from_secs(60)).unwrap(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_variables_read_are_the_quoted_names_outside_the_list_and_the_tests() {
        let source = r#"
            pub const VARIABLES: &[&str] = &["TALLY_LISTED_ONLY"];
            fn read() { env.required("TALLY_READ", "x"); env.optional("NOT_TALLY"); }
            #[cfg(test)]
            mod tests { const T: &str = "TALLY_IN_TESTS"; }
        "#;
        assert_eq!(
            variables_read(source).into_iter().collect::<Vec<_>>(),
            vec!["TALLY_READ"]
        );
    }
}
