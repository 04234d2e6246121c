//! Group commit for single dispatches: concurrent `dispatch` calls in one process become one multi-row insert.
//!
//! A service taking webhooks over HTTP sees many concurrent single-message requests; one statement and one
//! commit each makes the database's per-statement and per-commit cost the ceiling. With coalescing on, a
//! dispatch joins a queue; one insert at a time runs for everything queued meanwhile (as the worker's
//! recorder does for outcomes), so an idle dispatcher adds no delay and a busy one amortizes its commits.
//!
//! Only for dispatchers over a shared executor (a pool): a caller's transaction must get its row in its own
//! transaction, so [`Dispatcher::using`](crate::Dispatcher::using) never coalesces. The batch runs on a spawned
//! task with its own handle on the pool, so a caller that gives up (a client disconnecting) cannot cancel the
//! insert of the other callers' rows.
//!
//! Each caller gets exactly its own result: a batch is all or nothing, so when any of its rows is refused
//! (unknown endpoint, unsubscribed type, a conflicting idempotency key) the batch is retried row by row, and
//! idempotency stays exact because the multi-row statement enforces the same rules as the single one.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::config::Settings;
use crate::dispatcher::Dispatcher;
use crate::enqueue::{Announce, ValidMessage, MAX_DISPATCH_MANY};
use crate::error::{DispatchError, StorageError};
use crate::message::Dispatched;
use crate::store::Executor;

type Reply = oneshot::Sender<Result<Dispatched, DispatchError>>;

/// The queue of one coalescing dispatcher (shared by its clones).
pub(crate) struct Coalescer {
    executor: Arc<dyn Executor>,
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(ValidMessage, Reply)>,
    /// An insert task is running; it takes whatever is queued when it is done.
    running: bool,
}

impl Coalescer {
    pub(crate) fn new(executor: Arc<dyn Executor>) -> Arc<Self> {
        Arc::new(Coalescer {
            executor,
            state: Mutex::new(Queue::default()),
        })
    }

    /// Queues `message` and waits for its own result.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        settings: &Arc<Settings>,
        message: ValidMessage,
    ) -> Result<Dispatched, DispatchError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push((message, tx));
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let coalescer = self.clone();
            let d = Dispatcher::from_parts(self.executor.clone(), settings.clone());
            tokio::spawn(async move { coalescer.run(d).await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(StorageError::decode("the batch insert task ended without an answer").into())
        })
    }

    /// Inserts queued messages, one batch at a time, until the queue is empty.
    async fn run(self: Arc<Self>, d: Dispatcher<Arc<dyn Executor>>) {
        loop {
            let batch = {
                let mut queue = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                let n = queue.waiting.len().min(MAX_DISPATCH_MANY);
                queue.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (messages, replies): (Vec<ValidMessage>, Vec<Reply>) = batch.into_iter().unzip();
            let mut created = 0;
            for (reply, result) in replies.into_iter().zip(insert(&d, messages).await) {
                created += usize::from(matches!(&result, Ok(sent) if sent.created));
                // A caller that stopped waiting still had its row inserted; nobody is left to tell.
                let _ = reply.send(result);
            }
            // After the answers: waking workers elsewhere (NOTIFY) is a round trip nobody needs to wait for.
            d.announce(created).await;
        }
    }
}

/// One result per message, in order.
async fn insert(
    d: &Dispatcher<Arc<dyn Executor>>,
    messages: Vec<ValidMessage>,
) -> Vec<Result<Dispatched, DispatchError>> {
    let mut results: Vec<Option<Result<Dispatched, DispatchError>>> =
        (0..messages.len()).map(|_| None).collect();
    // Positions (into `messages`) still to be written together.
    let mut rest: Vec<usize> = (0..messages.len()).collect();
    while !rest.is_empty() {
        if rest.len() == 1 {
            results[rest[0]] = Some(d.insert_one(messages[rest[0]].clone(), Announce::Later).await);
            break;
        }
        let batch = rest.iter().map(|&i| messages[i].clone()).collect();
        match d.insert_many(batch, Announce::Later).await {
            Ok(all) => {
                for (&i, sent) in rest.iter().zip(all) {
                    results[i] = Some(Ok(sent));
                }
                break;
            }
            // Nothing was inserted: every caller gets the storage error its own insert would have had.
            Err(DispatchError::Storage(e)) => {
                for &i in &rest {
                    results[i] = Some(Err(e.copy_for_another_caller().into()));
                }
                break;
            }
            // One row was refused, so nothing was inserted: that row gets its own answer from the single-row
            // statement, and the others are tried together again.
            Err(DispatchError::InBatch { index, .. }) => {
                let i = rest.remove(index.min(rest.len() - 1));
                results[i] = Some(d.insert_one(messages[i].clone(), Announce::Later).await);
            }
            Err(other) => {
                for &i in &rest {
                    results[i] = Some(Err(StorageError::decode("unexpected batch insert failure").into()));
                }
                tracing::error!(error = %other, "coalesced insert failed unexpectedly");
                break;
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StorageError::decode("no result for a coalesced dispatch").into())))
        .collect()
}
