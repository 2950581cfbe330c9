//! `ferry events`: print the registry's event log, optionally following it.

use std::time::Duration;

use anyhow::Result;

use crate::cli::{EventsArgs, Output};
use crate::output::{self, Table};

/// Runs `ferry events`.
///
/// # Errors
/// Client and server errors.
pub async fn run(args: EventsArgs) -> Result<()> {
    let api = super::model::connect(&args.client)?;
    let limit = args.limit.clamp(1, 1000);
    let mut after = args.after;
    let mut first = true;
    loop {
        let wait = if args.follow && !first {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let page = api.events(after, limit, wait).await?;
        after = page.next_after;
        if args.client.output == Output::Json {
            // One event per line when following, so the output can be piped into jq.
            for event in &page.events {
                crate::say!("{}", serde_json::to_string(event)?);
            }
        } else if !page.events.is_empty() || first {
            let mut table = Table::new(&["ID", "TYPE", "SUBJECT", "TIME", "DATA"]);
            for e in &page.events {
                table.row(vec![
                    e.id.to_string(),
                    e.kind.clone(),
                    e.subject.clone(),
                    output::time(&e.created_at),
                    e.data.to_string(),
                ]);
            }
            let rendered = table.render();
            // After the first page, print rows only.
            let body = if first {
                rendered.as_str()
            } else {
                rendered.split_once('\n').map_or("", |(_, rest)| rest)
            };
            crate::output::write_out(format_args!("{body}"));
        }
        first = false;
        if !args.follow {
            return Ok(());
        }
    }
}
