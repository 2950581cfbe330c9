//! RabbitMQ plumbing the event relay ([`crate::relay`]) and the feedback consumer
//! ([`crate::feedback_queue`]) share: a connection with one channel in publisher-confirm mode.
//! Each caller bounds it with its own deadline and words the failure for its own log.

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

/// Connects to `url` (named `name` in the broker's connection list) and opens one channel with
/// publisher confirms; on failure, the stage that failed and why.
///
/// # Errors
/// `("connecting" | "opening a channel" | "enabling publisher confirms", cause)`.
pub async fn connect_confirmed(
    url: &str,
    name: &str,
) -> Result<(Connection, Channel), (&'static str, lapin::Error)> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = Connection::connect(url, properties)
        .await
        .map_err(|e| ("connecting", e))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| ("opening a channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| ("enabling publisher confirms", e))?;
    Ok((connection, channel))
}
