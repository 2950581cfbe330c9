//! Request ids: UUIDv4 text from a per-thread generator. `Uuid::new_v4()` asks the kernel for
//! randomness on every call, a system call per request on the inference path; ids need to be
//! unique, not secret, so a fast generator seeded once per thread serves them.

use std::cell::RefCell;

use axum::http::{HeaderValue, Request};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes `x-request-id` values for requests that arrive without one.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastUuid;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// A random (version 4) UUID, hyphenated.
pub fn new_id() -> String {
    let bits: u128 = RNG.with(|rng| rng.borrow_mut().random());
    uuid::Builder::from_random_bytes(bits.to_le_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

impl MakeRequestId for FastUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&new_id()).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
