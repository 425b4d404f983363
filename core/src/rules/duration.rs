//! Durations as ops write them in rules and rule tests: `30s`, `10m`,
//! `4h`, `1d`, or several in a row (`1h30m`).
//!
//! Only these four units, and whole numbers: a rule is read by someone woken
//! at night, and `1.5h`, `90min` or `2 weeks` would each be one more thing to
//! get wrong. The smallest is one second, the clock's finest step; on AWS
//! the tick rate is the resolution (see docs/operations.md).

use std::time::Duration;

/// The largest duration accepted: longer than any day an alert lives in.
pub const MAX: Duration = Duration::from_secs(7 * 86_400);

/// Parses `30s`, `10m`, `4h`, `1d` or a run of them (`1h30m`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("a duration is needed, like 30s, 10m, 4h or 1d".to_owned());
    }
    if trimmed.parse::<u64>().is_ok() {
        return Err(format!(
            "{trimmed:?} has no unit; write it like {trimmed}s, {trimmed}m or {trimmed}h"
        ));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(not_a_duration(trimmed)),
        };
        let Ok(number) = digits.parse::<u64>() else {
            return Err(not_a_duration(trimmed));
        };
        digits.clear();
        total = number
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .unwrap_or(u64::MAX);
    }
    if !digits.is_empty() {
        return Err(format!(
            "{trimmed:?} ends without a unit; write it like {trimmed}s or {trimmed}m"
        ));
    }
    let duration = Duration::from_secs(total);
    if duration < Duration::from_secs(1) {
        return Err(format!("{trimmed:?} is under the smallest duration, 1s"));
    }
    if duration > MAX {
        return Err(format!("{trimmed:?} is over the longest duration, 7d"));
    }
    Ok(duration)
}

fn not_a_duration(text: &str) -> String {
    format!(
        "{text:?} is not a duration: units are s, m, h and d, each after a whole number, like 30s, 10m, 4h or 1h30m"
    )
}

/// How a duration is written back: the largest units first (`1h30m`).
pub fn display(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_units_and_runs_of_them_parse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(display(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(display(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn what_is_not_a_duration_says_how_to_write_one() {
        assert!(
            parse("2")
                .unwrap_err()
                .contains("write it like 2s, 2m or 2h")
        );
        assert!(
            parse("1.5h")
                .unwrap_err()
                .contains("each after a whole number")
        );
        assert!(
            parse("2 weeks")
                .unwrap_err()
                .contains("units are s, m, h and d")
        );
        assert!(
            parse("10ms")
                .unwrap_err()
                .contains("units are s, m, h and d")
        );
        assert!(parse("0s").unwrap_err().contains("smallest duration, 1s"));
        assert!(parse("8d").unwrap_err().contains("longest duration, 7d"));
        assert!(parse("").is_err());
    }
}
