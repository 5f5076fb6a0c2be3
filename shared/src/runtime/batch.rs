//! [`Batcher`]: the one way concurrent callers share a round trip (group commit).
//!
//! Callers hand an item to the batcher and wait for *their* answer. One task takes the
//! first waiting item, adds every item that queued up behind it (at most `max_batch`), runs
//! one flush for all of them and answers each caller. Nothing waits for a batch to fill:
//! a lone caller is flushed at once, and under load the batch grows by itself with the
//! items that arrived while the previous flush was running (natural batching, as a
//! database's group commit). The queue of waiting items is bounded (`capacity`: a caller
//! beyond it waits to enqueue), and a caller's answer arrives only after its flush
//! returned, so an acknowledgement that was answered is never lost, even at shutdown.
//!
//! The task ends when every [`Batcher`] handle is dropped, after answering what was queued.
//! A flush that panics answers its callers with [`BatchFailed`] and the task goes on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

/// The flush did not answer: it panicked, or the batcher's task is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batched operation did not complete")]
pub struct BatchFailed;

type Flush<I, O> = dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync;

/// Shares one flush among concurrent callers; cheap to clone.
pub struct Batcher<I, O> {
    tx: mpsc::Sender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Spawns the batcher's task (needs a tokio runtime). `flush` gets up to `max_batch`
    /// items and must return one answer per item, in the same order; `capacity` bounds the
    /// items waiting for a flush.
    pub fn spawn<F, Fut>(max_batch: usize, capacity: usize, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(capacity.max(max_batch));
        let flush: Arc<Flush<I, O>> = Arc::new(move |items| Box::pin(flush(items)));
        tokio::spawn(run(rx, max_batch, flush));
        Self { tx }
    }

    /// Runs `item` in the next flush and returns its answer. Flushes run in the order items
    /// were handed over, so an answer also means every item handed over before this one
    /// (by [`Batcher::submit`] too) was flushed: a `call` is a barrier.
    pub async fn call(&self, item: I) -> Result<O, BatchFailed> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| BatchFailed)?;
        answer.await.map_err(|_| BatchFailed)
    }

    /// Hands `item` to a coming flush without waiting for it (write-behind): returns once it
    /// is queued, waiting only while `capacity` items are. Its answer is dropped, so the
    /// flush itself must report what failed; a later [`Batcher::call`] returns after it.
    pub async fn submit(&self, item: I) -> Result<(), BatchFailed> {
        let (reply, _answer) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| BatchFailed)
    }
}

async fn run<I, O>(
    mut rx: mpsc::Receiver<(I, oneshot::Sender<O>)>,
    max_batch: usize,
    flush: Arc<Flush<I, O>>,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut waiting, max_batch).await > 0 {
        let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = waiting.drain(..).unzip();
        let expected = items.len();
        match AssertUnwindSafe(flush(items)).catch_unwind().await {
            Ok(answers) => {
                debug_assert_eq!(answers.len(), expected, "one answer per item");
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that stopped waiting does not stop the others.
                    let _ = reply.send(answer);
                }
            }
            Err(_) => {
                tracing::error!(items = expected, "a batched flush panicked");
                // Dropping the replies answers BatchFailed.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_flushes_and_each_gets_its_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Batcher::spawn(8, 64, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                items.into_iter().map(|i| i * 10).collect()
            }
        });
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer, Ok(i * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&n| n <= 8), "bounded batches: {sizes:?}");
        assert!(sizes.len() < 40, "calls were batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_caller_is_flushed_at_once() {
        let batcher = Batcher::spawn(100, 100, |items: Vec<u8>| async move { items });
        let answer = tokio::time::timeout(Duration::from_millis(500), batcher.call(7)).await;
        assert_eq!(answer.unwrap(), Ok(7));
    }

    #[tokio::test]
    async fn a_call_returns_after_every_item_submitted_before_it_was_flushed() {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&flushed);
        let batcher = Batcher::spawn(4, 16, move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                seen.lock().unwrap().extend(items.iter().copied());
                items
            }
        });
        for i in 0..10 {
            batcher.submit(i).await.unwrap();
        }
        assert_eq!(batcher.call(99).await, Ok(99));
        let flushed = flushed.lock().unwrap().clone();
        assert_eq!(flushed, (0..10).chain([99]).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn submit_waits_while_the_capacity_is_full() {
        let (release, gate) = tokio::sync::watch::channel(false);
        let batcher = Batcher::spawn(1, 1, move |items: Vec<u8>| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                items
            }
        });
        batcher.submit(1).await.unwrap(); // taken by the flush, which waits at the gate
        batcher.submit(2).await.unwrap(); // fills the one place
        let third = tokio::time::timeout(Duration::from_millis(100), batcher.submit(3)).await;
        assert!(third.is_err(), "a full batcher makes submit wait");
        release.send(true).unwrap();
        assert_eq!(batcher.call(4).await, Ok(4));
    }

    #[tokio::test]
    async fn a_panicking_flush_fails_its_callers_and_the_next_flush_works() {
        let batcher = Batcher::spawn(1, 4, |items: Vec<u8>| async move {
            assert!(items[0] != 0, "boom");
            items
        });
        assert_eq!(batcher.call(0).await, Err(BatchFailed));
        assert_eq!(batcher.call(3).await, Ok(3));
    }
}
