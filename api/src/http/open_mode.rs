//! What an open server (no tokens: every caller is admin, loopback only) refuses so that a web
//! page in the user's browser cannot drive it.
//!
//! Loopback alone does not keep browsers out: any page can make the browser send requests to
//! `127.0.0.1`, and a DNS name the attacker controls can be re-pointed at `127.0.0.1` after the
//! page loaded (DNS rebinding), which makes the answers readable to that page. So, in open mode:
//!
//! - **Host**: only `localhost`, `*.localhost`, `127.0.0.0/8` and `[::1]` (any port) are
//!   answered; a rebound name arrives with the attacker's host name and is refused.
//! - **Origin**: a request that changes something (any method but GET, HEAD, OPTIONS) carrying
//!   an `Origin` other than the request's own (`null` included) is refused: that is a page on
//!   another site posting cross-site, e.g. a form that uploads a model.
//! - **A non-simple header on writes**: a request needing the `write` role or more must carry
//!   a header a cross-site page cannot send without a CORS preflight (which Ferry never
//!   grants): a `Content-Type` other than the three form types, or [`CLIENT_HEADER`]. This covers
//!   browsers that do not send `Origin` on a form post. Ferry's CLI and client send the header;
//!   JSON calls (`curl -H 'content-type: application/json'`) pass as they are.
//!
//! With tokens configured none of this applies: a browser never attaches a bearer token by
//! itself, so a cross-site request is simply unauthenticated.

use axum::http::{HeaderMap, HeaderName, Method, Uri, header};

/// The header Ferry's own clients send on every request; in open mode, a write that is a
/// form post needs it.
pub const CLIENT_HEADER: HeaderName = HeaderName::from_static(crate::CLIENT_HEADER);

/// Why an open server refuses a request, or `None` when it may go on. `write` says whether the
/// request needs the `write` role or more.
pub fn refusal(method: &Method, uri: &Uri, headers: &HeaderMap, write: bool) -> Option<String> {
    let authority = request_authority(uri, headers);
    if let Some(authority) = &authority
        && !is_loopback_host(host_of(authority))
    {
        return Some(format!(
            "this server runs without tokens and answers only requests addressed to localhost \
             or a loopback address; Host `{}` is neither (a web page using DNS rebinding looks \
             like this). Configure tokens to serve it under other names.",
            printable(authority)
        ));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let same = authority
            .as_deref()
            .zip(origin_authority(&origin))
            .is_some_and(|(a, o)| a.eq_ignore_ascii_case(o));
        if !same {
            return Some(format!(
                "this server runs without tokens and refuses changes requested by another web \
                 site (Origin `{}`); configure tokens to accept cross-origin clients",
                printable(&origin)
            ));
        }
    }
    if write && !headers.contains_key(CLIENT_HEADER) && is_form_type(headers) {
        return Some(format!(
            "this server runs without tokens: a write sent as a form needs the `{CLIENT_HEADER}` \
             header (the ferry CLI sends it), so that no web page can send one cross-site"
        ));
    }
    None
}

/// `host[:port]` the request was sent to: HTTP/2's `:authority`, else the `Host` header.
fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(authority) = uri.authority() {
        return Some(authority.as_str().to_owned());
    }
    headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).trim().to_owned())
}

/// `host[:port]` of an `Origin` value (`scheme://host[:port]`); `None` for `null` and garbage.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    (matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The host of `host[:port]`, brackets kept for IPv6 (`[::1]:8080` → `[::1]`).
fn host_of(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host == "[::1]" {
        return true;
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// True when the body is of a type a cross-site form can send without a preflight (or has no
/// type at all).
fn is_form_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = String::from_utf8_lossy(value.as_bytes())
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain" | ""
    )
}

/// A client-sent value for an error message: bounded, control characters escaped.
fn printable(value: &str) -> String {
    let mut shown: String = value
        .chars()
        .take(100)
        .flat_map(char::escape_default)
        .collect();
    if value.chars().count() > 100 {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn check(method: Method, pairs: &[(&str, &str)], write: bool) -> Option<String> {
        refusal(
            &method,
            &Uri::from_static("/api/v1/models"),
            &headers(pairs),
            write,
        )
    }

    #[test]
    fn loopback_hosts_pass_and_every_other_name_is_refused() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "ferry.localhost:80",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
        ] {
            assert_eq!(check(Method::GET, &[("host", host)], false), None, "{host}");
        }
        for host in [
            "rebind.attacker.example",
            "rebind.attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "[::2]:8080",
            "0.0.0.0",
        ] {
            let refused = check(Method::GET, &[("host", host)], false).expect(host);
            assert!(refused.contains("DNS rebinding"), "{refused}");
        }
    }

    #[test]
    fn http2_authority_is_checked_like_a_host_header() {
        let uri = Uri::from_static("http://rebind.attacker.example:8080/api/v1/models");
        assert!(refusal(&Method::GET, &uri, &HeaderMap::new(), false).is_some());
        let uri = Uri::from_static("http://127.0.0.1:8080/api/v1/models");
        assert!(refusal(&Method::GET, &uri, &HeaderMap::new(), false).is_none());
    }

    #[test]
    fn foreign_and_null_origins_may_not_change_anything_but_may_read() {
        let host = ("host", "127.0.0.1:8080");
        let json = ("content-type", "application/json");
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
        ] {
            let refused = check(Method::POST, &[host, json, ("origin", origin)], false)
                .unwrap_or_else(|| panic!("{origin} was let through"));
            assert!(refused.contains("another web site"), "{refused}");
            assert!(check(Method::DELETE, &[host, ("origin", origin)], true).is_some());
            assert_eq!(check(Method::GET, &[host, ("origin", origin)], false), None);
        }
        assert_eq!(
            check(
                Method::POST,
                &[host, json, ("origin", "http://127.0.0.1:8080")],
                true
            ),
            None
        );
    }

    #[test]
    fn a_write_sent_as_a_form_needs_the_client_header() {
        let host = ("host", "127.0.0.1:8080");
        for form in [
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "text/plain;charset=utf-8",
        ] {
            let refused = check(Method::POST, &[host, ("content-type", form)], true).expect(form);
            assert!(refused.contains("x-ferry-client"), "{refused}");
            assert_eq!(
                check(
                    Method::POST,
                    &[
                        host,
                        ("content-type", form),
                        ("x-ferry-client", "ferry/0.1")
                    ],
                    true
                ),
                None
            );
            // Inference and feedback are not writes: `curl -d` without a type still works.
            assert_eq!(
                check(Method::POST, &[host, ("content-type", form)], false),
                None
            );
        }
        assert!(
            check(Method::POST, &[host], true).is_some(),
            "no type at all"
        );
        assert_eq!(
            check(
                Method::POST,
                &[host, ("content-type", "application/json")],
                true
            ),
            None
        );
    }

    #[test]
    fn refusals_do_not_echo_control_characters_or_unbounded_values() {
        let long = format!("{}.example", "a".repeat(5000));
        let refused = check(Method::GET, &[("host", &long)], false).unwrap();
        assert!(refused.len() < 800, "{}", refused.len());
    }
}
