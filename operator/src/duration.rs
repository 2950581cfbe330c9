//! Durations as people write them in a manifest: `30s`, `1m`, `1h30m`, `500ms`.
//!
//! A small parser of our own rather than `kube::core::Duration`: the rollout engine knows no kube
//! types, and negative or fractional-nanosecond durations mean nothing for a rollout.

use std::time::Duration;

/// The pattern the CRD schema checks duration strings against, so a typo fails at
/// `kubectl apply` instead of in the operator's log. [`parse_duration`] accepts exactly these.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration: {reason} (write e.g. `30s`, `1m`, `1h30m`, `500ms`)")]
pub struct DurationError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a sequence of `<number><unit>` terms (units `ms`, `s`, `m`, `h`), e.g. `1h30m`.
///
/// # Errors
/// [`DurationError`] for an empty string, a missing or unknown unit, or a number that is not
/// a non-negative decimal.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(fail("each term must start with a number"));
        }
        let value: f64 = number.parse().map_err(|_| fail("a number is malformed"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(fail("a number has no unit")),
            _ => return Err(fail("the unit is not one of ms, s, m, h")),
        };
        total += value * seconds_per_unit;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| fail("it is too long"))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest exact units
/// (`90s` → `1m30s`), for messages.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let (hours, rem) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rem) = (rem / 60_000, rem % 60_000);
    let (seconds, ms) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (ms, "ms")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_in_sums() {
        let cases = [
            ("30s", 30_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2m30s", 150_000),
            (" 10s ", 10_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_the_reason() {
        for text in ["", "10", "s", "10x", "1.m", ".5s", "-1s", "1m 30s", "10sec"] {
            let err = parse_duration(text).unwrap_err();
            assert_eq!(err.input, text);
            assert!(err.to_string().contains("is not a duration"), "{err}");
        }
    }

    #[test]
    fn the_schema_pattern_accepts_exactly_what_the_parser_accepts() {
        // A hand-rolled matcher of DURATION_PATTERN (no regex dependency for one test).
        fn matches_pattern(text: &str) -> bool {
            let mut rest = text;
            if rest.is_empty() {
                return false;
            }
            while !rest.is_empty() {
                let int = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if int == 0 {
                    return false;
                }
                rest = &rest[int..];
                if let Some(frac) = rest.strip_prefix('.') {
                    let n = frac
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(frac.len());
                    if n == 0 {
                        return false;
                    }
                    rest = &frac[n..];
                }
                let unit = ["ms", "s", "m", "h"]
                    .into_iter()
                    .find(|u| rest.starts_with(u));
                match unit {
                    Some(u) => rest = &rest[u.len()..],
                    None => return false,
                }
            }
            true
        }
        for text in [
            "30s", "1m", "1h30m", "500ms", "1.5s", "10", "10x", "1.m", ".5s", "-1s", "1m30", "ms",
        ] {
            assert_eq!(
                matches_pattern(text),
                parse_duration(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn formatting_uses_the_largest_exact_units_and_parses_back() {
        for (millis, text) in [
            (0, "0s"),
            (500, "500ms"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (3_661_001, "1h1m1s1ms"),
        ] {
            let d = Duration::from_millis(millis);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
