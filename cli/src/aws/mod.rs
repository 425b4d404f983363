//! `tally`'s tools for the AWS path: what an operator runs beside the
//! deployed functions, and what runs the whole AWS pipeline on one laptop.
//!
//! - [`backfill`]: ingest what is already in the bucket (a first deploy);
//! - [`reconcile`]: recompute a day's totals from the state table, repair drift;
//! - [`invoke`]: run one function's handler once on an event file, or its
//!   built binary behind a local Lambda Runtime API ([`bootstrap`]);
//! - [`dev`]: create the pipeline's resources on an AWS-compatible endpoint
//!   (moto's server) and drive the three handlers there as Lambda would.
//!
//! Every command builds its stage exactly as the Lambda does (the stage
//! crates' `settings` and `wiring` modules), from the same environment
//! variables, and reaches AWS through [`tally_aws::config::load`]: region,
//! credentials and `AWS_ENDPOINT_URL` are the SDK's usual configuration.
//! `anyhow` stops here, at the binary's edge; errors carry what was being
//! done and, where the cause is a usual one, what to do about it.

pub mod backfill;
pub mod bootstrap;
pub mod dev;
pub mod invoke;
pub mod reconcile;

use std::io::IsTerminal;

use anyhow::anyhow;
use tally_aws::config::SdkConfig;
use tally_core::key::Date;
use tally_core::ports::StoreError;

/// The SDK configuration a command runs with, and what it says about where
/// requests go (for messages).
pub(crate) struct Aws {
    pub sdk: SdkConfig,
    pub endpoint: Option<String>,
    pub region: String,
}

impl Aws {
    /// Loads the usual AWS configuration; fails, saying how to fix it, when
    /// no region is configured (every call would fail later, less clearly).
    pub async fn load() -> anyhow::Result<Aws> {
        let sdk = tally_aws::config::load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            anyhow!(
                "no AWS region is configured: export AWS_REGION (for example AWS_REGION=eu-west-1), or set a region in ~/.aws/config for your AWS_PROFILE"
            )
        })?;
        let endpoint = sdk.endpoint_url().map(str::to_owned);
        Ok(Aws {
            sdk,
            endpoint,
            region,
        })
    }

    /// Where requests go, for messages.
    pub fn place(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{endpoint} (region {})", self.region),
            None => format!("AWS region {}", self.region),
        }
    }

    /// A store error with a hint for the causes people usually hit.
    pub fn explain(&self, error: StoreError) -> anyhow::Error {
        let text = format!("{error:#}");
        let detail = format!("{text} {}", error.source);
        // Missing credentials also surface as a dispatch failure: test them first.
        let hint = if detail.contains("CredentialsNotLoaded") || detail.contains("no credentials") {
            Some(
                "no usable AWS credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values for an emulator), or AWS_PROFILE".to_owned(),
            )
        } else if detail.contains("dispatch failure")
            || detail.contains("Connection refused")
            || detail.contains("connection refused")
            || detail.contains("timed out")
        {
            Some(match &self.endpoint {
                Some(endpoint) => format!(
                    "cannot reach {endpoint}: is the server running (for example `moto_server -p 5000`) and AWS_ENDPOINT_URL right?"
                ),
                None => "cannot reach AWS: check the network, AWS_REGION, or set AWS_ENDPOINT_URL for an emulator".to_owned(),
            })
        } else if detail.contains("ResourceNotFoundException")
            || detail.contains("NoSuchBucket")
            || detail.contains("NonExistentQueue")
            || detail.contains("NotFound")
        {
            Some(format!(
                "it does not exist on {}: check the TALLY_* variables (or flags) name the right resources; on an emulator, `tally dev up` creates them",
                self.place()
            ))
        } else if detail.contains("AccessDenied") || detail.contains("UnauthorizedOperation") {
            Some("the credentials in use may not do this: check their IAM policy".to_owned())
        } else {
            None
        };
        match hint {
            Some(hint) => anyhow!("{text}\n  hint: {hint}"),
            None => anyhow!("{text}"),
        }
    }
}

/// Parses `--date`: a calendar date as `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text).map_err(|e| format!("{e} (expected a date such as 2015-11-16)"))
}

/// The process environment, with `overrides` (from flags) taking precedence.
pub(crate) fn environment_with(
    overrides: Vec<(&'static str, Option<String>)>,
) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        overrides
            .iter()
            .find(|(flag_for, value)| *flag_for == name && value.is_some())
            .and_then(|(_, value)| value.clone())
            .or_else(|| std::env::var(name).ok())
    }
}

/// `1 record`, `2 records`: a count and its noun, for one-line reports.
pub(crate) fn count(n: impl Into<u64>, singular: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {singular}s")
    }
}

/// Whether progress bars and other live output make sense.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_date_says_what_is_expected() {
        let error = parse_date("2015-13-45").unwrap_err();
        assert!(error.contains("2015-13-45"), "{error}");
        assert!(error.ends_with("(expected a date such as 2015-11-16)"));
        assert_eq!(parse_date("2015-11-16").unwrap().as_str(), "2015-11-16");
    }

    fn aws(endpoint: Option<&str>) -> Aws {
        Aws {
            sdk: SdkConfig::builder().build(),
            endpoint: endpoint.map(str::to_owned),
            region: "eu-west-1".into(),
        }
    }

    #[test]
    fn usual_failures_come_with_what_to_do() {
        let explained = |detail: &str| {
            aws(Some("http://127.0.0.1:5000"))
                .explain(StoreError::new(
                    "DynamoDB Query on table s",
                    detail.to_owned(),
                ))
                .to_string()
        };
        let refused = explained("dispatch failure: io error: Connection refused");
        assert!(refused.starts_with("DynamoDB Query on table s failed: dispatch failure"));
        assert!(
            refused.contains("hint: cannot reach http://127.0.0.1:5000"),
            "{refused}"
        );
        let no_credentials = explained("dispatch failure: CredentialsNotLoaded");
        assert!(
            no_credentials.contains("hint: no usable AWS credentials"),
            "{no_credentials}"
        );
        let missing = explained("ResourceNotFoundException: Requested resource not found");
        assert!(missing.contains("`tally dev up` creates them"), "{missing}");
        assert!(!explained("ValidationException: odd").contains("hint"));
    }

    #[test]
    fn counts_take_the_plural_unless_one() {
        assert_eq!(count(1u64, "record"), "1 record");
        assert_eq!(count(0u64, "record"), "0 records");
        assert_eq!(count(3u64, "batch item failure"), "3 batch item failures");
    }

    #[test]
    fn flags_win_over_the_environment() {
        let lookup = environment_with(vec![
            ("TALLY_TEST_FLAG_ONLY", Some("flag".into())),
            ("PATH", None),
        ]);
        assert_eq!(lookup("TALLY_TEST_FLAG_ONLY").as_deref(), Some("flag"));
        // Without a flag value the environment answers.
        assert_eq!(lookup("PATH"), std::env::var("PATH").ok());
    }
}
