//! `ferry events`: print the registry's event log, optionally following it.

use std::time::Duration;

use anyhow::{Context, Result};

use ferry_registry::records::Event;
use ferry_registry::webhooks::patterns::{matches, validate_patterns};

use crate::cli::{EventsArgs, Output};
use crate::output::{self, Table};

/// Widest DATA cell in the table; `-o json` prints events whole.
const DATA_WIDTH: usize = 120;

/// `text` cut to `width` characters, with `…` when something was cut.
fn truncate(text: &str, width: usize) -> String {
    match text.char_indices().nth(width.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > width => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

/// Runs `ferry events`.
///
/// # Errors
/// Client and server errors.
pub async fn run(args: EventsArgs) -> Result<()> {
    let patterns = if args.types.is_empty() {
        Vec::new()
    } else {
        validate_patterns(&args.types).context("--type")?
    };
    let wanted = |kind: &str| patterns.is_empty() || matches(&patterns, kind);
    let api = super::model::connect(&args.client)?;
    let limit = args.limit.clamp(1, 1000);
    let mut after = args.after;
    let mut first = true;
    let mut remaining = args.count;
    loop {
        let wait = if args.follow && !first {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let page = api.events(after, limit, wait).await?;
        after = page.next_after;
        let mut events: Vec<&Event> = page.events.iter().filter(|e| wanted(&e.kind)).collect();
        if let Some(left) = remaining.as_mut() {
            events.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= events.len() as u64;
        }
        if args.client.output == Output::Json {
            // One event per line when following, so the output can be piped into jq.
            for event in &events {
                crate::say!("{}", serde_json::to_string(event)?);
            }
        } else if !events.is_empty() || first {
            let mut table = Table::new(&["ID", "TYPE", "SUBJECT", "TIME", "DATA"]);
            for e in &events {
                table.row(vec![
                    e.id.to_string(),
                    e.kind.clone(),
                    e.subject.clone(),
                    output::time(&e.created_at),
                    truncate(&e.data.to_string(), DATA_WIDTH),
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
        if !args.follow || remaining == Some(0) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_data_is_cut_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("ééééééé", 4), "ééé…");
        assert_eq!(truncate("", 4), "");
    }
}
