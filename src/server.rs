//! Starting server processes: `ferry up`, `ferry registry`, `ferry registry migrate`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_registry::metrics::HttpMetrics;
use ferry_registry::store::SchemaState;
use ferry_registry::{AppState, BlobStore, MetadataStore};
use tokio::net::TcpListener;

use crate::config::{ServerSettings, describe_database, is_loopback};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The demo model `ferry up` pushes into an empty registry: the MLP classifier fixture.
const DEMO_MODEL: &[u8] = include_bytes!("../tests/fixtures/mlp.onnx");

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
pub async fn run(settings: ServerSettings, mode: Mode) -> Result<()> {
    if settings.registry.tokens.is_open() && !is_loopback(&settings.listen) {
        bail!(
            "refusing to listen on {} without API tokens: anyone who can reach it could push and \
             move models. Configure tokens (--token ROLE:SECRET, FERRY_TOKENS or --tokens-file), \
             or listen on loopback (--listen 127.0.0.1:8080).",
            settings.listen
        );
    }
    let store = connect(&settings).await?;
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
    let blobs = BlobStore::open(&settings.blob_url, &settings.blob_options)
        .map_err(anyhow::Error::msg)
        .context("opening the blob store")?;
    let prometheus = Arc::new(prometheus::Registry::new());
    let http_metrics = HttpMetrics::register(&prometheus).context("registering metrics")?;
    let state = AppState::new(
        store.clone(),
        blobs.clone(),
        settings.registry.clone(),
        prometheus,
        http_metrics,
    )
    .context("registering metrics")?;
    if let Mode::Up { demo: true } = mode {
        crate::demo::seed(&state, DEMO_MODEL).await?;
    }

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        listen = %local,
        database = %describe_database(&settings.database_url),
        blobs = %blobs.display(),
        "ferry {} serving the registry API at http://{local}/api/v1",
        env!("CARGO_PKG_VERSION")
    );
    if settings.registry.tokens.is_open() {
        tracing::warn!(
            "no API tokens configured: the API is open to anyone on this machine (loopback only)"
        );
    }
    let app = ferry_registry::router(state);
    serve(listener, app).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
        SchemaState::Behind(pending) => println!(
            "applied {} migration(s) to {}: {}",
            pending.len(),
            describe_database(&settings.database_url),
            pending
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => println!(
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
async fn serve(listener: TcpListener, app: axum::Router) -> Result<()> {
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!(
            "shutting down: finishing requests in flight (at most {} s)",
            SHUTDOWN_GRACE.as_secs()
        );
        let _ = signalled_tx.send(());
    });
    let grace = async {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.context("serving")?,
        () = grace => tracing::warn!("requests still in flight after the grace period were cut off"),
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
