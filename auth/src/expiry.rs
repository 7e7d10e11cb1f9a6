//! Parsing of `expires_in`: how long a new token lives.
//!
//! Accepted: a positive integer of seconds (`3600`), the same as a string (`"3600"`), or a
//! positive integer with one unit suffix: `s`, `m` (minutes), `h`, `d`, `w`, `y` (365 days),
//! e.g. `"30s"`, `"15m"`, `"24h"`, `"7d"`, `"4w"`, `"1y"`. `null`, absence and `"never"` mean
//! the token never expires. Anything else is refused with a message that does not echo more
//! than the offending value's shape.

use std::time::Duration;

use serde_json::Value;

/// Longest accepted lifetime (100 years): keeps `now + expires_in` far from chrono's limits.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses an `expires_in` JSON value. `Ok(None)` means "never expires".
///
/// # Errors
///
/// Returns a reason (without the field name) when the value is not one of the accepted forms,
/// is zero, or exceeds [`MAX_EXPIRES_IN`].
pub fn parse_expires_in(value: &Value) -> Result<Option<Duration>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => {
            let seconds = number.as_u64().ok_or_else(|| {
                "must be a positive whole number of seconds or a duration like \"24h\"".to_string()
            })?;
            checked(seconds).map(Some)
        }
        Value::String(text) => parse_expires_in_text(text),
        _ => Err("must be a number of seconds or a duration like \"24h\"".to_string()),
    }
}

/// Parses the string form of `expires_in` (see the module docs).
///
/// # Errors
///
/// As [`parse_expires_in`].
pub fn parse_expires_in_text(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let unit_start = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_start);
    if digits.is_empty() {
        return Err(
            "must start with a whole number, e.g. \"30s\", \"15m\", \"24h\", \"7d\", \"4w\", \"1y\""
                .to_string(),
        );
    }
    let multiplier: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err("unknown unit (expected s, m, h, d, w or y)".to_string());
        }
    };
    let count: u64 = digits.parse().map_err(|_| "is too large".to_string())?;
    let seconds = count
        .checked_mul(multiplier)
        .ok_or_else(|| "is too large".to_string())?;
    checked(seconds).map(Some)
}

fn checked(seconds: u64) -> Result<Duration, String> {
    if seconds == 0 {
        return Err("must be positive".to_string());
    }
    let duration = Duration::from_secs(seconds);
    if duration > MAX_EXPIRES_IN {
        return Err("is too large (at most 100 years)".to_string());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_should_parse_every_accepted_form() {
        let cases = [
            (json!(null), None),
            (json!("never"), None),
            (json!(1), Some(1)),
            (json!(3600), Some(3600)),
            (json!("3600"), Some(3600)),
            (json!("30s"), Some(30)),
            (json!("15m"), Some(900)),
            (json!("24h"), Some(86_400)),
            (json!("7d"), Some(604_800)),
            (json!("4w"), Some(2_419_200)),
            (json!("1y"), Some(31_536_000)),
            (json!(" 2h "), Some(7_200)),
        ];
        for (value, seconds) in cases {
            assert_eq!(
                parse_expires_in(&value),
                Ok(seconds.map(Duration::from_secs)),
                "{value}"
            );
        }
    }

    #[test]
    fn test_should_refuse_malformed_or_out_of_range_values() {
        for value in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!("0s"),
            json!(""),
            json!("h"),
            json!("5 minutes"),
            json!("5x"),
            json!("-5s"),
            json!("1.5h"),
            json!("101y"),
            json!("99999999999999999999999s"),
            json!("18446744073709551615y"),
            json!(true),
            json!([1]),
            json!({"h": 1}),
        ] {
            assert!(parse_expires_in(&value).is_err(), "{value} must be refused");
        }
    }
}
