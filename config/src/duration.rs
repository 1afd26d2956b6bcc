//! Durations written as strings: a decimal number and a unit, such as
//! `"250ms"`, `"1.5s"` or `"2m"`.

use std::fmt;
use std::time::Duration;

use serde::de::{Deserializer, Error, Visitor};

/// What a duration must look like, for error messages.
pub(crate) const EXPECTED: &str =
    "a number followed by a unit (ns, us, ms, s, m, h), like \"250ms\", \"1.5s\" or \"2m\"";

/// Fraction digits beyond this are ignored (they are below a nanosecond
/// for every unit up to hours).
const MAX_FRACTION_DIGITS: u32 = 18;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// True when the text was well formed but the value does not fit.
    pub overflow: bool,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overflow {
            write!(f, "duration `{}` is too large", self.input)
        } else {
            write!(f, "invalid duration `{}`, expected {EXPECTED}", self.input)
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses `"<number><unit>"` where the number is an integer or decimal
/// (`"5"`, `"1.5"`) and the unit is one of `ns`, `us`, `ms`, `s`, `m`, `h`.
/// No sign, exponent or whitespace is accepted.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = |overflow| DurationError {
        input: input.to_string(),
        overflow,
    };
    let number_len = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| invalid(false))?;
    let (number, unit) = input.split_at(number_len);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(invalid(false)),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || (number.contains('.') && !is_digits(fraction)) {
        return Err(invalid(false));
    }
    let whole: u128 = whole.parse().map_err(|_| invalid(true))?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(|| invalid(true))?;
    let mut scale: u128 = 1;
    let mut numerator: u128 = 0;
    for digit in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    nanos = nanos
        .checked_add(numerator * unit_nanos / scale)
        .ok_or_else(|| invalid(true))?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid(true))?;
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| invalid(true))?;
    Ok(Duration::new(secs, subsec))
}

/// `deserialize_with` function for a [`Duration`] written as a string
/// (`"250ms"`, `"10s"`); connectors use it for their own duration options.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// `deserialize_with` function for an optional [`Duration`] that must be
/// more than zero when given (absent: `None`, with `#[serde(default)]`).
pub fn deserialize_positive_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let d = deserialize(deserializer)?;
    if d.is_zero() {
        return Err(D::Error::custom("must be more than zero"));
    }
    Ok(Some(d))
}

/// Serde visitor accepting only duration strings.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration string: {EXPECTED}")
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<Duration, E> {
        parse_duration(value).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse_duration("0.0000000000000000000001h"),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "5", "s", "ms", "5 s", " 5s", "5s ", "5sec", "-5s", "+5s", "1.s", ".5s", "1..5s",
            "1.2.3s", "5S", "1e3ms", "5ms5", "٣s",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(!err.overflow, "{bad}");
            assert_eq!(
                err.to_string(),
                format!("invalid duration `{bad}`, expected {EXPECTED}")
            );
        }
    }

    #[test]
    fn rejects_overflow() {
        for big in [
            "18446744073709551616s",
            "99999999999999999999999999999999999999999h",
        ] {
            let err = parse_duration(big).expect_err(big);
            assert!(err.overflow, "{big}");
            assert_eq!(err.to_string(), format!("duration `{big}` is too large"));
        }
    }
}
