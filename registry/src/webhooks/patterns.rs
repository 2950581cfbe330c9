//! Which events a webhook wants: exact event types, a family (`drift.*`) or everything (`*`).

use crate::error::{Error, Result};

/// Every event type the registry emits. A webhook may subscribe to any of these exactly; a
/// pattern naming anything else is refused, so a typo fails loudly at creation instead of
/// silently never matching. Add new event types here when they are introduced.
pub const EVENT_TYPES: &[&str] = &[
    "model.created",
    "version.created",
    "version.updated",
    "alias.set",
    "alias.deleted",
    "endpoint.updated",
    "endpoint.deleted",
    "endpoint.degraded",
    "endpoint.recovered",
    "drift.detected",
    "drift.recovered",
    "rollout.step",
    "webhook.created",
    "webhook.deleted",
];

/// Families that `family.*` may name: the prefixes of [`EVENT_TYPES`]. A family pattern also
/// matches event types of that family added later.
pub const EVENT_FAMILIES: &[&str] = &[
    "model", "version", "alias", "endpoint", "drift", "rollout", "webhook",
];

/// Most patterns one webhook may list.
pub const MAX_PATTERNS: usize = 64;

/// Checks and normalizes a webhook's patterns: trimmed, deduplicated, in the given order.
///
/// # Errors
/// [`Error::BadRequest`] naming the first unacceptable pattern and what is accepted.
pub fn validate_patterns(patterns: &[String]) -> Result<Vec<String>> {
    if patterns.is_empty() {
        return Err(Error::BadRequest(
            "events must list at least one event type, `family.*` or `*`".into(),
        ));
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(Error::BadRequest(format!(
            "events lists {} patterns; at most {MAX_PATTERNS} are allowed",
            patterns.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(patterns.len());
    for raw in patterns {
        let pattern = raw.trim();
        let known = pattern == "*"
            || EVENT_TYPES.contains(&pattern)
            || pattern
                .strip_suffix(".*")
                .is_some_and(|family| EVENT_FAMILIES.contains(&family));
        if !known {
            return Err(Error::BadRequest(format!(
                "events: {} is not a known event type, `family.*` or `*`; known types: {}; families: {}",
                crate::names::printable(pattern),
                EVENT_TYPES.join(", "),
                EVENT_FAMILIES.join(", ")
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

    /// Event types passed to `WriteTx::emit` as string literals anywhere in the crate's sources.
    fn emitted_types(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                emitted_types(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("emit(") {
                    let rest = text[at + "emit(".len()..].trim_start();
                    if let Some(literal) = rest.strip_prefix('"')
                        && let Some(end) = literal.find('"')
                    {
                        found.push(literal[..end].to_string());
                    }
                }
            }
        }
    }

    #[test]
    fn every_event_type_the_registry_emits_can_be_subscribed_to_exactly() {
        let mut found = Vec::new();
        emitted_types(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.iter().any(|t| t == "version.created"), "{found:?}");
        let looks_like_a_type = |t: &&String| {
            t.matches('.').count() == 1
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        };
        for kind in found.iter().filter(looks_like_a_type) {
            assert!(
                EVENT_TYPES.contains(&kind.as_str()),
                "`{kind}` is emitted but missing from webhooks::patterns::EVENT_TYPES"
            );
        }
    }

    #[test]
    fn every_known_type_belongs_to_a_known_family() {
        for t in EVENT_TYPES {
            let family = t.split('.').next().unwrap();
            assert!(EVENT_FAMILIES.contains(&family), "{t}");
        }
    }
}
