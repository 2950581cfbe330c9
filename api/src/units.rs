//! Durations and sizes as people write them, in one grammar for every flag, config file,
//! query parameter and manifest field: `500ms`, `30s`, `5m`, `1h30m`, `2d`, `90` (seconds);
//! `2GiB`, `500MiB`, `1.5GB`, `1048576` (bytes).

use std::time::Duration;

/// The pattern a CRD schema checks duration strings against, so a typo fails at `kubectl apply`
/// instead of in a log. [`parse_duration`] accepts everything it matches.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$";

/// Why a duration or a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error("`{input}` is not a duration: {reason} (write e.g. 500ms, 30s, 5m, 1h30m, 2d)")]
    Duration {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not a size.
    #[error("`{input}` is not a size: {reason} (write e.g. 512MiB, 2GiB, 1.5GB, 1048576)")]
    Size {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Parses a sequence of `<number><unit>` terms (units `ms`, `s`, `m`, `h`, `d`; numbers may have
/// decimals), e.g. `1h30m` or `1.5s`, or a plain number of seconds (`90`). Zero is a duration;
/// callers that need more say so.
///
/// # Errors
/// [`UnitError::Duration`] for an empty text, an unknown unit, a malformed or negative number,
/// or a duration too long to represent.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let fail = |reason| UnitError::Duration {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().map_err(|_| fail("the number is malformed"))?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| fail("it is too long"));
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
            "d" => 86_400.0,
            "" => return Err(fail("a number has no unit")),
            _ => return Err(fail("the unit is not one of ms, s, m, h, d")),
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

/// An age to read at a glance, rounded down to one unit: `45s`, `12m`, `5h`, `3d` (seconds up
/// to two minutes, minutes up to two hours, hours up to two days).
pub fn short_age(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172_800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// A setting in the largest unit that divides it exactly: `90s`, `5m`, `2h`, `30d`.
pub fn whole_units(seconds: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Parses sizes like `2GiB`, `500MiB`, `1.5GB`, `1048576` (bytes); units are case-insensitive,
/// binary (`KiB`…`TiB`) or decimal (`KB`…`TB`, also `K`…`T`).
///
/// # Errors
/// [`UnitError::Size`] when the text is not a number with a known unit, or less than a byte.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let fail = |reason| UnitError::Size {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| fail("it does not start with a number"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        _ => {
            return Err(fail(
                "the unit is not one of B, KiB, MiB, GiB, TiB, KB, MB, GB, TB",
            ));
        }
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(fail("it must be at least 1 byte"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(fail("it is too large"));
    }
    // In range by the checks above; a fraction of a byte is dropped.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_terms_with_units_or_plain_seconds() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("1.5s", 1500),
            ("90", 90_000),
            ("0.25", 250),
            (" 1m ", 60_000),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("5x", "not one of"),
            ("m5", "start with a number"),
            ("1.s", "start with a number"),
            ("-5s", "start with a number"),
            ("5m3", "no unit"),
        ] {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    /// A hand-rolled matcher of [`DURATION_PATTERN`] (no regex dependency for one test).
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
            let unit = ["ms", "s", "m", "h", "d"]
                .into_iter()
                .find(|u| rest.starts_with(u));
            match unit {
                Some(u) => rest = &rest[u.len()..],
                None => return false,
            }
        }
        true
    }

    #[test]
    fn everything_the_crd_pattern_accepts_parses() {
        // The pattern is the parser's grammar minus plain seconds: a manifest says its unit.
        for text in [
            "30s", "1m", "1h30m", "500ms", "1.5s", "2d", "10", "10x", "1.m", ".5s", "-1s", "1m30",
            "ms", "1m 30s", "10sec",
        ] {
            if matches_pattern(text) {
                assert!(parse_duration(text).is_ok(), "{text}");
            } else {
                assert!(
                    parse_duration(text).is_err() || text.bytes().all(|b| b.is_ascii_digit()),
                    "{text}"
                );
            }
        }
        assert!(!matches_pattern("10") && parse_duration("10").is_ok());
    }

    #[test]
    fn format_writes_what_parse_reads() {
        for ms in [0, 1, 999, 1000, 90_000, 5_400_000, 3_723_004] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("500MiB").unwrap(), 500 * 1024 * 1024);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("64kib").unwrap(), 65_536);
        assert!(
            parse_size("lots")
                .unwrap_err()
                .to_string()
                .contains("number")
        );
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert!(parse_size("0").unwrap_err().to_string().contains("1 byte"));
    }

    #[test]
    fn ages_round_down_to_one_unit_and_settings_keep_exact_units() {
        assert_eq!(short_age(45), "45s");
        assert_eq!(short_age(119), "119s");
        assert_eq!(short_age(150), "2m");
        assert_eq!(short_age(5 * 3600 + 59), "5h");
        assert_eq!(short_age(3 * 86_400 + 1), "3d");
        assert_eq!(whole_units(90), "90s");
        assert_eq!(whole_units(300), "5m");
        assert_eq!(whole_units(7200), "2h");
        assert_eq!(whole_units(30 * 86_400), "30d");
        assert_eq!(whole_units(0), "0s");
    }
}
