//! The canary split and shadow sampling as pure functions of the request's key.
//!
//! Every decision is a stable hash of (endpoint, key) mapped to `[0, 1)` and compared with a
//! weight, so every replica, before and after a restart, on any Rust version, routes a given key
//! the same way: that is what makes `sticky_header` sticky across a fleet, and a replayed
//! request sampled for shadowing the same way it was the first time.

use ferry_api::records::EndpointPolicy;
pub use ferry_api::traffic::Route;
use sha2::{Digest, Sha256};

/// Prefix of the split's hash input. Versioned so a deliberate change of algorithm is a new
/// prefix (and a new golden value), never a silent reshuffle of users between versions.
const SPLIT_DOMAIN: &[u8] = b"ferry/split/v1";

/// Prefix of the shadow sampling hash: a different domain makes sampling independent of the
/// split, so a shadow sees canary and stable traffic in their true proportions.
const SHADOW_DOMAIN: &[u8] = b"ferry/shadow/v1";

/// Where `key` falls for `endpoint`, uniformly in `[0, 1)`.
///
/// SHA-256 of the domain prefix and the length-prefixed endpoint and key (lengths keep
/// `("ab", "c")` and `("a", "bc")` apart), whose first 53 bits become the fraction: exactly the
/// precision of an `f64` mantissa, so every value is representable and strictly below 1.
#[must_use]
pub fn bucket(endpoint: &str, key: &str) -> f64 {
    unit_interval(SPLIT_DOMAIN, &[endpoint.as_bytes(), key.as_bytes()])
}

/// Routes `key` on `endpoint`: to the canary when its [`bucket`] lies below `canary_weight`.
///
/// A weight of 0 (or none, or NaN) never routes to the canary and a weight of 1 always does;
/// raising the weight only ever moves keys from stable to canary, never back, so a progressing
/// rollout does not bounce users between versions.
#[must_use]
pub fn route(endpoint: &str, key: &str, canary_weight: Option<f64>) -> Route {
    match canary_weight {
        // NaN compares false, so a malformed weight means stable.
        Some(weight) if bucket(endpoint, key) < weight => Route::Canary,
        _ => Route::Stable,
    }
}

/// Routes `key` by `policy` and names the version that answers.
#[must_use]
pub fn route_policy(endpoint: &str, key: &str, policy: &EndpointPolicy) -> (Route, i64) {
    let route = route(endpoint, key, policy.canary.as_ref().map(|c| c.weight));
    (route, route.version_in(policy))
}

/// Whether the request keyed `key` is mirrored to shadow version `shadow_version` at
/// `sample_rate` (0 never, 1 always).
///
/// Hash-based rather than random so a replayed request is sampled the same way, and hashed in
/// a domain of its own so it is independent of the canary split and of the other shadows.
#[must_use]
pub fn sampled(endpoint: &str, shadow_version: i64, key: &str, sample_rate: f64) -> bool {
    let version = shadow_version.to_le_bytes();
    unit_interval(
        SHADOW_DOMAIN,
        &[endpoint.as_bytes(), &version, key.as_bytes()],
    ) < sample_rate
}

/// The top 53 bits of SHA-256(domain ‖ (len ‖ part)…) as a fraction of 2^53.
fn unit_interval(domain: &[u8], parts: &[&[u8]]) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    for part in parts {
        // usize → u64 is lossless on every platform Rust supports.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    let bits = u64::from_be_bytes(top) >> 11;
    // Exact: both numbers are below 2^53.
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::records::CanaryPolicy;

    /// Deterministic stand-ins for random request ids (UUID-shaped, from SplitMix64), so the
    /// statistical tests below pass or fail the same way on every run.
    fn keys(n: u64) -> Vec<String> {
        let mut state = 0x5EED_u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| uuid::Uuid::from_u64_pair(next(), next()).to_string())
            .collect()
    }

    fn canary_share(endpoint: &str, keys: &[String], weight: f64) -> usize {
        keys.iter()
            .filter(|k| route(endpoint, k, Some(weight)) == Route::Canary)
            .count()
    }

    /// Whether `hits` out of `n` lies in the 99.9% normal-approximation interval around `p`.
    fn within_binomial_interval(hits: usize, n: usize, p: f64) -> bool {
        let n = n as f64;
        let half_width = 3.29 * (n * p * (1.0 - p)).sqrt();
        (hits as f64 - n * p).abs() <= half_width
    }

    #[test]
    fn the_canary_share_of_ten_thousand_keys_is_within_the_binomial_interval_of_the_weight() {
        let random = keys(10_000);
        let sequential: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        for keys in [&random, &sequential] {
            for weight in [0.001, 0.01, 0.05, 0.5, 0.9] {
                let hits = canary_share("fraud", keys, weight);
                assert!(
                    within_binomial_interval(hits, keys.len(), weight),
                    "weight {weight}: {hits} of {} went to the canary",
                    keys.len()
                );
            }
        }
    }

    #[test]
    fn weight_zero_routes_nothing_and_weight_one_routes_everything_to_the_canary() {
        let keys = keys(10_000);
        assert_eq!(canary_share("fraud", &keys, 0.0), 0);
        assert_eq!(canary_share("fraud", &keys, 1.0), keys.len());
        assert_eq!(canary_share("fraud", &keys, f64::NAN), 0);
        assert_eq!(canary_share("fraud", &keys, -0.5), 0);
        assert_eq!(canary_share("fraud", &keys, 1.5), keys.len());
        assert!(
            keys.iter()
                .all(|k| route("fraud", k, None) == Route::Stable)
        );
    }

    #[test]
    fn the_same_key_always_gets_the_same_route() {
        for key in keys(1_000) {
            let first = route("fraud", &key, Some(0.3));
            for _ in 0..3 {
                assert_eq!(route("fraud", &key, Some(0.3)), first);
            }
            assert_eq!(bucket("fraud", &key), bucket("fraud", &key.clone()));
        }
    }

    #[test]
    fn raising_the_weight_only_moves_keys_from_stable_to_canary() {
        let keys = keys(10_000);
        let weights = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0];
        for key in &keys {
            let routes: Vec<Route> = weights
                .iter()
                .map(|w| route("fraud", key, Some(*w)))
                .collect();
            // Once canary, canary for every larger weight.
            let first_canary = routes.iter().position(|r| *r == Route::Canary);
            if let Some(i) = first_canary {
                assert!(routes[i..].iter().all(|r| *r == Route::Canary), "{key}");
            }
        }
    }

    #[test]
    fn endpoints_with_different_names_split_the_same_keys_independently() {
        let keys = keys(10_000);
        let both = keys
            .iter()
            .filter(|k| {
                route("fraud", k, Some(0.5)) == Route::Canary
                    && route("churn", k, Some(0.5)) == Route::Canary
            })
            .count();
        // Independent halves overlap on a quarter of the keys.
        assert!(within_binomial_interval(both, keys.len(), 0.25), "{both}");
    }

    #[test]
    fn endpoint_and_key_boundaries_cannot_be_shifted_to_forge_a_bucket() {
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
        assert_ne!(bucket("", "abc"), bucket("abc", ""));
    }

    #[test]
    fn the_bucket_of_a_known_key_never_changes() {
        // Pinned: a different value means every user of every endpoint was reshuffled between
        // versions. Change the algorithm only with a new domain prefix, deliberately.
        assert_eq!(bucket("fraud", "user-42"), GOLDEN_FRAUD_USER_42);
        // Shadow sampling of version 3 hashes the version as 8 little-endian bytes in between.
        let shadow = unit_interval(SHADOW_DOMAIN, &[b"fraud", &3_i64.to_le_bytes(), b"user-42"]);
        assert_eq!(shadow, 0.221_845_275_004_585_62);
        assert!(sampled("fraud", 3, "user-42", 0.222));
        assert!(!sampled("fraud", 3, "user-42", 0.221));
        for key in keys(1_000) {
            let b = bucket("fraud", &key);
            assert!((0.0..1.0).contains(&b), "{b}");
        }
    }

    /// Reproducible outside Rust, e.g. in Python: `h = sha256(b"ferry/split/v1");
    /// h.update((5).to_bytes(8, "little") + b"fraud" + (7).to_bytes(8, "little") + b"user-42");
    /// (int.from_bytes(h.digest()[:8], "big") >> 11) / 2**53`.
    const GOLDEN_FRAUD_USER_42: f64 = 0.924_375_150_022_562;

    #[test]
    fn shadow_sampling_is_independent_of_the_canary_split() {
        let keys = keys(10_000);
        let n = keys.len() as f64;
        let pairs: Vec<(f64, f64)> = keys
            .iter()
            .map(|k| {
                let canary = f64::from(u8::from(route("fraud", k, Some(0.5)) == Route::Canary));
                let shadow = f64::from(u8::from(sampled("fraud", 3, k, 0.5)));
                (canary, shadow)
            })
            .collect();
        let (mean_c, mean_s) = pairs
            .iter()
            .fold((0.0, 0.0), |(c, s), (x, y)| (c + x / n, s + y / n));
        let cov = pairs
            .iter()
            .map(|(x, y)| (x - mean_c) * (y - mean_s))
            .sum::<f64>()
            / n;
        let sd = |m: f64| (m * (1.0 - m)).sqrt();
        let correlation = cov / (sd(mean_c) * sd(mean_s));
        // Under independence the correlation is ~N(0, 1/n): 3.29/sqrt(n) ≈ 0.033.
        assert!(correlation.abs() < 3.29 / n.sqrt(), "{correlation}");
        assert!(within_binomial_interval(
            (mean_s * n).round() as usize,
            keys.len(),
            0.5
        ));
    }

    #[test]
    fn each_shadow_version_is_sampled_independently_and_at_its_rate() {
        let keys = keys(10_000);
        let v3 = keys.iter().filter(|k| sampled("fraud", 3, k, 0.1)).count();
        let both = keys
            .iter()
            .filter(|k| sampled("fraud", 3, k, 0.5) && sampled("fraud", 4, k, 0.5))
            .count();
        assert!(within_binomial_interval(v3, keys.len(), 0.1), "{v3}");
        assert!(within_binomial_interval(both, keys.len(), 0.25), "{both}");
        assert!(keys.iter().all(|k| !sampled("fraud", 3, k, 0.0)));
        assert!(keys.iter().all(|k| sampled("fraud", 3, k, 1.0)));
    }

    #[test]
    fn a_replayed_request_is_sampled_the_same_way() {
        for key in keys(1_000) {
            assert_eq!(
                sampled("fraud", 7, &key, 0.2),
                sampled("fraud", 7, &key, 0.2)
            );
        }
    }

    #[test]
    fn the_route_names_its_version_in_the_policy() {
        let mut policy: EndpointPolicy = serde_json::from_value(serde_json::json!({
            "model": "fraud", "stable": 1
        }))
        .unwrap();
        assert_eq!(Route::Canary.version_in(&policy), 1);
        assert_eq!(
            route_policy("fraud", "user-42", &policy),
            (Route::Stable, 1)
        );
        policy.canary = Some(CanaryPolicy {
            version: 2,
            weight: 1.0,
        });
        assert_eq!(Route::Stable.version_in(&policy), 1);
        assert_eq!(
            route_policy("fraud", "user-42", &policy),
            (Route::Canary, 2)
        );
        assert_eq!(Route::Canary.as_str(), "canary");
        assert_eq!(Route::Stable.to_string(), "stable");
        assert_eq!(serde_json::to_string(&Route::Canary).unwrap(), "\"canary\"");
    }
}
