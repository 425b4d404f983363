//! The environment each stage reads is documented where operators look for
//! it, in docs/design.md (§4 ingest, §5 aggregate, §6 rules): every variable
//! a stage's settings read is named in its section, and no variable is
//! named there that the stage does not read. A setting added or renamed
//! without its documentation fails here.

use std::collections::BTreeSet;

const DESIGN: &str = include_str!("../../docs/design.md");

/// The text of `## <number>. …` up to the next `## ` heading.
fn section(number: u32) -> &'static str {
    let heading = format!("\n## {number}. ");
    let start = DESIGN
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/design.md has no section {number}"));
    let body = &DESIGN[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// Every `TALLY_…` name in a text.
fn variables_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("TALLY_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

fn read_by(variables: &[&str]) -> BTreeSet<String> {
    variables.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn each_stages_section_names_exactly_the_variables_it_reads() {
    for (number, stage, variables) in [
        (4, "ingest", tally_ingest::settings::VARIABLES),
        (5, "aggregate", tally_aggregate::settings::VARIABLES),
        (6, "rules", tally_rules::settings::VARIABLES),
    ] {
        assert_eq!(
            variables_named(section(number)),
            read_by(variables),
            "docs/design.md §{number} and {stage}/src/settings.rs disagree on the {stage} stage's environment"
        );
    }
}

#[test]
fn a_name_is_read_whole_up_to_the_first_character_that_cannot_be_in_it() {
    assert_eq!(
        variables_named("`TALLY_STATE_TABLE` (required), TALLY_ALERT_DAYS."),
        read_by(&["TALLY_ALERT_DAYS", "TALLY_STATE_TABLE"])
    );
}
