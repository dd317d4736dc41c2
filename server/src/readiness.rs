//! `/readyz` from kept state: a task probes the databases once a second (each probe bounded by
//! its own deadline) and keeps the last result with its time; `/readyz` answers from it at once,
//! never waiting on a database, the pool or the load. Readiness turns false only after
//! [`FALL`] probes in a row have failed, so one slow answer on a busy machine does not take the
//! server out of its load balancer; it turns true again at the first probe that succeeds.

use crate::store::{Readiness, Store};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// How often the databases are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Failed probes in a row before the server says it is not ready.
pub const FALL: u32 = 3;
/// The longest a probe may take; past it, the probe has failed.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// What `/readyz` says: the last probe's databases, whether the server is ready, and when.
#[derive(Clone, Debug)]
pub struct Kept {
    pub readiness: Readiness,
    /// Ready: the last probe succeeded, or fewer than [`FALL`] have failed since one did.
    pub ready: bool,
    pub probed_at: Instant,
    failures: u32,
}

pub struct KeptReadiness {
    kept: RwLock<Option<Kept>>,
    /// `serving`: 1 while `/readyz` answers `200`.
    serving: prometheus::IntGauge,
}

impl KeptReadiness {
    /// Starts probing `store` (now, then every [`PROBE_EVERY`]) on the current runtime, until
    /// the returned value is dropped.
    pub fn start(store: Arc<dyn Store>) -> anyhow::Result<Arc<KeptReadiness>> {
        let serving = prometheus::IntGauge::new(
            "serving",
            "1 while /readyz answers 200: the databases answer, or fewer than 3 probes in a row \
             have failed.",
        )?;
        let kept = Arc::new(KeptReadiness {
            kept: RwLock::new(None),
            serving,
        });
        tokio::spawn(probe_forever(Arc::downgrade(&kept), store));
        Ok(kept)
    }

    /// The `serving` gauge, for `/metrics`.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.serving.clone())
    }

    /// The last probe's result, or `None` before the first has finished.
    pub fn kept(&self) -> Option<Kept> {
        self.kept
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Probes `store` now and keeps the result (for an answer before the first probe).
    pub async fn probe_now(&self, store: &dyn Store) -> Kept {
        let probed = tokio::time::timeout(PROBE_DEADLINE, store.readiness()).await;
        let readiness = probed.unwrap_or_else(|_| self.timed_out());
        self.record(readiness)
    }

    /// A probe that ran out of time: every database as not answering.
    fn timed_out(&self) -> Readiness {
        let mut databases = self
            .kept()
            .map(|kept| kept.readiness.databases)
            .unwrap_or_default();
        for database in &mut databases {
            database.reachable = false;
        }
        Readiness {
            serving: false,
            databases,
        }
    }

    fn record(&self, readiness: Readiness) -> Kept {
        let mut kept = self
            .kept
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let failures = match (&*kept, readiness.serving) {
            (_, true) => 0,
            (Some(previous), false) => previous.failures.saturating_add(1),
            // A server that starts without its database is not ready.
            (None, false) => FALL,
        };
        let fresh = Kept {
            ready: failures < FALL,
            readiness,
            probed_at: Instant::now(),
            failures,
        };
        self.serving.set(i64::from(fresh.ready));
        *kept = Some(fresh.clone());
        fresh
    }
}

async fn probe_forever(kept: Weak<KeptReadiness>, store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probed = tokio::time::timeout(PROBE_DEADLINE, store.readiness()).await;
        let Some(kept) = kept.upgrade() else { return };
        match probed {
            Ok(readiness) => {
                kept.record(readiness);
            }
            Err(_) => {
                tracing::warn!(
                    deadline_ms = PROBE_DEADLINE.as_millis() as u64,
                    "a readiness probe ran out of time"
                );
                kept.record(kept.timed_out());
            }
        }
    }
}
