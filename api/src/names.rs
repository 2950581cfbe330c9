//! Names of models and aliases, and references to a version (`3`, `production`, `latest`).
//!
//! Names end up in URLs, object-store keys, Kubernetes objects and log lines, so they are held
//! to one conservative pattern instead of being escaped everywhere.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ValidationError};

/// The pattern every model, alias and endpoint name must match, as shown in error messages.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$ (no `..`)";

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// The alias every model has without setting it: its newest active version.
pub const LATEST: &str = "latest";

/// Checks a name of kind `what` ("model", "alias", "endpoint") against [`NAME_PATTERN`].
///
/// # Errors
/// [`ValidationError::BadRequest`] that quotes the pattern and says what broke it.
pub fn validate(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(ValidationError::BadRequest(format!(
            "invalid {what} name {}: {why}; names must match {NAME_PATTERN}",
            printable(name)
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!(
            "it is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("it contains {}", describe_char(c)));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("it must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("it contains `..`");
    }
    Ok(())
}

/// Checks an alias name: a valid name that is not all digits (those are version numbers) and not
/// the reserved `latest`.
///
/// # Errors
/// [`ValidationError::BadRequest`] naming the rule that failed.
pub fn validate_alias(alias: &str) -> Result<()> {
    validate("alias", alias)?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::BadRequest(format!(
            "invalid alias name `{alias}`: an alias cannot be all digits, those name versions"
        )));
    }
    if alias == LATEST {
        return Err(ValidationError::BadRequest(
            "invalid alias name `latest`: it is reserved for the newest active version".into(),
        ));
    }
    Ok(())
}

/// How a request names one version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VersionRef {
    /// A version number, 1-based.
    Number(i64),
    /// An alias, or `latest`.
    Alias(String),
}

impl VersionRef {
    /// Parses the `{v}` of a URL or the part after `:`/`@` in `name:3` / `name@production`:
    /// digits are a version number, anything else an alias (a leading `@` is allowed).
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] for version 0, numbers out of range, and invalid alias names.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.strip_prefix('@').unwrap_or(text);
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
                _ => Err(ValidationError::BadRequest(format!(
                    "invalid version `{text}`: versions are numbered from 1"
                ))),
            };
        }
        if text != LATEST {
            validate_alias(text).map_err(|e| {
                ValidationError::BadRequest(format!(
                    "invalid version {}: a version is a number from 1, `latest` or an alias, and as an alias: {}",
                    printable(text),
                    e
                ))
            })?;
        }
        Ok(VersionRef::Alias(text.to_string()))
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Number(n) => write!(f, "{n}"),
            VersionRef::Alias(a) => write!(f, "@{a}"),
        }
    }
}

/// A reference to a version of a model, as written on the command line or in a policy:
/// `name:3`, `name@production`, or `name` (its newest active version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model's name.
    pub name: String,
    /// Which of its versions.
    pub version: VersionRef,
}

impl ModelRef {
    /// Parses `name`, `name:V` or `name@ALIAS`.
    ///
    /// # Errors
    /// [`ValidationError::BadRequest`] when the name or the version part is invalid.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, version) = if let Some((name, alias)) = text.split_once('@') {
            (name, VersionRef::parse(alias)?)
        } else if let Some((name, v)) = text.split_once(':') {
            match VersionRef::parse(v)? {
                number @ VersionRef::Number(_) => (name, number),
                VersionRef::Alias(_) => {
                    return Err(ValidationError::BadRequest(format!(
                        "invalid model reference {}: after `:` comes a version number; use `@` for an alias",
                        printable(text)
                    )));
                }
            }
        } else {
            (text, VersionRef::Alias(LATEST.into()))
        };
        validate("model", name)?;
        Ok(ModelRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            VersionRef::Number(n) => write!(f, "{}:{n}", self.name),
            VersionRef::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// Longest prediction id (a request's `id`, or the `x-request-id` it arrived with) in bytes:
/// ids are kept until their feedback arrives, so their size is what a client could fill memory
/// (or the shared index) with.
pub const MAX_ID_BYTES: usize = 256;

/// Checks a client-supplied prediction id: 1 to [`MAX_ID_BYTES`] bytes, no control characters.
/// `what` names where it came from (`` `id` ``, `x-request-id`).
///
/// # Errors
/// [`ValidationError::BadRequest`] naming the limit or the character.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(ValidationError::BadRequest(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(ValidationError::BadRequest(format!(
            "{what} is {} bytes long; ids are at most {MAX_ID_BYTES} bytes",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(ValidationError::BadRequest(format!(
            "{what} {} contains {}, which ids may not",
            printable(id),
            describe_char(c)
        )));
    }
    Ok(())
}

/// Quotes user input for an error message with control characters escaped and length capped, so
/// an error can neither forge log lines nor grow without bound.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    format!("`{out}`")
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("the character U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prediction_ids_are_capped_at_256_bytes_without_control_characters() {
        assert!(validate_id("`id`", &"a".repeat(MAX_ID_BYTES)).is_ok());
        assert!(validate_id("`id`", "订单-1 x").is_ok());
        let long = validate_id("`id`", &"a".repeat(MAX_ID_BYTES + 1)).unwrap_err();
        assert!(
            long.to_string()
                .contains("257 bytes long; ids are at most 256"),
            "{long}"
        );
        let control = validate_id("x-request-id", "a\nb").unwrap_err();
        assert!(control.to_string().contains("U+000A"), "{control}");
        assert!(validate_id("`id`", "").is_err());
    }

    use super::*;

    #[test]
    fn ordinary_model_names_are_accepted() {
        for name in ["fraud", "fraud-detector", "resnet50_v2.1", "A", "x9"] {
            validate("model", name).unwrap();
        }
    }

    #[test]
    fn hostile_names_are_rejected_with_the_pattern() {
        let long = "a".repeat(300);
        for name in [
            "", "a/b", "..", "a..b", "-a", "a-", ".a", "a b", "a\nb", "a\u{0}b", "é", &long,
        ] {
            let err = validate("model", name).unwrap_err().to_string();
            assert!(err.contains(NAME_PATTERN), "{err}");
        }
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let err = validate("model", "a\nINFO forged").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("U+000A"), "{err}");
    }

    #[test]
    fn digits_are_versions_and_words_are_aliases() {
        assert_eq!(VersionRef::parse("3").unwrap(), VersionRef::Number(3));
        assert_eq!(
            VersionRef::parse("@prod").unwrap(),
            VersionRef::Alias("prod".into())
        );
        assert_eq!(
            VersionRef::parse("latest").unwrap(),
            VersionRef::Alias("latest".into())
        );
        assert!(VersionRef::parse("0").is_err());
        assert!(VersionRef::parse("99999999999999999999").is_err());
    }

    #[test]
    fn aliases_cannot_be_numbers_or_latest() {
        assert!(validate_alias("123").is_err());
        assert!(validate_alias("latest").is_err());
        validate_alias("production").unwrap();
    }

    #[test]
    fn model_refs_parse_all_three_forms() {
        assert_eq!(
            ModelRef::parse("m:2").unwrap().version,
            VersionRef::Number(2)
        );
        assert_eq!(
            ModelRef::parse("m@prod").unwrap().version,
            VersionRef::Alias("prod".into())
        );
        assert_eq!(
            ModelRef::parse("m").unwrap().version,
            VersionRef::Alias("latest".into())
        );
        assert!(ModelRef::parse("m:prod").is_err());
        assert!(ModelRef::parse("../m:1").is_err());
    }
}
