//! Runs the database work of concurrent requests together: the requests
//! that arrive while earlier statements are running go into the next one
//! (one round trip, and one commit, for all of them). A lone request waits
//! for nothing: its statement starts at once.
//!
//! Used for the two statements every submission runs: the API key check
//! ([`super::accounts::KeyChecker`]) and the job insert
//! ([`super::jobs::Inserter`]).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// One caller's request in a batch, and where its outcome goes.
#[derive(Debug)]
pub struct Pending<I, O> {
    pub item: I,
    pub done: oneshot::Sender<sqlx::Result<O>>,
}

/// Hands requests to the task that batches them.
#[derive(Debug)]
pub struct Batcher<I, O> {
    pending: mpsc::Sender<Pending<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            pending: self.pending.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task that batches requests on the current Tokio runtime:
    /// `run` gets at most `max_items` requests at a time, and at most
    /// `statements` runs go on at once; it must answer every request of its
    /// batch. The task ends when the last clone is dropped.
    pub fn spawn<F, Fut>(max_items: usize, statements: usize, run: F) -> Self
    where
        F: Fn(Vec<Pending<I, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_items = max_items.max(1);
        let (pending, mut queued) = mpsc::channel::<Pending<I, O>>(max_items * 4);
        let running = Arc::new(Semaphore::new(statements.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = running.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = Vec::with_capacity(max_items);
                if queued.recv_many(&mut batch, max_items).await == 0 {
                    return;
                }
                let work = run(batch);
                tokio::spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
        });
        Batcher { pending }
    }

    /// Runs `item` with those of concurrent callers; its own outcome.
    pub async fn call(&self, item: I) -> sqlx::Result<O> {
        let (done, outcome) = oneshot::channel();
        self.pending
            .send(Pending { item, done })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// Fails every request of a batch with a copy of `err`; a database that
/// cannot be reached stays recognisable as such
/// ([`super::is_unavailable`]), so each caller answers 503, and so does
/// a statement that was never sent (no connection within the acquire
/// timeout) as opposed to one whose connection broke while it ran
/// ([`super::outcome_unknown`]).
pub fn fail_all<I, O>(batch: Vec<Pending<I, O>>, err: &sqlx::Error) {
    for p in batch {
        let _ = p.done.send(Err(copy_of(err)));
    }
}

fn copy_of(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        e if super::is_unavailable(e) => sqlx::Error::Io(std::io::Error::other(e.to_string())),
        e => sqlx::Error::Protocol(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::copy_of;
    use crate::db::{is_unavailable, outcome_unknown};

    #[test]
    fn copies_keep_whether_the_database_saw_the_statement() {
        let broke = sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into());
        for (err, unavailable, unknown) in [
            (sqlx::Error::PoolTimedOut, true, false),
            (sqlx::Error::PoolClosed, true, false),
            (broke, true, true),
            (sqlx::Error::RowNotFound, false, false),
        ] {
            let copy = copy_of(&err);
            assert_eq!(is_unavailable(&copy), unavailable, "{err}");
            assert_eq!(outcome_unknown(&copy), unknown, "{err}");
        }
    }
}
