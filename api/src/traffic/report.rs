//! What a replica's report must look like, and the `window` of an analysis.

use std::time::Duration;

use crate::drift::profile::{MAX_EDGES, MAX_FEATURES, MAX_INPUTS, MAX_NAME_LEN};
use crate::error::{Result, ValidationError};
use crate::names;
use crate::traffic::{Report, latency_bounds_us};

/// Longest replica id, in characters.
pub const MAX_REPLICA_CHARS: usize = 256;

/// Longest interval one report may cover, in seconds.
pub const MAX_INTERVAL_SECONDS: f64 = 3600.0;

/// Most versions one report may carry.
pub const MAX_REPORT_VERSIONS: usize = 64;

/// Longer load errors are cut to this many bytes: the message is for people, and it is copied
/// into events.
pub const MAX_LOAD_ERROR_BYTES: usize = 4096;

/// Most error classes per version (they are a small fixed set in serving).
const MAX_ERROR_CLASSES: usize = 32;

/// Longest error class name.
const MAX_ERROR_CLASS_LEN: usize = 64;

/// Decade buckets of shadow differences (see [`crate::traffic::diff_bucket`]).
const DIFF_BUCKETS: usize = 8;

/// The analysis window when the request names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Longest report id.
pub const MAX_REPORT_ID_CHARS: usize = 64;

/// Checks a report and returns it normalized: an empty or blank `load_error` means none, and a
/// very long one is shortened to [`MAX_LOAD_ERROR_BYTES`].
///
/// # Errors
/// [`ValidationError::BadRequest`] listing every problem, each naming its field.
pub fn validate_report(mut report: Report) -> Result<Report> {
    let mut problems: Vec<String> = Vec::new();
    let replica_chars = report.replica.chars().count();
    if report.replica.trim().is_empty() {
        problems.push("replica must not be empty".into());
    } else if replica_chars > MAX_REPLICA_CHARS {
        problems.push(format!(
            "replica is {replica_chars} characters long, the limit is {MAX_REPLICA_CHARS}"
        ));
    } else if report.replica.chars().any(char::is_control) {
        // It ends up in log lines and event payloads.
        problems.push(format!(
            "replica {} contains control characters",
            names::printable(&report.replica)
        ));
    }
    if let Some(id) = &report.id
        && (id.is_empty()
            || id.len() > MAX_REPORT_ID_CHARS
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        problems.push(format!(
            "id must be 1 to {MAX_REPORT_ID_CHARS} letters, digits or `-` (a UUID), got {}",
            names::printable(id)
        ));
    }
    let interval = report.interval_seconds;
    if !(interval.is_finite() && interval > 0.0 && interval <= MAX_INTERVAL_SECONDS) {
        problems.push(format!(
            "interval_seconds must be above 0 and at most {MAX_INTERVAL_SECONDS}, got {interval}"
        ));
    }
    if report.versions.len() > MAX_REPORT_VERSIONS {
        problems.push(format!(
            "versions: at most {MAX_REPORT_VERSIONS} versions per report, got {}",
            report.versions.len()
        ));
    }
    let latency_buckets = latency_bounds_us().len() + 1;
    for (version, c) in &report.versions {
        let at = format!("versions.{version}");
        if *version < 1 {
            problems.push(format!("{at}: versions are numbered from 1, got {version}"));
        }
        if c.errors.len() > MAX_ERROR_CLASSES {
            problems.push(format!(
                "{at}.errors: at most {MAX_ERROR_CLASSES} error classes, got {}",
                c.errors.len()
            ));
        }
        if let Some(class) = c
            .errors
            .keys()
            .find(|k| k.is_empty() || k.len() > MAX_ERROR_CLASS_LEN)
        {
            problems.push(format!(
                "{at}.errors: class {} must be 1 to {MAX_ERROR_CLASS_LEN} bytes long",
                names::printable(class)
            ));
        }
        if c.latency.counts.len() > latency_buckets {
            problems.push(format!(
                "{at}.latency.counts: at most {latency_buckets} buckets, got {}",
                c.latency.counts.len()
            ));
        }
        if let Some(s) = &c.shadow {
            if s.agreed > s.classified {
                problems.push(format!(
                    "{at}.shadow: agreed ({}) exceeds classified ({})",
                    s.agreed, s.classified
                ));
            }
            for (field, value) in [
                ("abs_diff_sum", s.abs_diff_sum),
                ("rel_diff_sum", s.rel_diff_sum),
            ] {
                if !(value.is_finite() && value >= 0.0) {
                    problems.push(format!(
                        "{at}.shadow.{field} must be a finite number, at least 0, got {value}"
                    ));
                }
            }
            if s.abs_diff_buckets.len() > DIFF_BUCKETS {
                problems.push(format!(
                    "{at}.shadow.abs_diff_buckets: at most {DIFF_BUCKETS} buckets, got {}",
                    s.abs_diff_buckets.len()
                ));
            }
        }
        if let Some(d) = &c.drift {
            if d.inputs.len() > MAX_INPUTS {
                problems.push(format!(
                    "{at}.drift.inputs: at most {MAX_INPUTS} inputs, got {}",
                    d.inputs.len()
                ));
            }
            for (input, features) in &d.inputs {
                if input.is_empty() || input.len() > MAX_NAME_LEN {
                    problems.push(format!(
                        "{at}.drift.inputs: input name {} must be 1 to {MAX_NAME_LEN} bytes long",
                        names::printable(input)
                    ));
                }
                if features.len() > MAX_FEATURES {
                    problems.push(format!(
                        "{at}.drift.inputs.{input}: at most {MAX_FEATURES} features, got {}",
                        features.len()
                    ));
                }
                if let Some(i) = features.iter().position(|h| h.len() > MAX_EDGES + 1) {
                    problems.push(format!(
                        "{at}.drift.inputs.{input}[{i}]: at most {} buckets, got {}",
                        MAX_EDGES + 1,
                        features[i].len()
                    ));
                }
            }
        }
        let f = &c.feedback;
        if !f.reward_sum.is_finite() {
            problems.push(format!(
                "{at}.feedback.reward_sum must be finite, got {}",
                f.reward_sum
            ));
        }
        if f.correct > f.labels {
            problems.push(format!(
                "{at}.feedback: correct ({}) exceeds labels ({})",
                f.correct, f.labels
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ValidationError::BadRequest(format!(
            "invalid report: {}",
            problems.join("; ")
        )));
    }
    report.load_error = report
        .load_error
        .filter(|e| !e.trim().is_empty())
        .map(|e| shorten(e, MAX_LOAD_ERROR_BYTES));
    Ok(report)
}

fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Parses the `window` of an analysis in the contract's duration grammar (`30s`, `5m`, `1h`,
/// plain seconds `300`); without one, 5 minutes (or `max`, when that is shorter).
///
/// # Errors
/// [`ValidationError::BadRequest`] for anything else, a window of 0, or one longer than `max`
/// (older counts are gone).
pub fn parse_window(text: Option<&str>, max: Duration) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(DEFAULT_WINDOW.min(max));
    };
    let window = crate::units::parse_duration(text).map_err(|_| {
        ValidationError::BadRequest(format!(
            "invalid window {}: use seconds (300) or a number with a unit (30s, 5m, 1h)",
            names::printable(text)
        ))
    })?;
    if window.is_zero() {
        return Err(ValidationError::BadRequest(format!(
            "invalid window {}: it must be longer than zero",
            names::printable(text)
        )));
    }
    if window > max {
        return Err(ValidationError::BadRequest(format!(
            "window {} is longer than {} s, the longest kept",
            names::printable(text),
            max.as_secs()
        )));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::traffic::{ShadowCounters, VersionCounters};

    #[test]
    fn a_report_id_is_a_short_token_of_letters_digits_and_dashes() {
        let mut r = report();
        r.id = Some("0b6d2f6e-3c1a-4e8e-9a53-5d0f8c3f7a10".into());
        assert!(validate_report(r.clone()).is_ok());
        r.id = Some("a b".into());
        assert!(problem(r.clone()).contains("id must be"));
        r.id = Some("x".repeat(MAX_REPORT_ID_CHARS + 1));
        assert!(problem(r).contains("id must be"));
    }

    fn report() -> Report {
        let mut versions = BTreeMap::new();
        versions.insert(1, VersionCounters::default());
        Report {
            id: None,
            replica: "serving-0".into(),
            interval_seconds: 5.0,
            revision: Some(3),
            versions,
            load_error: None,
        }
    }

    fn problem(r: Report) -> String {
        validate_report(r).unwrap_err().to_string()
    }

    #[test]
    fn an_ordinary_report_is_accepted_unchanged() {
        assert_eq!(validate_report(report()).unwrap(), report());
    }

    #[test]
    fn replica_ids_must_be_present_short_and_printable() {
        for (replica, says) in [
            ("", "replica must not be empty"),
            ("  ", "replica must not be empty"),
            (&"r".repeat(257), "257 characters long, the limit is 256"),
            ("a\nb", "control characters"),
        ] {
            let mut r = report();
            r.replica = replica.to_string();
            let err = problem(r);
            assert!(err.contains(says), "{err}");
        }
        let mut r = report();
        r.replica = "é".repeat(256);
        validate_report(r).unwrap();
    }

    #[test]
    fn intervals_must_be_above_zero_and_at_most_an_hour() {
        for interval in [0.0, -1.0, 3600.5, f64::NAN, f64::INFINITY] {
            let mut r = report();
            r.interval_seconds = interval;
            assert!(problem(r).contains("interval_seconds"), "{interval}");
        }
        let mut r = report();
        r.interval_seconds = 3600.0;
        validate_report(r).unwrap();
    }

    #[test]
    fn a_report_carries_at_most_64_versions_numbered_from_1() {
        let mut r = report();
        r.versions = (1..=65).map(|v| (v, VersionCounters::default())).collect();
        assert!(problem(r).contains("at most 64 versions"));
        let mut r = report();
        r.versions.insert(0, VersionCounters::default());
        assert!(problem(r).contains("versions.0: versions are numbered from 1"));
    }

    #[test]
    fn inconsistent_counters_are_refused_naming_the_version() {
        let mut r = report();
        let c = r.versions.get_mut(&1).unwrap();
        c.shadow = Some(ShadowCounters {
            agreed: 5,
            classified: 4,
            abs_diff_sum: -1.0,
            abs_diff_buckets: vec![0; 9],
            ..ShadowCounters::default()
        });
        c.feedback.correct = 3;
        c.feedback.labels = 2;
        c.latency.counts = vec![0; 200];
        c.errors.insert(String::new(), 1);
        let err = problem(r);
        for says in [
            "versions.1.shadow: agreed (5) exceeds classified (4)",
            "versions.1.shadow.abs_diff_sum",
            "versions.1.shadow.abs_diff_buckets",
            "versions.1.feedback: correct (3) exceeds labels (2)",
            "versions.1.latency.counts",
            "versions.1.errors: class",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn oversized_drift_counters_are_refused_naming_the_input() {
        use crate::traffic::DriftCounters;
        let mut r = report();
        let c = r.versions.get_mut(&1).unwrap();
        let mut drift = DriftCounters::default();
        drift
            .inputs
            .insert("x".into(), vec![vec![0; 12], vec![0; 300]]);
        drift.inputs.insert(String::new(), vec![]);
        c.drift = Some(drift);
        let err = problem(r);
        assert!(
            err.contains("versions.1.drift.inputs.x[1]: at most 257 buckets, got 300"),
            "{err}"
        );
        assert!(
            err.contains("versions.1.drift.inputs: input name `` must be 1 to 256"),
            "{err}"
        );
        let mut r = report();
        let mut drift = DriftCounters::default();
        drift.inputs.insert("x".into(), vec![vec![0; 12]; 3]);
        r.versions.get_mut(&1).unwrap().drift = Some(drift);
        validate_report(r).unwrap();
    }

    #[test]
    fn blank_load_errors_mean_none_and_long_ones_are_shortened() {
        let mut r = report();
        r.load_error = Some("  ".into());
        assert_eq!(validate_report(r).unwrap().load_error, None);
        let mut r = report();
        r.load_error = Some("é".repeat(5000));
        let kept = validate_report(r).unwrap().load_error.unwrap();
        assert!(kept.len() <= MAX_LOAD_ERROR_BYTES + '…'.len_utf8());
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn windows_are_read_in_seconds_minutes_or_hours() {
        let hour = Duration::from_secs(3600);
        for (text, seconds) in [
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("90", 90.0),
            ("1.5m", 90.0),
            (" 2m ", 120.0),
        ] {
            assert_eq!(
                parse_window(Some(text), hour).unwrap(),
                Duration::from_secs_f64(seconds),
                "{text}"
            );
        }
        assert_eq!(parse_window(None, hour).unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_window(None, Duration::from_secs(60)).unwrap(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn bad_or_too_long_windows_are_refused() {
        let hour = Duration::from_secs(3600);
        for text in [
            "",
            "0",
            "-5m",
            "5d",
            "m",
            "inf",
            "nan",
            "abc",
            "1e400",
            "5 minutes",
        ] {
            let err = parse_window(Some(text), hour).unwrap_err().to_string();
            assert!(err.contains("window"), "{text}: {err}");
        }
        let err = parse_window(Some("2h"), hour).unwrap_err().to_string();
        assert!(err.contains("3600 s"), "{err}");
    }
}
