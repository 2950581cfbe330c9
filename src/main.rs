//! The `ferry` binary: parses flags, builds the services' state and runs them.

mod cli;
mod commands;
mod config;
mod connection;
mod data_hash;
mod demo;
mod git;
mod logging;
mod output;
mod server;

use std::process::ExitCode;

use clap::Parser;
use ferry_api::client::ClientError;

use crate::cli::{Cli, Command, RegistryAction};

/// jemalloc instead of glibc's malloc: the request path allocates and frees small buffers on
/// several threads, and with jemalloc `ferry up` + an endpoint spends ~16% less CPU per request
/// (`bench/ab.sh`). Uploads stay flat in memory (`tests/registry.rs`), which mimalloc broke.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit codes, documented in the README: scripts can tell a missing model from a refused one.
mod exit {
    pub const FAILURE: u8 = 1;
    /// As clap answers a bad command line.
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const DENIED: u8 = 5;
    pub const REJECTED: u8 = 6;
    pub const UNAVAILABLE: u8 = 7;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.command,
        Command::Up(_) | Command::Registry(_) | Command::Serving(_) | Command::Operator(_)
    );
    logging::init(cli.log_format, server);
    let http_threads = cli.http_threads.map_or_else(
        || cli::default_http_threads(ferry_serving::runtime::available_cpus()),
        usize::from,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(http_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    if server {
        // Read back from the runtime, not the setting: what the process really runs with.
        tracing::info!(
            http_threads = runtime.metrics().num_workers(),
            "async runtime started"
        );
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            let settings = config::resolve(&args.server)?;
            let serving = if args.no_serving {
                None
            } else {
                Some(config::resolve_runtime(
                    &args.runtime,
                    args.server.common.config.as_deref(),
                )?)
            };
            let mode = server::Mode::Up {
                demo: !args.no_demo,
            };
            server::run(settings, mode, serving).await
        }
        Command::Serving(cmd) => server::run_serving(config::resolve_serving(&cmd)?).await,
        Command::Registry(cmd) => match cmd.action {
            None => server::run(config::resolve(&cmd.server)?, server::Mode::Registry, None).await,
            Some(RegistryAction::Serve(args)) => {
                server::run(config::resolve(&args)?, server::Mode::Registry, None).await
            }
            Some(RegistryAction::Migrate(args)) => server::migrate(config::resolve(&args)?).await,
            Some(RegistryAction::Gc(args)) => commands::gc::run(args).await,
        },
        Command::Model(cmd) => commands::model::run(cmd).await,
        Command::Endpoint(cmd) => commands::endpoint::run(cmd).await,
        Command::Predict(args) => commands::endpoint::predict(args).await,
        Command::Feedback(cmd) => match cmd.action {
            Some(cli::FeedbackAction::Export(args)) => commands::feedback::export(args).await,
            Some(cli::FeedbackAction::DeadLetters(cmd)) => match cmd.action {
                None => commands::feedback::dead_letters(cmd.list).await,
                Some(cli::DeadLettersAction::Replay(args)) => {
                    commands::feedback::replay(args).await
                }
            },
            None => commands::endpoint::feedback(cmd.send).await,
        },
        Command::Profile(args) => commands::profile::run(args).await,
        Command::Webhook(cmd) => commands::webhook::run(cmd).await,
        Command::Features(cmd) => commands::features::run(cmd).await,
        Command::Events(args) => commands::events::run(args).await,
        Command::Operator(args) => commands::operator::run(args).await,
        Command::Crdgen(args) => commands::operator::crdgen(args),
    }
}

/// Maps the error behind a failure to an exit code.
fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<cli::UsageError>().is_some() {
            return exit::USAGE;
        }
        if cause.downcast_ref::<cli::UnavailableError>().is_some() {
            return exit::UNAVAILABLE;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Api { status: 404, .. } => exit::NOT_FOUND,
                ClientError::Api {
                    status: 409 | 412, ..
                } => exit::CONFLICT,
                ClientError::Api {
                    status: 401 | 403, ..
                } => exit::DENIED,
                ClientError::Api {
                    status: 429 | 503, ..
                }
                | ClientError::Transport { .. } => exit::UNAVAILABLE,
                ClientError::Api { status, .. } if (400..500).contains(status) => exit::REJECTED,
                _ => exit::FAILURE,
            };
        }
        if let Some(registry) = cause.downcast_ref::<ferry_registry::Error>() {
            match registry.status().as_u16() {
                404 => return exit::NOT_FOUND,
                409 | 412 => return exit::CONFLICT,
                429 | 503 => return exit::UNAVAILABLE,
                400..500 => return exit::REJECTED,
                _ => {}
            }
        }
    }
    exit::FAILURE
}
