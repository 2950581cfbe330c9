//! Prometheus metrics every Ferry server has: its HTTP requests by method, route template and
//! status, and the exposition of a registry of metrics at `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderValue, Method, Request, Response, header};
use axum::response::IntoResponse;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tower::{Layer, Service};

/// Latency buckets in seconds, from sub-millisecond inference to multi-second uploads.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Request counts and latencies by route template, shared by every router in the process.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    /// Registers the HTTP metrics in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ferry_http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_http_request_duration_seconds",
                "Time from receiving a request to sending its response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let in_flight = IntGauge::new(
            "ferry_http_requests_in_flight",
            "Requests being handled right now.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(HttpMetrics {
            requests,
            duration,
            in_flight,
        })
    }
}

/// The layer recording [`HttpMetrics`] around a router's routes. Every label comes from a fixed
/// set, whatever the client sends, so a client cannot grow the metrics: routes by their template
/// (`/api/v1/models/{name}`, never the raw path; `unmatched` for no route), methods by
/// [`method_label`], statuses by the code the server chose.
///
/// Written as a `tower` layer rather than `axum::middleware::from_fn`: that boxes the next
/// service and the future on every request, and a future dropped mid-request (the client went
/// away) never ran the code after its `await`, so the in-flight gauge only ever grew.
#[derive(Clone)]
pub struct RecordHttpLayer(Arc<HttpMetrics>);

impl RecordHttpLayer {
    /// Records into `metrics`.
    pub fn new(metrics: HttpMetrics) -> Self {
        RecordHttpLayer(Arc::new(metrics))
    }
}

impl<S> Layer<S> for RecordHttpLayer {
    type Service = RecordHttp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordHttp {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`RecordHttpLayer`].
#[derive(Clone)]
pub struct RecordHttp<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, B, R> Service<Request<B>> for RecordHttp<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.method());
        // `MatchedPath` is an `Arc<str>`: cloning it does not copy the route.
        let route = request.extensions().get::<MatchedPath>().cloned();
        self.metrics.in_flight.inc();
        RecordFuture {
            inner: self.inner.call(request),
            guard: InFlight {
                metrics: self.metrics.clone(),
                method,
                route,
                start: Instant::now(),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RecordHttp`]: the route's future, then the request's count and latency.
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

/// One request being handled: counted in the in-flight gauge until it is answered or dropped.
struct InFlight {
    metrics: Arc<HttpMetrics>,
    method: &'static str,
    route: Option<MatchedPath>,
    start: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl<F, R, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let guard = &*this.guard;
            let route = guard
                .route
                .as_ref()
                .map_or("unmatched", MatchedPath::as_str);
            let metrics = &guard.metrics;
            metrics
                .requests
                .with_label_values(&[guard.method, route, response.status().as_str()])
                .inc();
            metrics
                .duration
                .with_label_values(&[guard.method, route])
                .observe(guard.start.elapsed().as_secs_f64());
        }
        Poll::Ready(result)
    }
}

/// The metrics label of a method: the nine standard ones by name, anything a client invents as
/// `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// `GET /metrics`: open, or with `require_token` (and tokens configured) only for requests
/// carrying any valid token (401 otherwise): metric labels name models, endpoints and features.
pub fn route<S: Clone + Send + Sync + 'static>(
    registry: Arc<Registry>,
    tokens: &super::Tokens,
    require_token: bool,
) -> axum::routing::MethodRouter<S> {
    let tokens = (require_token && !tokens.is_open()).then(|| tokens.clone());
    axum::routing::get(move |headers: axum::http::HeaderMap| {
        let registry = registry.clone();
        let tokens = tokens.clone();
        async move {
            if let Some(tokens) = &tokens
                && super::auth::bearer(&headers)
                    .and_then(|presented| tokens.authenticate(presented))
                    .is_none()
            {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"ferry\"")],
                    "/metrics needs a bearer token on this server (--metrics-require-token)\n",
                )
                    .into_response();
            }
            expose(State(registry)).await
        }
    })
}

/// Handler for `GET /metrics`: the Prometheus text exposition of `registry`.
pub async fn expose(State(registry): State<Arc<Registry>>) -> axum::response::Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "encoding metrics failed");
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        for method in ["GET", "POST", "DELETE", "OPTIONS"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&m), method);
        }
        for invented in ["FOO", "GETT", &"X".repeat(4096)] {
            let m = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(
                method_label(&m),
                "other",
                "{}",
                &invented[..4.min(invented.len())]
            );
        }
    }

    fn counted(registry: &Registry) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        String::from_utf8(text).unwrap()
    }

    fn router(metrics: HttpMetrics) -> axum::Router {
        axum::Router::new()
            .route("/models/{name}", axum::routing::get(|| async { "ok" }))
            .route(
                "/forever",
                axum::routing::get(std::future::pending::<String>),
            )
            .layer(RecordHttpLayer::new(metrics))
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_method_and_status() {
        use tower::ServiceExt;
        let registry = Registry::new();
        let app = router(HttpMetrics::register(&registry).unwrap());
        for uri in ["/models/a", "/models/b", "/nowhere/12345"] {
            let request = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let text = counted(&registry);
        for line in [
            r#"ferry_http_requests_total{method="GET",route="/models/{name}",status="200"} 2"#,
            r#"ferry_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"ferry_http_request_duration_seconds_count{method="GET",route="/models/{name}"} 2"#,
            "ferry_http_requests_in_flight 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("/models/a"), "{text}");
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_leaves_the_in_flight_gauge() {
        use tower::ServiceExt;
        let registry = Registry::new();
        let metrics = HttpMetrics::register(&registry).unwrap();
        let app = router(metrics.clone());
        let request = Request::get("/forever")
            .body(axum::body::Body::empty())
            .unwrap();
        let mut pending = Box::pin(app.oneshot(request));
        // Polled until the handler runs (and waits forever), as when a client is being served.
        let polled = futures::poll!(pending.as_mut());
        assert!(polled.is_pending());
        assert_eq!(metrics.in_flight.get(), 1);
        // The client went away: hyper drops the future.
        drop(pending);
        assert_eq!(metrics.in_flight.get(), 0);
        assert!(
            !counted(&registry).contains("route=\"/forever\""),
            "an unanswered request has no status to count"
        );
    }
}
