//! An error and its causes as one line, each said once.
//!
//! The ports' errors ([`tally_core::ports::StoreError`]) name their cause in
//! their own message and also expose it as their source, so that logs with
//! `%error` read whole. anyhow's `{:#}` walks the sources too, and would say
//! every such cause twice; the line here adds a cause only when the text
//! before it does not already say it.

/// `context: error: cause`, without repeats.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::ports::StoreError;

    #[test]
    fn a_store_errors_cause_is_said_once() {
        let error = anyhow::Error::new(StoreError::new(
            "opening database x.sqlite",
            "it is in use by process 7",
        ))
        .context("evaluating 2015-11-16");
        assert_eq!(
            error_line(&error),
            "evaluating 2015-11-16: opening database x.sqlite failed: it is in use by process 7"
        );
    }

    #[test]
    fn causes_that_the_message_does_not_say_are_kept() {
        let io = std::io::Error::other("disk full");
        let error = anyhow::Error::new(io).context("writing totals/2015-11-16");
        assert_eq!(error_line(&error), "writing totals/2015-11-16: disk full");
    }
}
