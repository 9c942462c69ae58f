//! Restaurant fan-out: each item runs in its own task on a [`JoinSet`], at most `limit` at once,
//! so a panic or an error in one becomes that item's recorded outcome and the others go on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Runs `work` on every `(id, item)` of `items`, at most `limit` at once, and calls `on_done`
/// with each item's id and outcome as it finishes: its value, or its error or panic as text.
/// Once `cancel` fires no new item starts; those in flight finish and are reported.
///
/// The permit is taken before the next item is pulled (not inside the task, as is usual) so
/// that the stream, which reads the catalogue page by page, is only read as fast as items run.
pub async fn fan_out<T, O, F, Fut>(
    items: impl Stream<Item = (String, T)>,
    limit: usize,
    cancel: &CancellationToken,
    work: F,
    mut on_done: impl FnMut(String, Result<O, String>),
) where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<O>> + Send + 'static,
    O: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks = JoinSet::new();
    let mut ids = HashMap::new();
    let mut items = std::pin::pin!(items.take_until(cancel.clone().cancelled_owned()));
    let mut more = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (task, outcome) = match done {
                    Ok((task, Ok(v))) => (task, Ok(v)),
                    Ok((task, Err(e))) => (task, Err(crate::domain::error_chain(anyhow::Error::as_ref(&e)))),
                    Err(e) => (e.id(), Err(panic_text(e))),
                };
                on_done(ids.remove(&task).unwrap_or_default(), outcome);
            }
            Ok(permit) = Arc::clone(&permits).acquire_owned(), if more => {
                match items.next().await {
                    Some((id, item)) => {
                        let fut = work(item);
                        // The task keeps the caller's span (the run's), so each item's
                        // spans are children of it in logs and traces.
                        let handle = tasks.spawn(
                            async move {
                                let _permit = permit;
                                fut.await
                            }
                            .in_current_span(),
                        );
                        ids.insert(handle.id(), id);
                    }
                    None => more = false,
                }
            }
            else => break,
        }
    }
}

fn panic_text(e: JoinError) -> String {
    if !e.is_panic() {
        return format!("task ended: {e}");
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_item_is_recorded_and_the_others_finish() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let items = futures::stream::iter((0..8).map(|i| (format!("r{i}"), i)));
        let mut outcomes = Vec::new();
        let (r, m) = (Arc::clone(&running), Arc::clone(&most));
        fan_out(
            items,
            3,
            &CancellationToken::new(),
            move |i: u32| {
                let (running, most) = (Arc::clone(&r), Arc::clone(&m));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    match i {
                        2 => panic!("restaurant 2 broke"),
                        5 => anyhow::bail!("no embedded reviews"),
                        _ => Ok(i * 10),
                    }
                }
            },
            |id, o| outcomes.push((id, o)),
        )
        .await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(outcomes.len(), 8, "every item has an outcome");
        assert_eq!(
            outcomes[2],
            ("r2".into(), Err("panicked: restaurant 2 broke".into()))
        );
        assert_eq!(
            outcomes[5],
            ("r5".into(), Err("no embedded reviews".into()))
        );
        assert_eq!(outcomes[7], ("r7".into(), Ok(70)));
        assert!(most.load(Ordering::SeqCst) <= 3, "at most 3 at once");
    }

    #[tokio::test]
    async fn nothing_starts_after_cancel() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut n = 0;
        let items = futures::stream::iter((0..4).map(|i| (i.to_string(), i)));
        fan_out(
            items,
            2,
            &cancel,
            |i: i32| async move { Ok(i) },
            |_, _| n += 1,
        )
        .await;
        assert_eq!(n, 0);
    }
}
