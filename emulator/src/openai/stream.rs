//! Streamed generation: one server-sent event per generated word, written as the body is
//! polled (so each reaches the socket on its own), an optional usage chunk, then
//! `data: [DONE]`. The chaos knobs `stream_chunk_delay_ms` and `stream_abort_after` pace
//! the events and cut the stream.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::Value;

use super::request::Generation;
use super::{Frame, generate, usage};
use crate::config::ChaosConfig;

/// The events of an answer, produced lazily.
type Events = Box<dyn Iterator<Item = String> + Send>;

/// The `text/event-stream` answer to `request`.
pub(super) fn response(frame: Frame, request: Generation, chaos: &ChaosConfig) -> Response {
    let delay = Duration::from_millis(chaos.stream_chunk_delay_ms);
    let body = paced(events(frame, request), delay, chaos.stream_abort_after);
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

fn events(frame: Frame, request: Generation) -> Events {
    let usage_chunk = request
        .include_usage
        .then(|| frame.usage_chunk(usage(&request)));
    let n = request.max_tokens;
    let words = request
        .prompts
        .into_iter()
        .enumerate()
        .flat_map(move |(index, prompt)| {
            let frame = frame.clone();
            generate(&prompt, n)
                .enumerate()
                .map(move |(i, word)| frame.chunk(index, spaced(i, word), i + 1 == n))
        });
    let done = std::iter::once("data: [DONE]\n\n".to_owned());
    Box::new(words.chain(usage_chunk).map(data).chain(done))
}

fn data(chunk: Value) -> String {
    format!("data: {chunk}\n\n")
}

/// Word `i` as it appears in the text: after a space, except the first.
fn spaced(i: usize, word: &str) -> String {
    if i == 0 {
        word.to_owned()
    } else {
        format!(" {word}")
    }
}

/// A body yielding `events` one by one, `delay` apart; after `abort_after` events (0 =
/// never) the next one is replaced by an error, which makes hyper cut the connection.
fn paced(events: Events, delay: Duration, abort_after: u32) -> Body {
    let items = stream::unfold((events, 0_u32), move |(mut events, sent)| async move {
        let event = events.next()?;
        if sent > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if abort_after > 0 && sent == abort_after {
            // Pending once, so hyper flushes what it buffered before the error drops the
            // connection: the client sees exactly `abort_after` events.
            tokio::task::yield_now().await;
            let cut = io::Error::other("stream cut by the emulator's chaos (stream_abort_after)");
            let nothing: Events = Box::new(std::iter::empty());
            return Some((Err(cut), (nothing, sent)));
        }
        Some((Ok::<_, io::Error>(event), (events, sent + 1)))
    });
    Body::from_stream(items)
}
