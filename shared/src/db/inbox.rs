//! The consumers' inbox (`processed_messages`): makes handling a message idempotent.
//!
//! A consumer calls [`claim`] inside the transaction of its step. The first delivery of a
//! `message_id` inserts the row and proceeds; a duplicate finds the row and skips the step,
//! then acks. Because the row commits (or rolls back) with the step's own writes, a step is
//! applied exactly once however often its message is delivered. On PostgreSQL a concurrent
//! duplicate waits on the first one's uncommitted row and then sees it.

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};
use uuid::Uuid;

use super::entities::processed_messages::{self, Column, Entity};

/// Records `message_id` as handled in the caller's transaction. `true`: first time, run the
/// step; `false`: already handled, do nothing but ack.
pub async fn claim<C: ConnectionTrait>(conn: &C, message_id: Uuid) -> Result<bool, DbErr> {
    let row = processed_messages::ActiveModel {
        message_id: Set(message_id),
        processed_at: Set(Utc::now()),
    };
    let inserted = Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::MessageId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(inserted == 1)
}

/// Whether `message_id` was handled (a step committed with its inbox row): the check a
/// consumer makes before deciding on a redelivered message (docs/design/queue.md).
pub async fn handled<C: ConnectionTrait>(conn: &C, message_id: Uuid) -> Result<bool, DbErr> {
    Ok(Entity::find_by_id(message_id).one(conn).await?.is_some())
}
