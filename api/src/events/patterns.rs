//! Which events a webhook wants: exact event types, a family (`drift.*`) or everything (`*`).
//! A pattern naming a type or family that does not exist is refused, so a typo fails loudly at
//! creation instead of silently never matching.

use super::EventKind;
use crate::error::{Result, ValidationError};

/// The families `family.*` may name: the part before the dot of every [`EventKind`]. A family
/// pattern also matches event kinds of that family added later.
pub fn families() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = EventKind::ALL.iter().map(|k| k.family()).collect();
    out.dedup();
    out
}

/// Most patterns one webhook may list.
pub const MAX_PATTERNS: usize = 64;

/// Checks and normalizes a webhook's patterns: trimmed, deduplicated, in the given order.
///
/// # Errors
/// [`ValidationError::BadRequest`] naming the first unacceptable pattern and what is accepted.
pub fn validate_patterns(patterns: &[String]) -> Result<Vec<String>> {
    if patterns.is_empty() {
        return Err(ValidationError::BadRequest(
            "events must list at least one event type, `family.*` or `*`".into(),
        ));
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(ValidationError::BadRequest(format!(
            "events lists {} patterns; at most {MAX_PATTERNS} are allowed",
            patterns.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(patterns.len());
    for raw in patterns {
        let pattern = raw.trim();
        let known = pattern == "*"
            || pattern.parse::<EventKind>().is_ok()
            || pattern
                .strip_suffix(".*")
                .is_some_and(|family| families().contains(&family));
        if !known {
            return Err(ValidationError::BadRequest(format!(
                "events: {} is not a known event type, `family.*` or `*`; known types: {}; families: {}",
                crate::names::printable(pattern),
                EventKind::ALL.map(EventKind::as_str).join(", "),
                families().join(", ")
            )));
        }
        if !out.iter().any(|p| p == pattern) {
            out.push(pattern.to_string());
        }
    }
    Ok(out)
}

/// True when an event of type `kind` is wanted by any of `patterns`.
pub fn matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && kind.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn exact_family_and_wildcard_patterns_match_as_documented() {
        let p = strings(&["version.created", "drift.*"]);
        assert!(matches(&p, "version.created"));
        assert!(matches(&p, "drift.detected"));
        assert!(matches(&p, "drift.anything_new"));
        assert!(!matches(&p, "version.updated"));
        assert!(!matches(&p, "driftless.x"));
        assert!(matches(&strings(&["*"]), "alias.set"));
        assert!(!matches(&[], "alias.set"));
    }

    #[test]
    fn unknown_types_and_families_are_refused_with_the_accepted_forms() {
        for bad in [
            "version.craeted",
            "nope.*",
            "",
            "version",
            "*.created",
            "ver*",
        ] {
            let err = validate_patterns(&strings(&[bad])).unwrap_err().to_string();
            assert!(err.contains("known types"), "{bad}: {err}");
        }
        assert!(validate_patterns(&[]).is_err());
    }

    #[test]
    fn patterns_are_trimmed_and_deduplicated_in_order() {
        let out =
            validate_patterns(&strings(&[" drift.* ", "version.created", "drift.*"])).unwrap();
        assert_eq!(out, strings(&["drift.*", "version.created"]));
    }

    #[test]
    fn every_event_kind_and_its_family_can_be_subscribed_to() {
        // The registry emits only `EventData`, so every kind it can emit is in `EventKind::ALL`.
        for kind in EventKind::ALL {
            let exact = strings(&[kind.as_str()]);
            assert_eq!(validate_patterns(&exact).unwrap(), exact);
            let family = strings(&[&format!("{}.*", kind.family())]);
            assert!(validate_patterns(&family).is_ok(), "{kind}");
            assert!(matches(&family, kind.as_str()));
        }
    }
}
