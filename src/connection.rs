//! How long a client connection may stay open without doing anything.
//!
//! hyper closes an HTTP/1 connection whose request headers are slow (`--header-read-timeout`),
//! but nothing closes a socket that never sends a byte (protocol detection waits for one), one
//! that sent half of the HTTP/2 preface, or an HTTP/2 connection that never opens a stream: ten
//! thousand of them would hold every `--max-connections` slot. Each connection therefore gets a
//! watchdog ([`Activity::expired`]):
//!
//! - until its first request arrives (headers complete, on either protocol), it may live
//!   `--header-read-timeout` from its accept;
//! - afterwards, while no request is in flight (a response still streaming its body counts as in
//!   flight), it may stay idle `--idle-timeout` since the last request ended.
//!
//! Requests in flight are bounded by their own deadlines (inference, uploads, long polls); HTTP/2
//! keep-alive pings close the connections of peers that went away mid-request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::response::Response;
use futures::future::BoxFuture;
use tokio::time::Instant;

/// What one connection is doing: requests in flight, and when it last started or ended one.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// When the last request started or ended; `None` before the first.
    last: Mutex<Option<Instant>>,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(None),
        })
    }

    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn last(&self) -> Option<Instant> {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request started; it ends when the returned guard is dropped.
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// When this connection must be closed if nothing happens until then; `None` while a
    /// request is in flight.
    fn deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last() {
            None => self.accepted + first_request,
            Some(last) => last + idle,
        })
    }

    /// Resolves once the connection has outlived its deadline: no first request within
    /// `first_request` of its accept, or idle (nothing in flight) for `idle`.
    pub async fn expired(&self, first_request: Duration, idle: Duration) {
        // While requests are in flight, look again at this pace.
        let check = idle.min(first_request).max(Duration::from_millis(100));
        loop {
            let wake = match self.deadline(first_request, idle) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => deadline,
                None => Instant::now() + check,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request in flight on its connection, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The application as one connection's service: counts its requests in flight, until their
/// response bodies end (or are dropped with the connection).
#[derive(Clone)]
pub struct Tracked {
    app: axum::Router,
    activity: Arc<Activity>,
}

impl Tracked {
    /// `app` serving the connection whose activity is `activity`.
    pub fn new(app: axum::Router, activity: Arc<Activity>) -> Self {
        Tracked { app, activity }
    }
}

impl<B> tower::Service<http::Request<B>> for Tracked
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = self.activity.start();
        let app = self.app.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(app, request.map(Body::new)).await?;
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
struct Guarded {
    body: Body,
    _guard: InFlight,
}

impl HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_without_a_request_expires_after_the_first_request_deadline() {
        let activity = Activity::new();
        let start = Instant::now();
        activity
            .expired(Duration::from_millis(300), Duration::from_secs(60))
            .await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_request_in_flight_holds_the_connection_and_idleness_counts_from_its_end() {
        let activity = Activity::new();
        let guard = activity.start();
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move {
                activity
                    .expired(Duration::from_millis(100), Duration::from_millis(400))
                    .await;
                Instant::now()
            })
        };
        // Longer than both limits: the request in flight keeps its connection.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!watch.is_finished(), "a long request keeps its connection");
        let ended = Instant::now();
        drop(guard);
        let expired = watch.await.unwrap();
        assert!(
            expired >= ended + Duration::from_millis(400),
            "{:?}",
            expired - ended
        );
    }
}

/// Connections open per client address, for `--max-connections-per-client`: one client cannot
/// take every `--max-connections` slot. An address is forgotten when its last connection
/// closes, so the table never holds more entries than there are connections.
#[derive(Debug, Clone)]
pub struct PerClient {
    limit: usize,
    open: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// A connection's place in [`PerClient`]; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    table: PerClient,
    address: std::net::IpAddr,
}

impl PerClient {
    /// At most `limit` connections per address; 0 means no limit.
    pub fn new(limit: usize) -> Self {
        PerClient {
            limit,
            open: Arc::default(),
        }
    }

    /// A place for one more connection from `address`, or `None` when it has `limit` open.
    pub fn admit(&self, address: std::net::IpAddr) -> Option<ClientSlot> {
        if self.limit == 0 {
            return Some(ClientSlot {
                table: self.clone(),
                address,
            });
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            address,
        })
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if self.table.limit == 0 {
            return;
        }
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod per_client_tests {
    use super::*;

    #[test]
    fn each_address_gets_its_limit_and_closed_connections_free_their_place() {
        let table = PerClient::new(2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.admit(a).unwrap();
        let _second = table.admit(a).unwrap();
        assert!(table.admit(a).is_none());
        let _other = table.admit(b).unwrap();
        drop(first);
        let _again = table.admit(a).unwrap();
        assert!(table.admit(a).is_none());
        assert_eq!(table.addresses(), 2);
    }

    #[test]
    fn addresses_are_forgotten_with_their_last_connection() {
        let table = PerClient::new(1);
        for i in 0..1000u32 {
            let slot = table
                .admit(std::net::IpAddr::from(i.to_be_bytes()))
                .unwrap();
            drop(slot);
        }
        assert_eq!(table.addresses(), 0);
        let unlimited = PerClient::new(0);
        let slots: Vec<_> = (0..100)
            .map(|_| unlimited.admit("10.0.0.1".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(slots.len(), 100);
        assert_eq!(unlimited.addresses(), 0);
    }
}
