//! Conditional writes: `If-Match` and `If-None-Match` against an endpoint's revision, which is
//! its ETag (`"3"`).

use crate::error::{Error, Result};
use ferry_api::names;

/// The ETag of a revision: the number in double quotes.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// What a precondition header matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    /// `*`: any current revision, i.e. the endpoint exists.
    Any,
    /// Any of these revisions.
    Revisions(Vec<i64>),
}

impl Tags {
    fn matches(&self, revision: i64) -> bool {
        match self {
            Tags::Any => true,
            Tags::Revisions(list) => list.contains(&revision),
        }
    }

    fn describe(&self) -> String {
        match self {
            Tags::Any => "*".into(),
            Tags::Revisions(list) => list.iter().map(|r| etag(*r)).collect::<Vec<_>>().join(", "),
        }
    }
}

/// The preconditions of a write; the default is none (last writer wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`: the write applies only when the current revision is one of these (`*`: when
    /// the endpoint exists).
    pub if_match: Option<Tags>,
    /// `If-None-Match`: the write applies only when the current revision is none of these
    /// (`*`: only when the endpoint does not exist yet, i.e. create-only).
    pub if_none_match: Option<Tags>,
}

impl Preconditions {
    /// Only when the endpoint is at `revision`.
    pub fn if_match(revision: i64) -> Self {
        Preconditions {
            if_match: Some(Tags::Revisions(vec![revision])),
            if_none_match: None,
        }
    }

    /// Only when the endpoint does not exist yet.
    pub fn create_only() -> Self {
        Preconditions {
            if_match: None,
            if_none_match: Some(Tags::Any),
        }
    }

    /// Parses the two headers' values. Each is `*` or a comma-separated list of revisions, with
    /// or without the double quotes of an ETag.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the header and the value it could not read.
    pub fn parse(if_match: Option<&str>, if_none_match: Option<&str>) -> Result<Self> {
        Ok(Preconditions {
            if_match: if_match.map(|v| parse_tags("If-Match", v)).transpose()?,
            if_none_match: if_none_match
                .map(|v| parse_tags("If-None-Match", v))
                .transpose()?,
        })
    }

    /// Evaluates the preconditions against the current revision of endpoint `name` (`None` when
    /// it does not exist), `If-Match` first as RFC 9110 orders them.
    ///
    /// # Errors
    /// [`Error::PreconditionFailed`] saying which header failed and naming the current revision.
    pub fn check(&self, name: &str, current: Option<i64>) -> Result<()> {
        if let Some(tags) = &self.if_match {
            match current {
                None => {
                    return Err(Error::PreconditionFailed(format!(
                        "endpoint `{name}` does not exist, but If-Match: {} requires it to",
                        tags.describe()
                    )));
                }
                Some(revision) if !tags.matches(revision) => {
                    return Err(Error::PreconditionFailed(format!(
                        "endpoint `{name}` is at revision {revision} (ETag {}), not If-Match: {}; read it again and retry",
                        etag(revision),
                        tags.describe()
                    )));
                }
                Some(_) => {}
            }
        }
        if let (Some(tags), Some(revision)) = (&self.if_none_match, current)
            && tags.matches(revision)
        {
            return Err(Error::PreconditionFailed(match tags {
                Tags::Any => format!(
                    "endpoint `{name}` already exists (revision {revision}) and If-None-Match: * only creates"
                ),
                Tags::Revisions(_) => format!(
                    "endpoint `{name}` is at revision {revision}, which If-None-Match: {} excludes",
                    tags.describe()
                ),
            }));
        }
        Ok(())
    }
}

fn parse_tags(header: &str, value: &str) -> Result<Tags> {
    let value = value.trim();
    if value == "*" {
        return Ok(Tags::Any);
    }
    let mut revisions = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let bare = item
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(item);
        match bare.parse::<i64>() {
            Ok(revision) if revision >= 1 && !bare.starts_with('+') => revisions.push(revision),
            _ => {
                return Err(Error::BadRequest(format!(
                    "{header}: {} is not a revision; send `*` or the endpoint's ETag, e.g. \"3\"",
                    names::printable(item)
                )));
            }
        }
    }
    Ok(Tags::Revisions(revisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_read_with_or_without_quotes_and_in_lists() {
        let p = Preconditions::parse(Some("\"3\""), Some("4, \"5\"")).unwrap();
        assert_eq!(p.if_match, Some(Tags::Revisions(vec![3])));
        assert_eq!(p.if_none_match, Some(Tags::Revisions(vec![4, 5])));
        let p = Preconditions::parse(Some(" * "), None).unwrap();
        assert_eq!(p.if_match, Some(Tags::Any));
        assert_eq!(
            Preconditions::parse(None, None).unwrap(),
            Preconditions::default()
        );
    }

    #[test]
    fn unreadable_tags_are_a_bad_request_naming_the_header() {
        for value in ["", "abc", "W/\"3\"", "\"0\"", "-1", "+3", "3,"] {
            let err = Preconditions::parse(Some(value), None).unwrap_err();
            assert!(
                matches!(&err, Error::BadRequest(m) if m.starts_with("If-Match")),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn if_match_passes_only_on_the_current_revision() {
        let p = Preconditions::if_match(3);
        p.check("e", Some(3)).unwrap();
        let stale = p.check("e", Some(4)).unwrap_err().to_string();
        assert!(
            stale.contains("revision 4") && stale.contains("\"3\""),
            "{stale}"
        );
        assert!(matches!(
            p.check("e", None),
            Err(Error::PreconditionFailed(_))
        ));
    }

    #[test]
    fn if_match_star_requires_the_endpoint_to_exist() {
        let p = Preconditions::parse(Some("*"), None).unwrap();
        p.check("e", Some(9)).unwrap();
        assert!(
            p.check("e", None)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn if_none_match_star_only_creates() {
        let p = Preconditions::create_only();
        p.check("e", None).unwrap();
        let err = p.check("e", Some(2)).unwrap_err();
        assert!(matches!(&err, Error::PreconditionFailed(m) if m.contains("revision 2")));
    }

    #[test]
    fn no_preconditions_always_pass() {
        let p = Preconditions::default();
        p.check("e", None).unwrap();
        p.check("e", Some(7)).unwrap();
    }
}
