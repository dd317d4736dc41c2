//! Where a lookup goes: to the read replicas in turn when there are any (`--database-read-url`),
//! to the primary otherwise, or when no replica is left and falling back is allowed.
//!
//! A replica whose lookup fails for want of the database (it stopped, its connection broke, it
//! did not answer in time) is taken out of the rotation at once, and the lookup is sent on to
//! the next replica or the primary (also after a statement cancelled for a conflict with
//! recovery), so that only a lookup that ran out of time is lost. A task per replica asks it for its replication lag every second: the
//! answer (or its absence) puts the replica back in the rotation or keeps it out, and is the
//! lag that `/metrics` shows.

use super::reads::Reads;
use crate::store::{
    DatabaseLimits, DatabaseState, Lookup, LookupKey, Readiness, Unreachable, redact,
};
use anyhow::{Result, anyhow};
use prometheus::{Gauge, IntCounter, IntGauge};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// How often each replica is asked for its lag (and so how soon one that is back is used).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One database that answers lookups.
pub struct Target {
    /// `primary`, `replica1`, `replica2`, ...: the label in `/metrics` and `/readyz`.
    name: String,
    /// The URL without its password, for the log.
    shown: String,
    reads: Reads,
    up: AtomicBool,
    up_gauge: IntGauge,
    lookups: IntCounter,
    lag: Option<Gauge>,
}

impl Target {
    fn new(name: String, url: &str, reads: Reads, replica: bool) -> Result<Target> {
        let opts = |metric: &str, help: &str| {
            prometheus::Opts::new(metric, help).const_label("database", name.as_str())
        };
        let up_gauge = IntGauge::with_opts(opts("database_up", super::super::DATABASE_UP_HELP))?;
        up_gauge.set(1);
        let lookups = IntCounter::with_opts(opts(
            "database_lookups_total",
            "Lookups answered by each database.",
        ))?;
        let lag = replica
            .then(|| {
                Gauge::with_opts(opts(
                    "replication_lag_seconds",
                    "How far the replica's replay is behind the primary, as the replica last said \
                     (0: it has replayed everything it received).",
                ))
            })
            .transpose()?;
        Ok(Target {
            name,
            shown: redact(url),
            reads,
            up: AtomicBool::new(true),
            up_gauge,
            lookups,
            lag,
        })
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records whether the database answers; a change is logged once, with its reason, here
    /// (not at every `/readyz`).
    fn set_up(&self, up: bool, why: Option<&anyhow::Error>) {
        let was = self.up.swap(up, Ordering::AcqRel);
        self.up_gauge.set(i64::from(up));
        match (was, up) {
            (true, false) => tracing::warn!(
                database = %self.name,
                url = %self.shown,
                error = why.map(|e| format!("{e:#}")),
                "database unreachable: no lookups are sent to it until it answers again"
            ),
            (false, true) => {
                tracing::info!(database = %self.name, url = %self.shown, "database answers again")
            }
            _ => {}
        }
    }

    /// A lookup on this database; one that fails for want of the database marks it down, and
    /// one that succeeds marks it up (a load of the flag when nothing changed).
    async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>> {
        let statement = crate::store::statement_span("postgresql", &self.name);
        match self.reads.lookup(key).instrument(statement).await {
            Ok(found) => {
                self.lookups.inc();
                if !self.is_up() {
                    self.set_up(true, None);
                }
                Ok(found)
            }
            Err(err) => {
                if crate::store::is_unavailable(&err) {
                    self.set_up(false, Some(&err));
                }
                Err(err)
            }
        }
    }

    /// Asks the database for its lag; records the answer, or that there was none.
    async fn probe(&self) {
        match self.reads.replication_lag().await {
            Ok(seconds) => {
                if let Some(lag) = &self.lag {
                    lag.set(seconds);
                }
                self.set_up(true, None);
            }
            Err(err) => self.set_up(false, Some(&err)),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.up_gauge.clone()),
            Box::new(self.lookups.clone()),
        ];
        if let Some(lag) = &self.lag {
            collectors.push(Box::new(lag.clone()));
        }
        collectors
    }
}

/// The primary's reads and the replicas'.
pub struct Router {
    primary: Arc<Target>,
    replicas: Vec<Arc<Target>>,
    fall_back_to_primary: bool,
    next: AtomicUsize,
}

/// No replica could take the lookup and the primary may not (a `503`).
#[derive(Debug, thiserror::Error)]
#[error("no read replica is reachable, and reads may not fall back to the primary")]
struct NoReplica;

impl Router {
    /// `primary` is open already; each replica gets its connections as lookups need them, and a
    /// task that probes it for as long as the router lives.
    pub fn new(
        primary: Reads,
        primary_url: &str,
        replica_urls: &[String],
        fall_back_to_primary: bool,
        connections: usize,
        limits: DatabaseLimits,
    ) -> Result<Router> {
        let primary = Arc::new(Target::new("primary".into(), primary_url, primary, false)?);
        let replicas = replica_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let reads = Reads::new(url, connections, limits)?;
                Target::new(format!("replica{}", i + 1), url, reads, true).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        for replica in &replicas {
            let replica = Arc::downgrade(replica);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(PROBE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(replica) = replica.upgrade() else {
                        return; // the store is gone
                    };
                    replica.probe().await;
                }
            });
        }
        Ok(Router {
            primary,
            replicas,
            fall_back_to_primary,
            next: AtomicUsize::new(0),
        })
    }

    pub async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>> {
        let count = self.replicas.len();
        if count == 0 {
            return self.primary.lookup(key).await;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let replica = &self.replicas[(first + offset) % count];
            if !replica.is_up() {
                continue;
            }
            match replica.lookup(key).await {
                Ok(found) => return Ok(found),
                // Another database may answer; the replica marked itself down if it is gone.
                Err(err) if is_worth_another_database(&err) => {}
                Err(err) => return Err(err),
            }
        }
        if self.fall_back_to_primary {
            self.primary.lookup(key).await
        } else {
            Err(anyhow!(NoReplica).context(Unreachable))
        }
    }

    /// The primary asked now (by `primary`); each replica as its probe (every second) or its
    /// last lookup found it, so that a load balancer's frequent checks cost the replicas
    /// nothing. And whether lookups can be answered.
    pub async fn readiness(
        &self,
        primary: impl std::future::Future<Output = Result<()>>,
    ) -> Readiness {
        match primary.await {
            Ok(()) => self.primary.set_up(true, None),
            Err(err) => self.primary.set_up(false, Some(&err)),
        }
        let replica_up = self.replicas.iter().any(|replica| replica.is_up());
        let primary_serves = self.replicas.is_empty() || self.fall_back_to_primary;
        Readiness {
            serving: replica_up || (self.primary.is_up() && primary_serves),
            databases: std::iter::once(&self.primary)
                .chain(&self.replicas)
                .map(|target| DatabaseState {
                    name: target.name.clone(),
                    reachable: target.is_up(),
                })
                .collect(),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        std::iter::once(&self.primary)
            .chain(&self.replicas)
            .flat_map(|target| target.collectors())
            .collect()
    }
}

/// A failure that another database may not have: this one could not be reached or its
/// connection broke (not a lookup that ran out of time, whose deadline is spent), or a standby
/// cancelled the statement for a conflict with the replay of the primary's changes (SQLSTATE
/// 40001, which leaves the replica in the rotation: it is well, the statement was unlucky).
fn is_worth_another_database(err: &anyhow::Error) -> bool {
    let timed_out = err
        .chain()
        .any(|cause| cause.is::<tokio::time::error::Elapsed>());
    let recovery_conflict = err.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|code| code.code() == "40001")
    });
    recovery_conflict || (crate::store::is_unavailable(err) && !timed_out)
}
