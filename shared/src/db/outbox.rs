//! Writing commands to the `outbox` table inside the caller's transaction.

use chrono::{Duration as ChronoDuration, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use std::time::Duration;

use super::entities::outbox;
use crate::queue::Envelope;

/// Records `envelope` for publication to `queue`, not to be delivered before `delay` has
/// passed. The row id is the envelope's `message_id`, so a command is written once.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    envelope: &Envelope,
    delay: Option<Duration>,
) -> Result<(), DbErr> {
    let now = Utc::now();
    let available_at =
        delay.map(|d| now + ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX));
    outbox::ActiveModel {
        id: Set(envelope.message_id),
        queue: Set(queue.to_owned()),
        payload: Set(envelope.to_json()),
        available_at: Set(available_at),
        created_at: Set(now),
        published_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}
