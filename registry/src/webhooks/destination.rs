//! Where webhooks may be sent: not into the registry's own network by default.
//!
//! Whoever creates a webhook (an admin token) picks the URL the registry POSTs to, and the
//! deliveries API shows what each attempt got back. Without a check that makes the registry a
//! proxy into places only it can reach: the cloud metadata service (`169.254.169.254`), its own
//! loopback ports, the cluster's private addresses. So, unless `--webhook-allow-private`:
//!
//! - a URL whose host is an IP address in a non-public range is refused when the webhook is
//!   created (400 naming the range), and again before each attempt (for webhooks created while
//!   private destinations were allowed);
//! - a host name is resolved at connect time by [`GuardedResolver`], which drops every
//!   non-public address it resolves to and fails the attempt when none is left: a name cannot
//!   be pointed at `127.0.0.1` later (DNS rebinding) to get past a check made at creation.
//!
//! With an HTTP proxy configured for the registry (`HTTPS_PROXY`), the proxy resolves names
//! and is where such rules belong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The range `ip` lies in when it is not a public unicast address, else `None`.
pub fn private_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4 inside IPv6 reaches the IPv4 address: judge that one.
            if let Some(v4) = embedded_v4(v6) {
                return private_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if first & 0xff00 == 0xff00 {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn private_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata services live here)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return Some(tail);
    }
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            (s[1] & 0xff) as u8,
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
        ));
    }
    None
}

/// Why a webhook may not be sent to `url` when private destinations are not allowed: its host
/// is an IP address in a non-public range, or `localhost`. Host names are judged at connect
/// time by [`GuardedResolver`].
pub fn refused_literal(url: &url::Url) -> Option<String> {
    let range = match url.host()? {
        url::Host::Ipv4(v4) => private_range(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => private_range(IpAddr::V6(v6)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost")).then_some("loopback")
        }
    }?;
    Some(format!(
        "url points at a {range} address; webhooks go to public addresses unless the registry \
         runs with --webhook-allow-private"
    ))
}

/// Resolves webhook host names and keeps only public addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    timeout: Duration,
}

impl GuardedResolver {
    /// A resolver that gives up on a lookup after `timeout`.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(GuardedResolver { timeout })
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let timeout = self.timeout;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| DestinationError(format!("resolving {host} timed out")))?
                .map_err(|e| DestinationError(format!("resolving {host} failed: {e}")))?;
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.partition(|a| private_range(a.ip()).is_none());
            if public.is_empty() {
                let why = refused
                    .first()
                    .and_then(|a| private_range(a.ip()))
                    .unwrap_or("unresolvable");
                return Err(DestinationError(format!(
                    "{host} resolves only to non-public addresses ({why}); webhooks go to public \
                     addresses unless the registry runs with --webhook-allow-private"
                ))
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// A destination the resolver refused or could not resolve.
#[derive(Debug)]
pub struct DestinationError(pub String);

impl std::fmt::Display for DestinationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DestinationError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ip: &str) -> Option<&'static str> {
        private_range(ip.parse().unwrap())
    }

    #[test]
    fn non_public_ranges_are_named_and_public_addresses_pass() {
        for (ip, named) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade"),
            ("100.127.255.254", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "multicast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            let got = range(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(got.contains(named), "{ip}: {got}");
        }
        for ip in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn literal_urls_in_private_ranges_and_localhost_are_refused_names_are_left_to_connect_time() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:1/",
            "http://[::1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            let refused = refused_literal(&url.parse().unwrap()).unwrap_or_else(|| panic!("{url}"));
            assert!(refused.contains("--webhook-allow-private"), "{refused}");
        }
        for url in ["https://ci.example.com/hook", "http://8.8.8.8/"] {
            assert_eq!(refused_literal(&url.parse().unwrap()), None, "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_only_to_private_addresses() {
        let resolver = GuardedResolver::new(Duration::from_secs(5));
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("non-public") && err.contains("loopback"),
            "{err}"
        );
    }
}
