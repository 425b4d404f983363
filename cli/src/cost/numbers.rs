//! Numbers as the report prints them: a reader compares figures across
//! columns, so every count is grouped in thousands and every dollar amount
//! has cents, whichever part of the model produced it (errors included).

/// `1752000000` as `1,752,000,000`, rounded to a whole number.
pub fn grouped(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn usd(value: f64) -> String {
    let cents = (value * 100.0).round();
    format!(
        "${}.{:02}",
        grouped((cents / 100.0).trunc()),
        (cents % 100.0).abs() as u64
    )
}

/// Units with one decimal when they are fractional (batches per period).
pub fn amount(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        grouped(value)
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_dollars_have_cents() {
        assert_eq!(grouped(1_752_000_000.0), "1,752,000,000");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(usd(1234.567), "$1,234.57");
        assert_eq!(usd(0.004), "$0.00");
    }
}
