//! Metadata in SQL: one implementation over sqlx's `Any` driver, run against SQLite and
//! PostgreSQL with the same migrations and queries.
//!
//! Every write goes through [`WriteTx`], which first locks the event counter row. That one rule
//! gives three guarantees without engine-specific SQL: writers are serialized (no deadlocks, no
//! lost updates of version counters), event ids are handed out in commit order without gaps,
//! and every change commits together with its event (the transactional outbox).

mod drift;
mod endpoints;
mod events;
pub(crate) mod features;
mod gc;
mod lifecycle;
mod models;
mod page;
mod relay;
mod reports;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::error::{Error, Result};
use ferry_api::events::EventData;
use ferry_api::records::Event;

pub use endpoints::EndpointWrite;
pub(crate) use models::idempotency_conflict;
pub use models::{Inserted, NewVersion};

/// The migrations compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The background jobs that must not run on two registries at once, as advisory lock keys
/// (in a range of their own: 0x66_65_72_72_79 is `ferry` in ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum JobKey {
    /// Pruning serving replicas' reports past the retention.
    PruneReports = 0x6665_7272_7901,
}

/// A held job lock ([`MetadataStore::try_job_lock`]); [`JobLock::release`] lets go, and so does
/// dropping it (the transaction then rolls back when its connection is next used or closed).
pub(crate) struct JobLock(Option<Transaction<'static, Any>>);

impl JobLock {
    /// Lets go of the lock.
    pub(crate) async fn release(self) {
        if let Some(tx) = self.0
            && let Err(e) = tx.rollback().await
        {
            tracing::debug!(error = %e, "releasing a job lock failed; the connection's end releases it");
        }
    }
}

/// Which SQL engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The registry's metadata: models, versions, aliases and the event outbox.
#[derive(Clone)]
pub struct MetadataStore {
    pool: AnyPool,
    engine: Engine,
    /// SQLite has one writer at a time; queueing writers here is fairer and cheaper than letting
    /// them spin in SQLite's busy handler.
    write_lock: Option<Arc<Mutex<()>>>,
    /// The id of the last committed event, for long-polls and streams in this process: set by
    /// this process's commits, and by the one poller that reads the counter for every waiter
    /// (another replica's commits).
    last_event: Arc<watch::Sender<i64>>,
    /// Whether the event poller runs, and how many times it has read the counter.
    event_poller: Arc<events::Poller>,
    /// When this process last started pruning old endpoint reports (Unix milliseconds).
    reports_pruned_at: Arc<AtomicI64>,
    /// The URL it was opened with, for [`MetadataStore::reopen`]; never shown.
    url: Arc<str>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataStore({:?})", self.engine)
    }
}

/// Held by the registry that serves a SQLite database, for as long as it serves: SQLite is
/// single-replica (one writer, a file on one machine), so a second registry process on the same
/// file is refused rather than left to race the first one's background jobs. An advisory lock on
/// a file beside the database, released by the operating system however the holder ends.
/// `ferry registry gc` and `migrate` do not take it. PostgreSQL needs none: any number of
/// registries may serve one database.
#[derive(Debug)]
pub struct ServingLock {
    _file: Option<std::fs::File>,
}

/// How long a registry waits for another one to release a SQLite database (a restart that
/// overlaps the old process's exit) before refusing to start.
const SERVING_LOCK_WAIT: Duration = Duration::from_secs(5);

/// How far the database's schema is from the binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration is applied.
    Current,
    /// Some migrations are not applied yet (their versions).
    Behind(Vec<i64>),
    /// The database has migrations this binary does not know: it was migrated by a newer Ferry.
    Ahead(Vec<i64>),
}

impl MetadataStore {
    /// Claims a SQLite database for this process to serve (see [`ServingLock`]); waits up to
    /// 5 s for a registry that is exiting. A no-op for PostgreSQL and in-memory SQLite.
    ///
    /// # Errors
    /// When another process serves the database (naming its pid), or the lock file cannot be
    /// opened.
    pub async fn lock_for_serving(&self) -> Result<ServingLock, String> {
        let Some(path) = (self.engine == Engine::Sqlite)
            .then(|| sqlite_file(&self.url))
            .flatten()
        else {
            return Ok(ServingLock { _file: None });
        };
        let lock_path = format!("{path}.serving-lock");
        ferry_api::blocking::run_blocking(move || claim(&path, &lock_path))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Connects to `sqlite://path` (created if missing, WAL journal) or `postgres://…`.
    ///
    /// # Errors
    /// A message naming the engine and the cause; the URL's password is never included.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(format!(
                "unsupported database URL scheme in `{}`; use sqlite://PATH or postgres://…",
                redact_url(url)
            ));
        };
        let url = match engine {
            Engine::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        if engine == Engine::Sqlite
            && let Some(path) = sqlite_file(&url)
            && let Some(parent) = std::path::Path::new(&path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create folder {}: {e}", parent.display()))?;
        }
        let opened_with: Arc<str> = Arc::from(url.as_str());
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e| format!("database URL `{}`: {e}", redact_url(&url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // WAL lets readers run beside the writer; FULL sync makes a commit durable
                        // before it is acknowledged; the busy timeout covers other processes
                        // (`ferry registry gc`, a second registry on the same file).
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot connect to {:?} database: {e}", engine))?;
        let store = MetadataStore {
            pool,
            engine,
            write_lock: (engine == Engine::Sqlite).then(|| Arc::new(Mutex::new(()))),
            last_event: Arc::new(watch::channel(0).0),
            event_poller: Arc::default(),
            reports_pruned_at: Arc::new(AtomicI64::new(0)),
            url: opened_with,
        };
        Ok(store)
    }

    /// Opens a second, independent store on the same database (its own pool, its own writer
    /// queue), as a restarted registry or another replica would: for tests of what survives a
    /// restart and of several replicas sharing a database.
    ///
    /// # Errors
    /// As [`MetadataStore::connect`].
    pub async fn reopen(&self, max_connections: u32) -> Result<Self, String> {
        let store = Self::connect(&self.url, max_connections).await?;
        store
            .refresh_last_event()
            .await
            .map_err(|e| format!("reading the event counter failed: {e}"))?;
        Ok(store)
    }

    /// The engine behind this store.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// The migration error, or [`Error::Database`].
    pub async fn migrate(&self) -> Result<(), String> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| format!("migration failed: {e}"))?;
        self.refresh_last_event()
            .await
            .map_err(|e| format!("reading the event counter failed: {e}"))?;
        Ok(())
    }

    /// Compares the applied migrations with the ones compiled in.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be read.
    pub async fn schema_state(&self) -> Result<SchemaState> {
        use sqlx::migrate::Migrate;
        let mut conn = self.pool.acquire().await?;
        conn.ensure_migrations_table()
            .await
            .map_err(|e| Error::Internal(format!("migrations table: {e}")))?;
        let applied: Vec<i64> = conn
            .list_applied_migrations()
            .await
            .map_err(|e| Error::Internal(format!("listing migrations: {e}")))?
            .into_iter()
            .map(|m| m.version)
            .collect();
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let ahead: Vec<i64> = applied
            .iter()
            .filter(|v| !known.contains(v))
            .copied()
            .collect();
        if !ahead.is_empty() {
            return Ok(SchemaState::Ahead(ahead));
        }
        let behind: Vec<i64> = known
            .iter()
            .filter(|v| !applied.contains(v))
            .copied()
            .collect();
        if behind.is_empty() {
            self.refresh_last_event().await?;
            Ok(SchemaState::Current)
        } else {
            Ok(SchemaState::Behind(behind))
        }
    }

    /// Checks the database answers, for `/readyz`.
    ///
    /// # Errors
    /// [`Error::Database`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn refresh_last_event(&self) -> Result<()> {
        let last: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'events'")
            .fetch_one(&self.pool)
            .await?;
        self.last_event.send_if_modified(|current| {
            if last > *current {
                *current = last;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Starts a write transaction: takes the writer lock, then locks the event counter row.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        // An UPDATE, not a SELECT: it takes the row lock (PostgreSQL) or the write lock (SQLite)
        // at once, so the transaction never has to upgrade a read lock later.
        sqlx::query("UPDATE counters SET value = value WHERE name = 'events'")
            .execute(&mut *tx)
            .await?;
        let last: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'events'")
            .fetch_one(&mut *tx)
            .await?;
        Ok(WriteTx {
            tx,
            last_event_id: last,
            events: Vec::new(),
            now: Utc::now(),
            _guard: guard,
        })
    }

    /// Takes the job lock `key` for as long as the returned guard lives, without waiting:
    /// `None` when another registry sharing the database holds it. On PostgreSQL a transaction
    /// holds `pg_try_advisory_xact_lock(key)`, so a replica that dies (its connection closed)
    /// lets go at once; SQLite has one registry per database (see
    /// [`MetadataStore::lock_for_serving`]), so the lock is always free there.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub(crate) async fn try_job_lock(&self, key: JobKey) -> Result<Option<JobLock>> {
        if self.engine != Engine::Postgres {
            return Ok(Some(JobLock(None)));
        }
        let mut tx = self.pool.begin().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(key as i64)
            .fetch_one(&mut *tx)
            .await?;
        Ok(taken.then_some(JobLock(Some(tx))))
    }

    /// A receiver that sees the id of the last event committed by this process.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_event.subscribe()
    }

    /// The pool, for crate-internal queries.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A write transaction that records its events in the same commit.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    last_event_id: i64,
    events: Vec<Event>,
    /// One timestamp for everything the transaction writes.
    pub(crate) now: DateTime<Utc>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Appends an event to the outbox; it becomes visible when the transaction commits.
    pub(crate) async fn emit(&mut self, event: EventData) -> Result<i64> {
        let kind = event.kind().as_str();
        let subject = event.subject().to_string();
        let data = event.to_json();
        let id = self.last_event_id + 1;
        sqlx::query(
            "INSERT INTO events (id, type, subject, data, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(kind)
        .bind(&subject)
        .bind(data.to_string())
        .bind(timestamp(self.now))
        .execute(&mut *self.tx)
        .await?;
        self.last_event_id = id;
        self.events.push(Event {
            id,
            kind: kind.to_string(),
            subject,
            data,
            created_at: self.now,
        });
        Ok(id)
    }

    /// Commits the change and its events, then wakes this process's event waiters.
    pub(crate) async fn commit(mut self, store: &MetadataStore) -> Result<Vec<Event>> {
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'events'")
            .bind(self.last_event_id)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        let last = self.last_event_id;
        store.last_event.send_if_modified(|current| {
            if last > *current {
                *current = last;
                true
            } else {
                false
            }
        });
        Ok(std::mem::take(&mut self.events))
    }
}

/// Formats a timestamp the way every table stores it: RFC 3339, UTC, milliseconds, so that text
/// order is time order on both engines.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub(crate) fn parse_timestamp(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Internal(format!("stored timestamp `{text}` is invalid: {e}")))
}

/// Parses a stored JSON column.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("stored {column} is not valid JSON: {e}")))
}

/// Removes the password from a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Takes the advisory lock of `lock_path` (waiting [`SERVING_LOCK_WAIT`] for a holder that is
/// exiting) and writes this process's pid into it for the next one's message.
fn claim(path: &str, lock_path: &str) -> Result<ServingLock, String> {
    use std::io::{Read, Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path)
        .map_err(|e| format!("cannot open the lock file {lock_path}: {e}"))?;
    let deadline = std::time::Instant::now() + SERVING_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another process (pid {holder})")
                };
                return Err(format!(
                    "{who} already serves the SQLite database {path}: SQLite is single-replica \
                     (one registry per database file). Stop it first, or run several registries \
                     on PostgreSQL (--database-url postgres://…)"
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {lock_path}: {e}"));
            }
        }
    }
    // Best effort: the pid only improves the next process's message.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(ServingLock { _file: Some(file) })
}

fn sqlite_file(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        let shown = redact_url("postgres://ferry:hunter2@db:5432/ferry");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn sqlite_file_paths_are_found_in_urls() {
        assert_eq!(
            sqlite_file("sqlite:///tmp/x/ferry.db?mode=rwc").as_deref(),
            Some("/tmp/x/ferry.db")
        );
        assert_eq!(
            sqlite_file("sqlite://data/ferry.db").as_deref(),
            Some("data/ferry.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
