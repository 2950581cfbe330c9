//! What creating a `ModelDeployment` lets its author do, and the operator's limits on it.
//!
//! The operator acts with its own service account: it reads the Secret `spec.registry.tokenSecret`
//! names and sends that token to `spec.registry.url`, and it creates a Deployment running
//! `spec.image`. Unchecked, an author who may only create ModelDeployments could send any
//! Secret of the namespace to a server of theirs, or run any image there. So:
//!
//! - the operator reads only Secrets labelled [`TOKEN_SECRET_LABEL`]`=true` (the chart labels the
//!   tokens Secret it generates; label your own);
//! - `--allowed-registry URL` (repeatable) restricts `spec.registry.url` to those registries
//!   (the URL itself, or a path under it);
//! - `--allowed-image PREFIX` (repeatable) restricts `spec.image` to images starting with one of
//!   them (the operator's default image is always allowed).
//!
//! Without the two lists, any registry URL and any image are accepted: anyone who may create a
//! ModelDeployment in a namespace may then run any image there (as with a Deployment) and send
//! the labelled registry tokens of that namespace anywhere. The operator says so at start.

use crate::crd::{ModelDeploymentSpec, SpecError};

/// The label a Secret must carry (value `true`) for the operator to read a registry token in it.
pub const TOKEN_SECRET_LABEL: &str = "ferry.dev/registry-token";

/// The operator-side allow-lists; empty lists allow everything.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Registry URLs a resource may name (exactly, or a path under one).
    pub registries: Vec<String>,
    /// Prefixes of the images a resource may run.
    pub images: Vec<String>,
}

impl Trust {
    /// Checks a resource's registry URL and image against the lists.
    ///
    /// # Errors
    /// [`SpecError`] naming the field, the value and what is allowed.
    pub fn check(&self, spec: &ModelDeploymentSpec, default_image: &str) -> Result<(), SpecError> {
        let mut problems = Vec::new();
        let url = spec.registry.url.trim();
        if !self.registries.is_empty() && !self.registries.iter().any(|a| registry_matches(url, a))
        {
            problems.push(format!(
                "registry.url: `{url}` is not a registry this operator may send tokens to \
                 (allowed: {})",
                self.registries.join(", ")
            ));
        }
        if let Some(image) = spec
            .image
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            && image != default_image
            && !self.images.is_empty()
            && !self
                .images
                .iter()
                .any(|prefix| image.starts_with(prefix.as_str()))
        {
            problems.push(format!(
                "image: `{image}` is not an image this operator may run (allowed: images \
                 starting with {}, or the default {default_image})",
                self.images.join(", ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError { problems })
        }
    }

    /// What the operator logs at start when a list is empty.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.registries.is_empty() {
            out.push(
                "no --allowed-registry: a ModelDeployment may send the labelled registry tokens of its namespace to any URL",
            );
        }
        if self.images.is_empty() {
            out.push("no --allowed-image: a ModelDeployment may run any image in its namespace");
        }
        out
    }
}

/// `url` is `allowed`, or a path under it (`…/` boundaries: `http://a:8080` does not allow
/// `http://a:80800` nor `http://a:8080.evil`).
fn registry_matches(url: &str, allowed: &str) -> bool {
    let (url, allowed) = (
        url.trim_end_matches('/'),
        allowed.trim().trim_end_matches('/'),
    );
    !allowed.is_empty()
        && (url == allowed
            || url
                .strip_prefix(allowed)
                .is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, image: Option<&str>) -> ModelDeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "model": "fraud",
            "alias": "production",
            "registry": {"url": url},
            "auth": {"tokensSecret": {"name": "tokens", "key": "serving-tokens"}},
            "image": image,
        }))
        .unwrap()
    }

    #[test]
    fn empty_lists_allow_everything_and_say_so() {
        let trust = Trust::default();
        assert!(
            trust
                .check(&spec("http://evil.example", Some("evil/miner")), "ferry:1")
                .is_ok()
        );
        assert_eq!(trust.warnings().len(), 2);
    }

    #[test]
    fn a_registry_outside_the_list_is_refused_naming_the_field() {
        let trust = Trust {
            registries: vec!["http://ferry-registry.ferry.svc:8080/".into()],
            images: vec![],
        };
        for ok in [
            "http://ferry-registry.ferry.svc:8080",
            "http://ferry-registry.ferry.svc:8080/",
            "http://ferry-registry.ferry.svc:8080/sub",
        ] {
            assert!(trust.check(&spec(ok, None), "ferry:1").is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://ferry-registry.ferry.svc:80800",
            "http://ferry-registry.ferry.svc:8080.evil.example",
            "",
        ] {
            let err = trust.check(&spec(bad, None), "ferry:1").unwrap_err();
            assert!(err.problems[0].starts_with("registry.url:"), "{err:?}");
        }
    }

    #[test]
    fn an_image_outside_the_prefixes_is_refused_but_the_default_always_runs() {
        let trust = Trust {
            registries: vec![],
            images: vec!["ghcr.io/ferry-ml/".into()],
        };
        let url = "http://r";
        assert!(
            trust
                .check(&spec(url, Some("ghcr.io/ferry-ml/ferry:0.2.0")), "x:1")
                .is_ok()
        );
        assert!(trust.check(&spec(url, None), "x:1").is_ok());
        assert!(
            trust
                .check(
                    &spec(url, Some("localhost/ferry:e2e")),
                    "localhost/ferry:e2e"
                )
                .is_ok()
        );
        let err = trust
            .check(&spec(url, Some("docker.io/evil/miner")), "x:1")
            .unwrap_err();
        assert!(err.problems[0].starts_with("image:"), "{err:?}");
    }
}
