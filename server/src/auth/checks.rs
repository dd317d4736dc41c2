//! argon2 password checks on a few threads of their own: one per core, so that at most that many
//! hashes run at any time, however many requests arrive, go away or time out. The bound holds
//! until a hash has finished (the thread is busy), not until the request that asked has gone,
//! and so does the memory: at most one set of argon2 blocks (19 MiB at the default cost) per
//! thread at a time, which the allocator hands back after each check (`main.rs`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a check did not give an answer: the caller should say "try again", never "wrong".
#[derive(Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Every thread is busy and the queue is full, or the answer did not come within the wait.
    Saturated,
    /// The checking threads are gone (they only stop when the process does).
    Stopped,
}

struct Job {
    password: String,
    stored: String,
    answer: oneshot::Sender<bool>,
    /// The request's `password check` span (traces): the thread's work goes below it.
    check: tracing::Span,
    /// Open while the job waits for a thread.
    queued: tracing::Span,
}

pub struct PasswordChecks {
    jobs: SyncSender<Job>,
    wait: Duration,
    /// Checks that ran to the end (not those skipped because their request had gone).
    pub done: prometheus::IntCounter,
}

impl PasswordChecks {
    /// `threads` checking threads, `queue` checks waiting for one, and `wait` as the longest a
    /// request waits for its answer.
    pub fn start(threads: usize, queue: usize, wait: Duration) -> anyhow::Result<PasswordChecks> {
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let done = prometheus::IntCounter::new(
            "password_checks_total",
            "argon2 password verifications (requests whose credential was not cached).",
        )?;
        for index in 0..threads.max(1) {
            let (receiver, done) = (Arc::clone(&receiver), done.clone());
            std::thread::Builder::new()
                .name(format!("password-check-{index}"))
                .spawn(move || work(&receiver, &done))?;
        }
        Ok(PasswordChecks { jobs, wait, done })
    }

    /// Whether `password` matches the PHC string `stored`.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, Unavailable> {
        let check = crate::traces::child(|| tracing::debug_span!("password check"));
        let (answer, answered) = oneshot::channel();
        let job = Job {
            password: password.to_string(),
            stored: stored.to_string(),
            answer,
            queued: below(
                &check,
                || tracing::debug_span!(parent: &check, "password check: waiting for a thread"),
            ),
            check: check.clone(),
        };
        self.jobs.try_send(job).map_err(|err| match err {
            TrySendError::Full(_) => Unavailable::Saturated,
            TrySendError::Disconnected(_) => Unavailable::Stopped,
        })?;
        match tokio::time::timeout(self.wait, answered).await {
            Ok(Ok(matches)) => Ok(matches),
            Ok(Err(_)) => Err(Unavailable::Stopped),
            // Dropping `answered` tells the thread to skip this job if it has not started it.
            Err(_) => Err(Unavailable::Saturated),
        }
    }
}

/// `make()`'s span below `parent`, or none when `parent` is none (a span with no parent would
/// be a trace of its own).
fn below(parent: &tracing::Span, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if parent.is_none() {
        tracing::Span::none()
    } else {
        make()
    }
}

fn work(jobs: &Mutex<Receiver<Job>>, done: &prometheus::IntCounter) {
    loop {
        // The lock is held only while waiting for the next job, not while hashing.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        drop(job.queued);
        // Its request went away or stopped waiting: nobody needs the answer.
        if job.answer.is_closed() {
            continue;
        }
        let matches = below(
            &job.check,
            || tracing::debug_span!(parent: &job.check, "password check: argon2"),
        )
        .in_scope(|| super::verify_password(&job.password, &job.stored));
        done.inc();
        let _ = job.answer.send(matches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_and_refuses_promptly_when_full() {
        let hash = super::super::hash_password("pw").unwrap();
        let checks = PasswordChecks::start(1, 1, Duration::from_secs(10)).unwrap();
        assert_eq!(checks.verify("pw", &hash).await, Ok(true));
        assert_eq!(checks.verify("nope", &hash).await, Ok(false));
        assert_eq!(checks.done.get(), 2);

        // One thread and one place in the queue: of three at once, one at least is refused at
        // once rather than queued, and the others get their answer.
        let answers = tokio::join!(
            checks.verify("pw", &hash),
            checks.verify("pw", &hash),
            checks.verify("pw", &hash)
        );
        let answers = [answers.0, answers.1, answers.2];
        assert!(
            answers.contains(&Err(Unavailable::Saturated)),
            "{answers:?}"
        );
        assert!(answers.contains(&Ok(true)), "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(true) | Err(Unavailable::Saturated))),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn a_request_that_stops_waiting_costs_no_hash() {
        let hash = super::super::hash_password("pw").unwrap();
        let checks =
            std::sync::Arc::new(PasswordChecks::start(1, 9, Duration::from_secs(30)).unwrap());
        // The only thread is busy with a check that someone waits for...
        let blocker = {
            let (checks, hash) = (checks.clone(), hash.clone());
            tokio::spawn(async move { checks.verify("pw", &hash).await })
        };
        // (this test's runtime has one thread: the blocker queues its check when this one
        // waits)
        tokio::time::sleep(Duration::from_millis(5)).await;
        // ...while eight requests queue behind it and go away after 1 ms, long before it is
        // done (a hash takes tens of milliseconds).
        // All eight are queued at once, within the blocker's hash.
        let mut abandoned = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (checks, hash) = (checks.clone(), hash.clone());
            abandoned.spawn(async move {
                tokio::time::timeout(Duration::from_millis(1), checks.verify("pw", &hash)).await
            });
        }
        while let Some(gave_up) = abandoned.join_next().await {
            assert!(gave_up.unwrap().is_err(), "answered within 1 ms");
        }
        assert_eq!(blocker.await.unwrap(), Ok(true));
        // Give the thread time to skip what nobody waits for, then count what it hashed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            checks.done.get(),
            1,
            "{} hashes for 1 awaited and 8 abandoned checks",
            checks.done.get()
        );
    }
}
