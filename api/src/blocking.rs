//! Keeping CPU work and blocking I/O off the async reactor, and catching it in tests when it
//! is not (feature `http`).
//!
//! A request that hashes a download, bins 64 MiB of inputs or fsyncs a file on a reactor thread
//! stalls every other request that thread serves. Such work runs in [`run_blocking`] (tokio's
//! blocking pool) or on a dedicated thread that calls [`mark_off_reactor`]. The functions that do
//! it call [`assert_off_reactor`], which in debug builds (every test) panics when they are
//! reached from async code: a regression fails a test instead of slowing production.

use std::cell::Cell;

thread_local! {
    static OFF_REACTOR: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on tokio's blocking pool, marked as off the reactor. It starts now, not when the
/// handle is first awaited: a caller may feed it through a channel before waiting for it (the
/// serving download does), and a lazy start would deadlock once that channel is full. Awaiting
/// the handle gives `f`'s result, or the [`tokio::task::JoinError`] when `f` panicked.
pub fn run_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let before = OFF_REACTOR.replace(true);
        let result = f();
        OFF_REACTOR.set(before);
        result
    })
}

/// Marks the current thread as one that may block (a dedicated worker thread).
pub fn mark_off_reactor() {
    OFF_REACTOR.set(true);
}

/// Whether the current thread is known to be off the reactor: marked, or outside any tokio
/// runtime (a plain thread, a unit test).
pub fn is_off_reactor() -> bool {
    OFF_REACTOR.get() || tokio::runtime::Handle::try_current().is_err()
}

/// In debug builds, panics when `what` (CPU-heavy or blocking work) runs on a thread of an async
/// runtime that is not marked off the reactor; free in release builds.
#[track_caller]
// The panic is the point: a debug-build tripwire for tests, compiled out of release builds.
#[allow(clippy::panic)]
pub fn assert_off_reactor(what: &str) {
    if cfg!(debug_assertions) && !is_off_reactor() {
        panic!("{what} ran on the async reactor: move it to run_blocking or a dedicated thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_threads_are_off_the_reactor() {
        assert_off_reactor("a unit test");
    }

    #[tokio::test]
    async fn blocking_tasks_pass_and_reactor_threads_are_caught() {
        run_blocking(|| assert_off_reactor("work in run_blocking"))
            .await
            .unwrap();
        let caught = std::panic::catch_unwind(|| assert_off_reactor("work on the reactor"));
        assert_eq!(caught.is_err(), cfg!(debug_assertions));
        // The mark does not leak to the next task of a pooled thread.
        tokio::task::spawn_blocking(|| assert!(!OFF_REACTOR.get()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn blocking_work_starts_before_its_handle_is_awaited() {
        let (started, mut seen) = tokio::sync::mpsc::channel(1);
        let handle = run_blocking(move || started.blocking_send(()).is_ok());
        let in_time = tokio::time::timeout(std::time::Duration::from_secs(30), seen.recv()).await;
        assert_eq!(in_time.ok().flatten(), Some(()), "the work had not started");
        assert!(handle.await.unwrap());
    }
}
