//! `tally rules check | test | eval`: ops' tools for rules files, the same
//! checks the build and the rules stage make.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tally_core::key::Date;
use tally_core::rules::alert::{StaleByRule, Trigger, decide};
use tally_core::rules::duration;
use tally_core::rules::unit;

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Check rules files: every problem, with file:line:column.
    ///
    /// Exit code 1 when any rule has a problem.
    #[command(after_help = "Example: tally rules check rules-config")]
    Check {
        /// The folder of *.yaml rules files.
        #[arg(default_value = "rules-config")]
        dir: PathBuf,
    },
    /// Run ops' rule tests (given totals, expect these alerts).
    ///
    /// Exit code 1 when a test fails or a file cannot be read.
    #[command(after_help = "Examples:
  tally rules test                         # rules-config/tests/*.yaml
  tally rules test my-tests.yaml --rules rules-config")]
    Test {
        /// Test files (default: <rules folder>/tests/*.yaml).
        files: Vec<PathBuf>,
        /// The folder of the rules under test.
        #[arg(long, default_value = "rules-config")]
        rules: PathBuf,
    },
    /// Which alerts a day's totals would fire, from a snapshot.
    ///
    /// Reads a snapshot as tally writes it (totals/<date> or its .json) or
    /// any file in the upload format, and evaluates every rule on it as a
    /// first evaluation of the day.
    #[command(after_help = "Example: tally rules eval --snapshot bucket/totals/2015-11-16")]
    Eval {
        /// The snapshot: `NAME VALUE` lines, or the JSON snapshot.
        #[arg(long, value_name = "FILE")]
        snapshot: PathBuf,
        /// The folder of the rules (default: the rules built in).
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
        /// The date, when the file does not say (default: from its name).
        #[arg(long)]
        date: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: RulesCommand) -> Result<()> {
    match command {
        RulesCommand::Check { dir } => check(&dir),
        RulesCommand::Test { files, rules } => test(&files, &rules),
        RulesCommand::Eval {
            snapshot,
            rules,
            date,
            json,
        } => eval(&snapshot, rules.as_deref(), date.as_deref(), json),
    }
}

fn check(dir: &Path) -> Result<()> {
    let rules = crate::run::load_rules(Some(dir))?;
    println!(
        "{}: {} rule{} ok",
        dir.display(),
        rules.rules().len(),
        if rules.rules().len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn test(files: &[PathBuf], rules_dir: &Path) -> Result<()> {
    let rules = crate::run::load_rules(Some(rules_dir))?;
    let files: Vec<PathBuf> = if files.is_empty() {
        let tests = rules_dir.join("tests");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&tests)
            .with_context(|| format!("listing {} for rule tests", tests.display()))?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("no *.yaml rule tests in {}", tests.display());
        }
        found
    } else {
        files.to_vec()
    };
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let outcome = unit::run_file(&rules, &path.display().to_string(), &text);
        for name in &outcome.passed {
            println!("ok    {}: {name}", path.display());
        }
        for failure in &outcome.failures {
            println!("FAIL  {failure}");
        }
        passed += outcome.passed.len();
        failed += outcome.failures.len();
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} rule test failure(s)");
    }
    Ok(())
}

/// What `eval` prints as JSON.
#[derive(Debug, Serialize)]
struct Evaluation {
    date: Date,
    counters: usize,
    firing: Vec<serde_json::Value>,
    /// Alerts whose condition holds but has not yet held for the rule's
    /// `for:`, with how long that is.
    pending: Vec<String>,
    rule_errors: Vec<String>,
}

fn eval(snapshot: &Path, rules_dir: Option<&Path>, date: Option<&str>, json: bool) -> Result<()> {
    let rules = crate::run::load_rules(rules_dir)?;
    let text = std::fs::read_to_string(snapshot)
        .with_context(|| format!("reading {}", snapshot.display()))?;
    let (file_date, totals) = read_snapshot(snapshot, &text)?;
    let date_text = date.map(str::to_owned).or(file_date).with_context(|| {
        format!(
            "{} does not say its date; give --date YYYY-MM-DD",
            snapshot.display()
        )
    })?;
    let date = Date::parse(&date_text).with_context(|| format!("--date {date_text}"))?;
    // Every rule, as a tick decides them: nothing came before this one.
    let decisions = decide(
        &rules,
        &date,
        &totals,
        Trigger::Tick(&StaleByRule::new()),
        &BTreeMap::new(),
        1,
        chrono::Utc::now(),
    );
    let mut evaluation = Evaluation {
        date,
        counters: totals.len(),
        firing: Vec::new(),
        pending: Vec::new(),
        rule_errors: decisions.errors.iter().map(ToString::to_string).collect(),
    };
    let mut subjects = Vec::new();
    for record in &decisions.writes {
        match &record.outbox {
            Some(note) => {
                subjects.push(format!("{}\n      {}", note.subject(), note.summary));
                evaluation.firing.push(serde_json::to_value(note)?);
            }
            None => {
                let rule = record.alert.split('#').next().unwrap_or_default();
                let wait = rules
                    .rule(rule)
                    .map_or_else(String::new, |r| duration::display(r.for_));
                evaluation.pending.push(format!(
                    "{} (fires once it has held for {wait})",
                    record.alert
                ));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
        return Ok(());
    }
    println!(
        "{} counters on {}, {} rules: {} would fire",
        evaluation.counters,
        evaluation.date,
        rules.rules().len(),
        subjects.len()
    );
    for subject in subjects {
        println!("  {subject}");
    }
    for alert in &evaluation.pending {
        println!("  pending, not sent: {alert}");
    }
    for error in &evaluation.rule_errors {
        println!("  rule error: {error}");
    }
    Ok(())
}

/// A snapshot's date (when it says) and totals.
fn read_snapshot(path: &Path, text: &str) -> Result<(Option<String>, BTreeMap<String, i128>)> {
    if text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Snapshot {
            date: Option<String>,
            counters: BTreeMap<String, i128>,
        }
        let snapshot: Snapshot = serde_json::from_str(text).with_context(|| {
            format!(
                "{} is not a JSON snapshot (an object with \"counters\")",
                path.display()
            )
        })?;
        return Ok((snapshot.date, snapshot.counters));
    }
    // Sums in a snapshot can exceed an upload's i64 values: read pairs here
    // rather than with the upload parser.
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    if !tokens.len().is_multiple_of(2) {
        bail!(
            "{}: {} tokens; a snapshot is NAME VALUE pairs",
            path.display(),
            tokens.len()
        );
    }
    let mut totals = BTreeMap::new();
    for (index, pair) in tokens.chunks(2).enumerate() {
        let value: i128 = pair[1].parse().with_context(|| {
            format!(
                "{}: token {} ({:?}) is not an integer",
                path.display(),
                2 * index + 2,
                pair[1]
            )
        })?;
        totals.insert(pair[0].to_owned(), value);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".json").to_owned());
    Ok((name.filter(|n| Date::parse(n).is_ok()), totals))
}
