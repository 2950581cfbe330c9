//! `ferry webhook …`: subscriptions that trigger pipelines (e.g. retraining on drift).

use anyhow::{Result, bail};
use ferry_api::webhooks::{DeliveryRecord, DeliveryStatus, NewWebhook};

use crate::cli::{Output, WebhookCommand};
use crate::commands::model::connect;
use crate::output::{self, Table};

/// Runs a `ferry webhook` subcommand.
///
/// # Errors
/// Client and server errors (webhooks need the `admin` role).
pub async fn run(command: WebhookCommand) -> Result<()> {
    match command {
        WebhookCommand::Create {
            url,
            events,
            secret,
            client,
        } => {
            let api = connect(&client)?;
            let created = api
                .create_webhook(&NewWebhook {
                    url,
                    events,
                    secret,
                })
                .await?;
            if client.output == Output::Json {
                return output::json(&created);
            }
            crate::say!(
                "webhook {} delivers {} to {}",
                created.webhook.id,
                created.webhook.events.join(", "),
                created.webhook.url
            );
            crate::say!("signing secret (shown once): {}", created.secret);
            Ok(())
        }
        WebhookCommand::List { client } => {
            let api = connect(&client)?;
            let page = api.list_webhooks(500, None).await?;
            if client.output == Output::Json {
                return output::json(&page);
            }
            let mut table = Table::new(&["ID", "URL", "EVENTS", "CURSOR", "CREATED"]);
            for w in &page.items {
                table.row(vec![
                    w.id.clone(),
                    w.url.clone(),
                    w.events.join(","),
                    w.cursor.to_string(),
                    output::time(&w.created_at),
                ]);
            }
            table.print();
            Ok(())
        }
        WebhookCommand::Rm { id, client } => {
            connect(&client)?.delete_webhook(&id).await?;
            crate::say!("removed webhook {id}");
            Ok(())
        }
        WebhookCommand::Deliveries { id, status, client } => {
            let status = match status.as_deref() {
                None => None,
                Some("pending") => Some(DeliveryStatus::Pending),
                Some("delivered") => Some(DeliveryStatus::Delivered),
                Some("dead") => Some(DeliveryStatus::Dead),
                Some(other) => bail!("--status `{other}`: use pending, delivered or dead"),
            };
            let api = connect(&client)?;
            let page = api.webhook_deliveries(&id, status, 500, None).await?;
            if client.output == Output::Json {
                return output::json(&page);
            }
            print_deliveries(&page.items);
            Ok(())
        }
        WebhookCommand::Replay {
            id,
            delivery,
            client,
        } => {
            let record = connect(&client)?.replay_dead_letter(&id, &delivery).await?;
            if client.output == Output::Json {
                return output::json(&record);
            }
            crate::say!("delivery {} queued again", record.id);
            Ok(())
        }
    }
}

fn print_deliveries(items: &[DeliveryRecord]) {
    let mut table = Table::new(&[
        "DELIVERY",
        "EVENT",
        "TYPE",
        "STATUS",
        "ATTEMPTS",
        "LAST ERROR",
    ]);
    for d in items {
        table.row(vec![
            d.id.clone(),
            d.event_id.to_string(),
            d.event_type.clone(),
            format!("{:?}", d.status).to_lowercase(),
            d.attempts.to_string(),
            d.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
}
