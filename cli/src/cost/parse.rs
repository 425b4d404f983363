//! The checks on the command line's numbers. A bad value is refused where
//! clap parses it, so the message names the flag and what to give, and the
//! model never sees a percentage over 100 or a duration Lambda cannot bill.

fn parse_number(text: &str, what: &str, example: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!(
            "{text:?} is not {what}; give a number such as {example}"
        )),
    }
}

pub fn parse_percent(text: &str) -> Result<f64, String> {
    let value = parse_number(text.trim_end_matches('%'), "a percentage", "10")?;
    if value > 100.0 {
        return Err(format!(
            "{text} is over 100; give a percentage from 0 to 100"
        ));
    }
    Ok(value)
}

pub fn parse_utilization(text: &str) -> Result<f64, String> {
    let value = parse_percent(text)?;
    if value < 1.0 {
        return Err(format!(
            "{text} would provision without bound; give a percentage from 1 to 100 (AWS's auto scaling targets 70)"
        ));
    }
    Ok(value)
}

pub fn parse_window(text: &str) -> Result<f64, String> {
    let value = parse_number(text, "a number of seconds", "10")?;
    if value > 300.0 {
        return Err(format!(
            "{text} s is over Lambda's 300 s maximum batching window; give 0 to 300"
        ));
    }
    Ok(value)
}

pub fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let value = parse_number(text, "a duration in milliseconds", "60")?;
    if !(1.0..=900_000.0).contains(&value) {
        return Err(format!(
            "{text} ms is outside what Lambda bills (1 ms to its 15-minute limit); give 1 to 900000"
        ));
    }
    Ok(value)
}

pub fn parse_hours(text: &str) -> Result<f64, String> {
    let value = parse_number(text, "a number of hours", "6")?;
    if !(0.0..=24.0).contains(&value) {
        return Err(format!("{text} hours is not within a day; give 0 to 24"));
    }
    Ok(value)
}

pub fn parse_price(text: &str) -> Result<f64, String> {
    parse_number(text.trim_start_matches('$'), "a price in dollars", "0.625")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flag_values_say_what_to_give() {
        assert!(parse_percent("120").unwrap_err().contains("0 to 100"));
        assert!(parse_price("-1").unwrap_err().contains("such as"));
        assert!(parse_window("400").unwrap_err().contains("300"));
        assert!(parse_duration_ms("0").unwrap_err().contains("1 to 900000"));
        assert!(parse_hours("25").unwrap_err().contains("0 to 24"));
        assert_eq!(parse_percent("10%"), Ok(10.0));
        assert_eq!(parse_price("$0.5"), Ok(0.5));
    }
}
