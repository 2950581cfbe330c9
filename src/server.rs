//! Starting server processes: `ferry up`, `ferry registry`, `ferry registry migrate`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_api::http::auth::Tokens;
use ferry_api::http::metrics::HttpMetrics;
use ferry_registry::catalog::LocalCatalog;
use ferry_registry::store::SchemaState;
use ferry_registry::{AppState, Background, BlobStore, MetadataStore};
use ferry_serving::cache::ArtifactCache;
use ferry_serving::catalog::SharedCatalog;
use ferry_serving::follow::{Endpoints, Models, Selection};
use ferry_serving::lifecycle::{Serving, ServingOptions};
use ferry_serving::repository::ServedModel;
use ferry_serving::runtime::ModelSource;
use tokio::net::TcpListener;

use crate::config::{
    EndpointSpec, ModelSpec, RuntimeSettings, ServerSettings, ServingSettings, describe_database,
    is_loopback,
};

/// HTTP/2 streams a connection may have open at once.
const MAX_STREAMS: u32 = 128;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long background jobs get to reach a safe point once requests have drained.
const JOB_GRACE: Duration = Duration::from_secs(5);

/// The demo model `ferry up` pushes into an empty registry: a small MLP classifier (the same
/// bytes as the `mlp.onnx` test fixture, which `scripts/gen_fixtures.py --check` keeps equal).
const DEMO_MODEL: &[u8] = include_bytes!("../assets/demo.onnx");

/// What kind of process is starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ferry up`: migrate automatically, seed the demo model.
    Up {
        /// Push the demo model into an empty registry.
        demo: bool,
    },
    /// `ferry registry`: refuse a database that is behind unless told to migrate.
    Registry,
}

/// Connects the stores, checks the schema, and serves until SIGINT/SIGTERM.
///
/// # Errors
/// Configuration, connection and bind failures, each naming what failed.
pub async fn run(
    settings: ServerSettings,
    mode: Mode,
    serving_runtime: Option<RuntimeSettings>,
) -> Result<()> {
    refuse_open_network(&settings.registry.tokens, &settings.listen)?;
    let store = connect(&settings).await?;
    // Held until the server stops: a second registry on the same SQLite file is refused.
    let _serving = store.lock_for_serving().await.map_err(anyhow::Error::msg)?;
    match mode {
        Mode::Up { .. } => store
            .migrate()
            .await
            .map_err(anyhow::Error::msg)
            .context("migrating the database")?,
        Mode::Registry if settings.auto_migrate => store
            .migrate()
            .await
            .map_err(anyhow::Error::msg)
            .context("migrating the database")?,
        Mode::Registry => check_schema(&store).await?,
    }
    let blobs = BlobStore::open_with_retry(
        &settings.blob_url,
        &settings.blob_options,
        settings.blob_retry_timeout,
    )
    .map_err(anyhow::Error::msg)
    .context("opening the blob store")?;
    let prometheus = Arc::new(prometheus::Registry::new());
    let http_metrics = HttpMetrics::register(&prometheus).context("registering metrics")?;
    let state = AppState::new(
        store.clone(),
        blobs.clone(),
        settings.registry.clone(),
        prometheus.clone(),
        http_metrics,
    )
    .context("registering metrics")?;
    if let Mode::Up { demo: true } = mode {
        crate::demo::seed(&state, DEMO_MODEL).await?;
    }

    // Judges drift, delivers webhooks, relays events: safe with several registries.
    let background = Background::start(&store, &settings.registry, &state.prometheus)
        .context("starting the registry's background jobs")?;
    let mut state = state;
    let mut serving = None;
    let mut serving_routes = None;
    let feedback_stop = tokio_util::sync::CancellationToken::new();
    if let Some(mut runtime) = serving_runtime {
        // `ferry up`: serve every model of this registry, read straight from its stores.
        let replica = ferry_serving::report::replica_id(settings.listen.port());
        runtime.serving.feedback_store = settings.feedback_store.clone();
        runtime.serving.feature_store = settings.feature_store.clone();
        runtime.prediction_log = settings.prediction_log.clone();
        let mut started = start_serving(
            &state.prometheus,
            runtime,
            settings.registry.tokens.clone(),
            replica,
        )?;
        // Feedback posted to the registry joins through serving's index (memory or Redis).
        state = state.with_predictions(started.state.predictions.clone());
        // …and is logged by serving's log, next to the feedback serving takes.
        if let Some(log) = started.state.prediction_log.clone() {
            state = state.with_feedback_log(log);
        }
        let cache = ArtifactCache::open(&settings.data_dir.join("serving-cache"))
            .context("opening the serving cache")?;
        let catalog: SharedCatalog = Arc::new(LocalCatalog {
            store: store.clone(),
            blobs: blobs.clone(),
        });
        started.follow(
            catalog,
            cache,
            Selection {
                models: Models::All,
                endpoints: Endpoints::All,
            },
        );
        serving_routes = Some(started.routes());
        serving = Some(started);
    } else if let Some(url) = &settings.feedback_store {
        // The registry alone: feedback posted to it joins through the replicas' Redis.
        let (index, writer) =
            ferry_feedback::RedisIndex::connect(url, ferry_serving::served::PREDICTION_TTL)
                .map_err(|e| anyhow::anyhow!("feedback store: {e}"))?;
        tokio::spawn(writer.run(feedback_stop.clone()));
        state = state.with_predictions(Arc::new(index));
        if let Some(url) = &settings.prediction_log {
            let log = ferry_feedback::log::PredictionLog::start(
                open_log(url)?,
                format!(
                    "registry-{}",
                    ferry_serving::report::replica_id(settings.listen.port())
                ),
                false,
                &state.prometheus,
                "ferry_registry",
            )
            .context("registering the feedback log's metrics")?;
            tracing::info!(store = %url, "logging the feedback posted to the registry");
            state = state.with_feedback_log(log);
        }
    }
    let mut background = background;
    if let Some(queue) = settings.registry.feedback_queue.clone() {
        let Some(index) = state.predictions.clone() else {
            anyhow::bail!(
                "--feedback-queue needs the prediction index the serving replicas share: run `ferry up`, or pass --feedback-store redis://…"
            );
        };
        background
            .start_feedback_consumer(
                &store,
                index,
                state.feedback_log.clone(),
                queue,
                &state.prometheus,
            )
            .context("starting the feedback consumer")?;
    }
    let mut app = ferry_registry::api::routes(state.clone());
    if let Some(routes) = serving_routes {
        app = app.merge(routes);
    }
    let app = ferry_api::http::layers::common(
        app.fallback(ferry_registry::api::not_found),
        state.http_metrics.clone(),
    );

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        listen = %local,
        database = %describe_database(&settings.database_url),
        blobs = %blobs.display(),
        "ferry {} serving the registry API at http://{local}/api/v1{}",
        env!("CARGO_PKG_VERSION"),
        if serving.is_some() { format!(" and models at http://{local}/v2/models") } else { String::new() }
    );
    if settings.registry.tokens.is_open() {
        tracing::warn!(
            "no API tokens configured: the API is open to anyone on this machine (loopback only)"
        );
    }
    let serving_ready = serving.as_ref().map(|s| s.state.ready.clone());
    serve(
        listener,
        app,
        settings.connections,
        &prometheus,
        serving_ready,
    )
    .await?;
    // Requests have drained: stop the jobs at their safe points, serving's first (its last
    // report goes to this registry's store).
    if let Some(serving) = serving {
        serving.shutdown(JOB_GRACE).await;
    }
    background.shutdown(JOB_GRACE).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `ferry serving`: models from files and/or a registry, on their own port.
///
/// # Errors
/// Configuration, library, load and bind failures.
pub async fn run_serving(settings: ServingSettings) -> Result<()> {
    refuse_open_network(&settings.tokens, &settings.listen)?;
    let prometheus = Arc::new(prometheus::Registry::new());
    let http_metrics = HttpMetrics::register(&prometheus).context("registering metrics")?;
    let replica = ferry_serving::report::replica_id(settings.listen.port());
    let mut serving = start_serving(
        &prometheus,
        settings.runtime.clone(),
        settings.tokens.clone(),
        replica,
    )?;

    // Files first: they load once and are never followed.
    for spec in &settings.models {
        if let ModelSpec::File { name, path } = spec {
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("cannot read model file {}", path.display()))?;
            let signature = ferry_api::onnx::inspect(&bytes)
                .with_context(|| format!("{} is not a valid ONNX model", path.display()))?;
            let version = serving
                .loader
                .load(name, 1, ModelSource::from(bytes), signature, None)
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("loading {}", path.display()))?;
            let repository = &serving.state.repository;
            let traffic = repository.traffic_for(name, false);
            repository.install(ServedModel::single(name.clone(), version, traffic));
        }
    }
    let targets: Vec<(String, Option<ferry_api::names::VersionRef>)> = settings
        .models
        .iter()
        .filter_map(|m| match m {
            ModelSpec::Registry { name, reference } => Some((name.clone(), reference.clone())),
            ModelSpec::File { .. } => None,
        })
        .collect();
    let endpoints = match &settings.endpoints {
        EndpointSpec::All => Endpoints::All,
        EndpointSpec::Named(list) if list.is_empty() => Endpoints::None,
        EndpointSpec::Named(list) => Endpoints::Named(list.clone()),
    };
    if targets.is_empty() && matches!(endpoints, Endpoints::None) {
        serving.ready_without_following();
    } else {
        let Some(url) = &settings.registry else {
            bail!("registry models need --registry URL");
        };
        let client = ferry_api::client::RegistryClient::new(url, settings.registry_token.clone())
            .context("the registry URL")?;
        let cache = ArtifactCache::open(&settings.cache_dir)
            .with_context(|| format!("opening the cache {}", settings.cache_dir.display()))?;
        let models = if targets.is_empty() {
            Models::None
        } else {
            Models::Named(targets)
        };
        serving.follow(Arc::new(client), cache, Selection { models, endpoints });
    }

    let system = serving.health_routes().route(
        "/metrics",
        ferry_api::http::metrics::route(
            prometheus.clone(),
            &settings.tokens,
            settings.metrics_require_token,
        ),
    );
    let app = ferry_api::http::layers::common(serving.routes().merge(system), http_metrics);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(listen = %local, "ferry {} serving models at http://{local}/v2/models", env!("CARGO_PKG_VERSION"));
    let ready = serving.state.ready.clone();
    serve(
        listener,
        app,
        settings.connections,
        &prometheus,
        Some(ready),
    )
    .await?;
    serving.shutdown(JOB_GRACE).await;
    tracing::info!("stopped");
    Ok(())
}

fn refuse_open_network(tokens: &Tokens, listen: &std::net::SocketAddr) -> Result<()> {
    if tokens.is_open() && !is_loopback(listen) {
        bail!(
            "refusing to listen on {listen} without API tokens: anyone who can reach it could use \
             it. Configure tokens (--token ROLE:SECRET, FERRY_TOKENS or --tokens-file), or listen \
             on loopback (--listen 127.0.0.1:PORT)."
        );
    }
    Ok(())
}

/// Starts serving with the runtime settings: ONNX Runtime, metrics, the prediction log.
fn start_serving(
    prometheus: &prometheus::Registry,
    runtime: RuntimeSettings,
    tokens: Tokens,
    replica: String,
) -> Result<Serving> {
    let prediction_log = runtime
        .prediction_log
        .as_deref()
        .map(open_log)
        .transpose()?;
    Ok(Serving::start(
        ServingOptions {
            onnxruntime: runtime.onnxruntime,
            config: runtime.serving,
            prediction_log,
            log_inputs: runtime.log_inputs,
            tokens,
            replica,
        },
        prometheus,
    )?)
}

/// The object store of the prediction and feedback log.
fn open_log(url: &str) -> Result<ferry_api::storage::StoreRoot> {
    ferry_api::storage::StoreRoot::open(url, &[], ferry_api::storage::DEFAULT_RETRY_TIMEOUT)
        .map_err(anyhow::Error::msg)
        .context("opening the prediction log's store")
}

/// `ferry registry migrate`.
///
/// # Errors
/// Connection and migration failures.
pub async fn migrate(settings: ServerSettings) -> Result<()> {
    let store = connect(&settings).await?;
    let before = store.schema_state().await.context("reading the schema")?;
    store
        .migrate()
        .await
        .map_err(anyhow::Error::msg)
        .context("migrating the database")?;
    match before {
        SchemaState::Behind(pending) => crate::say!(
            "applied {} migration(s) to {}: {}",
            pending.len(),
            describe_database(&settings.database_url),
            pending
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => crate::say!(
            "{} is up to date",
            describe_database(&settings.database_url)
        ),
    }
    store.close().await;
    Ok(())
}

async fn connect(settings: &ServerSettings) -> Result<MetadataStore> {
    let pool_size = if settings.database_url.starts_with("sqlite:") {
        8
    } else {
        16
    };
    MetadataStore::connect(&settings.database_url, pool_size)
        .await
        .map_err(anyhow::Error::msg)
}

async fn check_schema(store: &MetadataStore) -> Result<()> {
    match store.schema_state().await.context("reading the schema")? {
        SchemaState::Current => Ok(()),
        SchemaState::Behind(pending) => bail!(
            "the database is behind this binary by {} migration(s); run `ferry registry migrate` \
             with the same --database-url (or start with --auto-migrate)",
            pending.len()
        ),
        SchemaState::Ahead(unknown) => bail!(
            "the database has {} migration(s) this binary does not know: it was migrated by a \
             newer Ferry; run that version",
            unknown.len()
        ),
    }
}

/// Serves until SIGINT or SIGTERM, then gives in-flight requests [`SHUTDOWN_GRACE`] to finish.
/// Uploads cut short leave nothing visible: a blob is published only once complete.
///
/// Slow clients cannot hold the server: a connection that has not sent its request line and
/// headers within `limits.header_read_timeout` is closed, and past `limits.max_connections`
/// new connections are closed at once (counted in `ferry_connections_refused_total`) rather
/// than queued, so file descriptors and memory stay bounded.
///
/// With a `shutdown_delay`, the signal first turns `ready` off (when given: serving's readiness)
/// and the server goes on accepting for the delay, so that load balancers and kube-proxy, which
/// learn of the shutdown asynchronously, stop sending new connections before it stops listening:
/// a connection refused there would be a failed request.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: crate::config::ConnectionLimits,
    metrics: &prometheus::Registry,
    ready: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // HTTP/2: a bounded number of streams per connection, and pings that close the connections
    // of peers gone mid-request (idle ones are closed by the watchdog below).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client = crate::connection::PerClient::new(limits.max_per_client);
    let refused = prometheus::IntCounter::new(
        "ferry_connections_refused_total",
        "Connections closed on arrival because --max-connections (or \
         --max-connections-per-client from that address) were already open.",
    )
    .ok()
    .filter(|c| metrics.register(Box::new(c.clone())).is_ok());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut draining = false;
    let drain_end = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_end);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown, if !draining => {
                if limits.shutdown_delay.is_zero() {
                    break;
                }
                draining = true;
                if let Some(ready) = &ready {
                    ready.store(false, std::sync::atomic::Ordering::Release);
                }
                tracing::info!(
                    "shutdown signal: not ready, still accepting for {} ms so load balancers stop sending first",
                    limits.shutdown_delay.as_millis()
                );
                drain_end
                    .as_mut()
                    .reset(tokio::time::Instant::now() + limits.shutdown_delay);
                continue;
            }
            () = &mut drain_end, if draining => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(c) = &refused {
                c.inc();
            }
            tracing::debug!("refusing a connection: --max-connections are open");
            drop(stream);
            continue;
        };
        let Some(client_slot) = per_client.admit(peer.ip()) else {
            if let Some(c) = &refused {
                c.inc();
            }
            tracing::debug!(client = %peer.ip(), "refusing a connection: --max-connections-per-client are open from this address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = crate::connection::Activity::new();
        let service = TowerToHyperService::new(crate::connection::Tracked::new(
            app.clone(),
            activity.clone(),
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let (first_request, idle) = (limits.header_read_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                () = activity.expired(first_request, idle) => {
                    tracing::debug!("closing a connection without a request in flight past its deadline");
                }
            }
            drop((slot, client_slot));
        });
    }
    drop(listener);
    tracing::info!(
        "shutting down: finishing requests in flight (at most {} s)",
        SHUTDOWN_GRACE.as_secs()
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after the grace period were cut off");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
