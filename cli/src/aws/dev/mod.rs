//! `tally dev`: the whole AWS pipeline on one laptop, against an
//! AWS-compatible endpoint such as moto's server. Two commands share one
//! file, the dev file (`.tally-dev.json` by default), which is what this
//! module holds:
//!
//! - [`up`] creates the pipeline's resources, idempotently, and writes the
//!   dev file: what it made and the environment each function gets;
//! - [`pump`] reads it to drive the three handlers as Lambda's event source
//!   mappings would, and keeps its place in the streams there, so a second
//!   `pump` continues where the first stopped.
//!
//! `up` writes the file once, keeping the positions of an earlier one;
//! after that only `pump`'s cursor changes it, one shard's position at a
//! time.

mod pump;
mod up;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tally_core::rules::RuleSet;

/// The dev file's default place.
pub const DEFAULT_CONFIG: &str = ".tally-dev.json";

/// How long a received upload message stays hidden before SQS delivers it
/// again (after ingest failed it).
const UPLOAD_VISIBILITY_SECONDS: u32 = 30;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create the pipeline's bucket, topics, queues, tables and streams on
    /// an AWS-compatible endpoint, idempotently.
    ///
    /// For an emulator such as moto's server (AWS_ENDPOINT_URL must be
    /// set). Prints the variables each function reads as `export` lines
    /// and saves what it made to a file that `tally dev pump` reads.
    /// Running it again changes nothing.
    #[command(after_help = "\
Examples:
  moto_server -p 5000 &
  export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 \\
         AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  eval \"$(tally dev up)\"
  aws --endpoint-url $AWS_ENDPOINT_URL s3 cp body.txt s3://tally-dev-counters/counters/2015-11-16/i-1
  tally dev pump --once

Exit codes: 0 ready; 1 a resource could not be created (the message says which and
why); 2 the command line was wrong.")]
    Up(up::UpArgs),
    /// Drive the three handlers from the upload queue and the two streams,
    /// as Lambda's event source mappings would.
    ///
    /// Upload notifications go to ingest (SQS event shape), the state
    /// table's stream to aggregate and the totals table's stream to rules
    /// (DynamoDB stream event shape), honouring batchItemFailures. One line
    /// per batch says what was processed. The rules stage also ticks every
    /// --tick, as the deployment's schedule does, one line per tick. Runs
    /// until Ctrl-C, or with --once until everything currently available is
    /// processed, then ticks once. Positions are saved, so the next run
    /// continues where this one stopped.
    #[command(after_help = "\
Examples:
  tally dev pump                 # until Ctrl-C, a tick a minute
  tally dev pump --tick 5s       # tick more often, to watch `for:` and `repeat:`
  tally dev pump --once          # what is there now and one tick, then exit
  tally dev pump --rules ./my-rules

Exit codes: 0 done (or stopped with Ctrl-C); 1 a batch kept failing, an upload
message failed or, with --once, the tick failed (positions are saved: run it again
once fixed), or the dev file is missing (run `tally dev up`); 2 the command line
was wrong.")]
    Pump(pump::PumpArgs),
}

pub async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Up(args) => up::run(args).await,
        DevCommand::Pump(args) => pump::run(args).await,
    }
}

/// The tables a dev environment has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub state: String,
    pub partials: String,
    pub totals: String,
    pub alerts: String,
}

/// Where a pump stands in one shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardPosition {
    /// Everything up to this sequence number was processed.
    After(String),
    /// This record failed and is processed next.
    At(String),
    /// A closed shard read to its end.
    Finished,
}

/// What `dev up` created, and where `dev pump` stands: the dev file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevFile {
    pub name: String,
    /// `AWS_ENDPOINT_URL` when it was created.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub upload_topic_arn: String,
    /// The queue standing in for ingest's subscription to the upload topic.
    pub upload_queue_url: String,
    pub alert_topic_arn: String,
    /// A queue subscribed to the alert topic, for people to read alerts.
    pub alert_queue_url: String,
    pub tables: Tables,
    /// What each function's environment is set to.
    pub environment: BTreeMap<String, String>,
    /// Stream ARN → shard id → position, moved only by `pump`'s cursor.
    #[serde(default)]
    pub positions: BTreeMap<String, BTreeMap<String, ShardPosition>>,
}

impl DevFile {
    fn load(path: &Path) -> anyhow::Result<DevFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "no dev environment at {}: run `tally dev up` first (with the same --config)",
                    path.display()
                )
            } else {
                anyhow!("cannot read {}: {e}", path.display())
            }
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a file `tally dev up` wrote; run `tally dev up` again to rewrite it",
                path.display()
            )
        })
    }

    /// Writes the file whole (a temporary file renamed over it), so an
    /// interrupted pump never leaves half a file behind.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, format!("{text}\n"))
            .and_then(|()| std::fs::rename(&temporary, path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The functions' settings: the file's variables, then the process's.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name: &str| {
            self.environment
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        }
    }
}

/// Loads `dir/*.yaml` for `--rules`, refusing a folder without rules: a
/// typo in the path must not silence every alert.
pub(crate) fn load_rules_dir(dir: &Path) -> anyhow::Result<RuleSet> {
    let rules = crate::run::load_rules(Some(dir))?;
    if rules.is_empty() {
        return Err(anyhow!(
            "{} has no rules (no *.yaml file with a rule in it); point --rules at a folder like rules-config/",
            dir.display()
        ));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dev file as `tally dev up` writes it, without positions.
    pub(super) fn dev_file() -> DevFile {
        DevFile {
            name: "d".into(),
            endpoint: Some("http://127.0.0.1:5000".into()),
            region: "us-east-1".into(),
            bucket: "d-counters".into(),
            upload_topic_arn: "t".into(),
            upload_queue_url: "q".into(),
            alert_topic_arn: "a".into(),
            alert_queue_url: "aq".into(),
            tables: Tables {
                state: "d-state".into(),
                partials: "d-partials".into(),
                totals: "d-totals".into(),
                alerts: "d-alerts".into(),
            },
            environment: BTreeMap::from([
                ("TALLY_STATE_TABLE".to_owned(), "d-state".to_owned()),
                ("TALLY_BUCKET".to_owned(), "d-counters".to_owned()),
            ]),
            positions: BTreeMap::new(),
        }
    }

    #[test]
    fn the_dev_file_round_trips_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.json");
        let mut file = dev_file();
        file.positions.insert(
            "arn:stream".into(),
            BTreeMap::from([
                ("shard-1".into(), ShardPosition::Finished),
                ("shard-2".into(), ShardPosition::After("42".into())),
            ]),
        );
        file.save(&path).unwrap();
        assert_eq!(DevFile::load(&path).unwrap(), file);
        let missing = DevFile::load(&dir.path().join("none.json")).unwrap_err();
        assert!(
            missing.to_string().contains("run `tally dev up` first"),
            "{missing}"
        );
    }
}
