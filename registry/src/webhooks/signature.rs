//! Webhook signatures: `X-Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.
//!
//! The MAC covers `"<t>.<body>"`: the timestamp is signed together with the exact body bytes, so
//! a captured request cannot be replayed later with a fresh timestamp. A receiver verifies by
//!
//! 1. splitting the header at `,` into `t=` and one or more `v1=` parts (a future key rotation
//!    may send several `v1`; any match is enough);
//! 2. computing `HMAC-SHA256(secret, t + "." + raw_body)` over the raw body bytes as received
//!    (before any JSON parsing) and comparing it with a `v1` in constant time;
//! 3. rejecting the request when `|now - t|` exceeds a tolerance (5 minutes is usual) — that makes
//!    replays of old captured deliveries detectable;
//! 4. deduplicating on `X-Ferry-Delivery`, which stays the same across retries of one delivery.
//!
//! In Python:
//!
//! ```text
//! t, sigs = None, []
//! for part in header.split(","):
//!     k, _, v = part.partition("=")
//!     if k == "t": t = v
//!     elif k == "v1": sigs.append(v)
//! expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
//! ok = any(hmac.compare_digest(expected, s) for s in sigs) and abs(time.time() - int(t)) <= 300
//! ```
//!
//! [`verify`] does the same in Rust.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-ferry-signature";
/// The header carrying the delivery id (the same on every attempt of one delivery).
pub const DELIVERY_HEADER: &str = "x-ferry-delivery";
/// The header carrying the event type.
pub const EVENT_HEADER: &str = "x-ferry-event";

/// The tolerance receivers are advised to use for the signature's timestamp.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail; the
    // fallback keeps the function total without a panic path.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Ferry-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// The timestamp is further from now than the tolerance: possibly a replayed request.
    #[error(
        "the signature's timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)"
    )]
    Stale {
        /// `now - t` in seconds (negative for a timestamp in the future).
        age_secs: i64,
        /// The tolerance that was exceeded.
        tolerance_secs: i64,
    },
    /// No `v1` matches the body and secret.
    #[error("no signature matches the body")]
    Mismatch,
}

/// Checks a received `X-Ferry-Signature` against the raw `body`, the shared `secret` and the
/// receiver's clock `now` (Unix seconds), allowing `tolerance_secs` of clock difference.
///
/// # Errors
/// [`SignatureError`] saying why the request must be rejected.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp: Option<i64> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => candidates.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
            // Unknown schemes are skipped, so receivers keep working when one is added.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now.saturating_sub(timestamp);
    if age_secs.saturating_abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    let expected = mac(secret, timestamp, body);
    if candidates
        .iter()
        .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_against_the_same_secret_body_and_time() {
        let header = sign("s3cret-s3cret-s3cret", 1_700_000_000, b"{\"id\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        verify(
            "s3cret-s3cret-s3cret",
            &header,
            b"{\"id\":1}",
            1_700_000_010,
            300,
        )
        .unwrap();
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_computation() {
        // The MAC is over "<t>.<body>", computed here without the module's helper.
        let header = sign("key", 42, b"body");
        let mut mac = HmacSha256::new_from_slice(b"key").unwrap();
        mac.update(b"42.body");
        let hexed = hex::encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("t=42,v1={hexed}"));
    }

    #[test]
    fn a_changed_body_or_secret_is_a_mismatch() {
        let header = sign("secret-one-secret-one", 100, b"a");
        assert_eq!(
            verify("secret-one-secret-one", &header, b"b", 100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("secret-two-secret-two", &header, b"a", 100, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_timestamp_is_refused_as_a_possible_replay() {
        let header = sign("secret-one-secret-one", 1_000, b"a");
        assert_eq!(
            verify("secret-one-secret-one", &header, b"a", 1_000 + 301, 300),
            Err(SignatureError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn a_replayed_body_with_a_forged_newer_timestamp_does_not_verify() {
        let header = sign("secret-one-secret-one", 1_000, b"a");
        let forged = header.replace("t=1000", "t=5000");
        assert_eq!(
            verify("secret-one-secret-one", &forged, b"a", 5_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify("k", bad, b"", 1, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
