//! Blocking work with a wall-clock limit: document extraction on the
//! blocking pool (a decoder stuck on a hostile file must not hold a worker
//! slot or an API request forever).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::EXTRACTIONS_ABANDONED;

/// What became of work run with [`run_bounded`].
#[derive(Debug, PartialEq)]
pub enum Bounded<T> {
    Done(T),
    /// Still running past its limit: given up.
    Abandoned,
}

/// Runs `work` on the blocking pool and waits at most `limit` for it. A
/// thread cannot be stopped from outside, so work past its limit is given
/// up and runs on; `paperhook_abandoned_extractions` counts it until it
/// returns. A panic in it is the `Err`.
pub async fn run_bounded<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Bounded<T>, tokio::task::JoinError> {
    #[derive(PartialEq)]
    enum State {
        Running,
        Abandoned,
        Finished,
    }
    /// Marks the work finished when it returns or panics.
    struct Finish(Arc<Mutex<State>>);
    impl Drop for Finish {
        fn drop(&mut self) {
            let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if *state == State::Abandoned {
                EXTRACTIONS_ABANDONED.dec();
            }
            *state = State::Finished;
        }
    }
    let state = Arc::new(Mutex::new(State::Running));
    let finish = Finish(state.clone());
    let mut handle = tokio::task::spawn_blocking(move || {
        let _finish = finish;
        work()
    });
    if let Ok(joined) = tokio::time::timeout(limit, &mut handle).await {
        return joined.map(Bounded::Done);
    }
    {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == State::Running {
            *state = State::Abandoned;
            EXTRACTIONS_ABANDONED.inc();
            return Ok(Bounded::Abandoned);
        }
    }
    // It finished just as the limit passed.
    handle.await.map(Bounded::Done)
}

#[cfg(test)]
mod tests {
    use super::{Bounded, run_bounded};
    use crate::metrics::EXTRACTIONS_ABANDONED;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn work_past_its_limit_is_given_up_and_counted_until_it_returns() {
        assert_eq!(
            run_bounded(Duration::from_secs(30), || 7).await.unwrap(),
            Bounded::Done(7)
        );
        let before = EXTRACTIONS_ABANDONED.get();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let out = run_bounded(Duration::from_millis(100), move || wait.recv().is_ok())
            .await
            .unwrap();
        assert_eq!(out, Bounded::Abandoned);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(EXTRACTIONS_ABANDONED.get(), before + 1);
        // When the stuck work returns, it is no longer counted.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while EXTRACTIONS_ABANDONED.get() != before {
            assert!(Instant::now() < deadline, "the gauge was not decremented");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A panic is an error, not a hang.
        let panicked = run_bounded(Duration::from_secs(30), || -> u8 { panic!("boom") }).await;
        assert!(panicked.unwrap_err().is_panic());
    }
}
