//! The HTTP side's limits: how long a request may take, how long a connection may wait for a
//! request head, how many connections are served at once, and a watchdog for connections that
//! have stopped making progress between requests.
//!
//! actix-web's request-head deadline covers only a connection's first request, and its
//! keep-alive timer stops at the first byte of the next one: a client that sends one byte after
//! each answer could hold a connection forever. The watchdog closes a connection that has had
//! no request in flight for longer than a request could need (keep-alive, then the head
//! deadline, then the request deadline, all spent), whatever state its parser is in.

use crate::errors::ApiError;
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{ResponseError, rt};
use anyhow::Context;
use std::any::Any;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The longest a request may take from its head to its answer: past it, a `503`.
    pub request_timeout: Duration,
    /// How long a client may take to send a request head (actix-web's client request timeout).
    pub header_timeout: Duration,
    /// How long an idle connection is kept open for its next request.
    pub keep_alive: Duration,
    /// Connections served at once, over all workers; more wait in the listen backlog.
    pub max_connections: usize,
    /// Password checks a username and a client address may start, per minute.
    pub password_checks: crate::auth::ThrottleLimits,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            max_connections: 4096,
            password_checks: crate::auth::ThrottleLimits::default(),
        }
    }
}

impl HttpLimits {
    /// How long a connection may go without a request in flight before the watchdog closes it.
    fn stalled_after(&self) -> Duration {
        self.keep_alive + self.header_timeout + self.request_timeout
    }
}

/// Answers `503` when the request is not answered within its deadline. The handler's future
/// is dropped; work it handed to a thread of its own (a password check) is bounded there.
/// For a resource's `wrap`, after routing: the request it keeps for the answer is a clone, and
/// actix-web's router needs the only one.
pub async fn deadline(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let timeout = request
        .app_data::<actix_web::web::Data<HttpLimits>>()
        .map_or(HttpLimits::default().request_timeout, |limits| {
            limits.request_timeout
        });
    let http_request = request.request().clone();
    match tokio::time::timeout(timeout, next.call(request)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "a request ran out of time"
            );
            Ok(ServiceResponse::new(
                http_request,
                ApiError::Unavailable.error_response(),
            ))
        }
    }
}

/// Counts every request as in flight on its connection while the application works on it,
/// so that the watchdog leaves a busy connection alone. For the whole application's `wrap`.
pub async fn track_activity(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let _in_flight = request.conn_data::<Arc<Activity>>().map(|a| a.start());
    next.call(request).await
}

/// What the watchdog knows of one connection: requests in flight, and when the last one ended.
pub struct Activity {
    born: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `born` when the connection last had no request in flight.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn stalled(&self, limit: Duration) -> bool {
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        self.in_flight.load(Ordering::SeqCst) == 0 && self.born.elapsed() > idle_since + limit
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.born.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(now, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For `HttpServer::on_connect`: gives the connection its [`Activity`] and starts its watchdog,
/// which holds a duplicate of the socket (so that it never touches a reused descriptor) and
/// ends when the connection's data is dropped.
pub fn watch_connection(limits: HttpLimits) -> impl Fn(&dyn Any, &mut Extensions) + Clone {
    move |io, extensions| {
        let stream = match io.downcast_ref::<rt::net::TcpStream>() {
            Some(plain) => plain,
            None => match io.downcast_ref::<TlsStream<rt::net::TcpStream>>() {
                Some(tls) => tls.get_ref().0,
                None => return,
            },
        };
        let Ok(socket) = stream.as_fd().try_clone_to_owned() else {
            return;
        };
        let activity = Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        });
        let watched = Arc::downgrade(&activity);
        extensions.insert(activity);
        rt::spawn(watchdog(watched, std::net::TcpStream::from(socket), limits));
    }
}

async fn watchdog(activity: Weak<Activity>, socket: std::net::TcpStream, limits: HttpLimits) {
    let limit = limits.stalled_after();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(limit));
    loop {
        tick.tick().await;
        let Some(activity) = activity.upgrade() else {
            return;
        };
        if activity.stalled(limit) {
            tracing::info!(
                idle_ms = limit.as_millis() as u64,
                "closing a connection that made no progress"
            );
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Descriptors a server needs beyond its connections: the listeners, the database's files or
/// sockets, logs, the password-check threads' wake-ups and the like.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and stops the start when even that is
/// too low for `max_connections` (each connection holds two descriptors: its socket and the
/// watchdog's duplicate). A common soft limit of 1024 would otherwise end about 500
/// connections in `EMFILE`, failing requests instead of queueing them in the backlog.
pub fn raise_descriptor_limit(max_connections: usize) -> anyhow::Result<()> {
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(SPARE_DESCRIPTORS);
    let (soft, hard) = descriptor_limits()?;
    if hard < needed {
        anyhow::bail!(
            "--max-connections {max_connections} needs about {needed} file descriptors, and \
             this process may open at most {hard} (RLIMIT_NOFILE): raise the hard limit \
             (`ulimit -Hn`, systemd's LimitNOFILE) or lower --max-connections to {}",
            hard.saturating_sub(SPARE_DESCRIPTORS) / 2
        );
    }
    if soft < hard {
        set_soft_descriptor_limit(hard)?;
        tracing::debug!(from = soft, to = hard, "raised the soft RLIMIT_NOFILE");
    }
    Ok(())
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn descriptor_limits() -> anyhow::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` that lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("could not read RLIMIT_NOFILE");
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set_soft_descriptor_limit(soft: u64) -> anyhow::Result<()> {
    let (_, hard) = descriptor_limits()?;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `setrlimit` reads one `rlimit` that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("could not raise RLIMIT_NOFILE");
    }
    Ok(())
}
