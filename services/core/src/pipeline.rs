//! A connection's sends, pipelined.
//!
//! MQTT lets a client keep several QoS 1 publishes in flight, and chat
//! clients do (an outbox flushed after a reconnect, a burst of replies).
//! Handled one after the other, each send waits for its group commit before
//! the next one is even read, so a commit holds at most one message per
//! connection and a connection sends at most one message per commit
//! interval. Here a send runs on its own task, and the connection's next
//! send starts as soon as this one's durable write has *taken its place* in
//! the store's write queue. What must stay in order still does:
//!
//! - everything up to the queued write (limits, moderation, the message id,
//!   the write's place in the store) runs in the order the publishes came,
//!   because the next send starts only then ([`queued`]);
//! - everything after the commit (the sender's answer, delivery, push)
//!   runs in the same order, because a send waits for the previous one of
//!   its connection to finish first ([`in_turn`]);
//! - the answers (PUBACKs) go back in order: the broker sends them in the
//!   order of the publishes (`vendor/rmqtt/PATCHED.md` §10).
//!
//! Outside a pipeline (REST, tests, the workers) both functions are
//! no-ops, so the service's code reads the same either way.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use tokio::sync::oneshot;

tokio::task_local! {
    static TURN: RefCell<Turn>;
}

/// The current send's place in its connection's pipeline.
struct Turn {
    /// Told (or dropped, when the send ends first) once the send's durable
    /// write is queued: the connection's next send may start.
    queued: Option<oneshot::Sender<()>>,
    /// Closes when the connection's previous send has finished.
    previous: Option<Link>,
    /// Dropped when this send finishes: the next send's `previous`.
    _finished: oneshot::Sender<()>,
}

/// Closes when a send has finished (its sender dropped).
#[derive(Debug)]
pub struct Link(oneshot::Receiver<()>);

/// A send running on its own task.
pub struct Spawned<T> {
    queued: oneshot::Receiver<()>,
    outcome: oneshot::Receiver<T>,
}

impl<T> Spawned<T> {
    /// Returns once the send's durable write is queued, or the send has
    /// finished without one; then the connection's next send may start.
    /// The receiver gives the send's outcome (an error only if its task
    /// panicked).
    pub async fn queued(self) -> oneshot::Receiver<T> {
        let _ = self.queued.await;
        self.outcome
    }
}

/// Runs `send` on its own task as the send that follows `after` (the
/// connection's previous send, if any). Returns the link the connection's
/// next send follows, and the running send. The task runs to its end even
/// if nobody waits for its outcome any more (the connection dropped):
/// a message being stored is stored and delivered all the same.
pub fn spawn<T, F>(after: Option<Link>, send: F) -> (Link, Spawned<T>)
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (queued_tx, queued) = oneshot::channel();
    let (finished, link) = oneshot::channel();
    let (outcome_tx, outcome) = oneshot::channel();
    let turn = Turn {
        queued: Some(queued_tx),
        previous: after,
        _finished: finished,
    };
    // Boxed: a send's future is several KiB, and tokio moves a spawned
    // future (memcpy) more than once on its way into the task.
    let send = Box::pin(send);
    tokio::spawn(TURN.scope(RefCell::new(turn), async move {
        let _ = outcome_tx.send(send.await);
    }));
    (Link(link), Spawned { queued, outcome })
}

/// Awaits `write`, a store write that takes its place in the store's
/// write order when first polled, and lets the connection's next send
/// start as soon as it has.
pub async fn queued<F: Future>(write: F) -> F::Output {
    let mut write = pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let _ = TURN.try_with(|turn| turn.borrow_mut().queued.take().map(|tx| tx.send(())));
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => write.await,
    }
}

/// Waits until the connection's previous send has finished, so that what
/// this one does next follows everything that one did.
pub async fn in_turn() {
    let previous = TURN
        .try_with(|turn| turn.borrow_mut().previous.take())
        .ok()
        .flatten();
    if let Some(Link(previous)) = previous {
        let _ = previous.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A stand-in store write: queued (its number recorded) when first
    /// polled, done when `commit` is told.
    async fn write(
        order: Arc<parking_lot::Mutex<Vec<u32>>>,
        n: u32,
        commit: oneshot::Receiver<()>,
    ) {
        order.lock().push(n);
        let _ = commit.await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_queue_in_order_and_finish_in_order_whatever_order_they_commit_in() {
        let queued_order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let finished_order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut commits = Vec::new();
        let mut outcomes = Vec::new();
        let mut last = None;
        for n in 0..8u32 {
            let (commit, committed) = oneshot::channel();
            commits.push(commit);
            let (q, f) = (queued_order.clone(), finished_order.clone());
            let (link, spawned) = spawn(last.take(), async move {
                // Work before the write that takes a while: the next send
                // must not overtake it.
                tokio::time::sleep(Duration::from_millis(u64::from(8 - n))).await;
                queued(write(q, n, committed)).await;
                in_turn().await;
                f.lock().push(n);
                n
            });
            last = Some(link);
            outcomes.push(spawned.queued().await);
        }
        assert_eq!(*queued_order.lock(), (0..8).collect::<Vec<_>>());
        assert!(finished_order.lock().is_empty(), "nothing committed yet");
        // Commit newest first: the sends still finish oldest first.
        for commit in commits.into_iter().rev() {
            commit.send(()).unwrap();
        }
        for (n, outcome) in outcomes.into_iter().enumerate() {
            assert_eq!(outcome.await.unwrap(), n as u32);
        }
        assert_eq!(*finished_order.lock(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_send_that_stores_nothing_lets_the_next_start_when_it_ends() {
        let (link, spawned) = spawn(None, async { 7 });
        assert_eq!(spawned.queued().await.await.unwrap(), 7);
        let (_, spawned) = spawn(Some(link), async {
            in_turn().await;
            8
        });
        assert_eq!(spawned.queued().await.await.unwrap(), 8);
    }

    #[tokio::test]
    async fn outside_a_pipeline_both_are_no_ops() {
        in_turn().await;
        assert_eq!(queued(async { 3 }).await, 3);
    }
}
