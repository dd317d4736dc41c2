//! Password guessing, bounded: every password check that a request starts (a credential not in
//! the cache) takes one from two budgets, its client address's and its username's (GCRA, by
//! governor: a burst of N, then N a minute). Past either, the request is answered `429` with
//! `Retry-After` and no check runs, so one address cannot try more than its budget against any
//! username, nor many addresses more than the username's budget against one username, and the
//! check threads stay free for everyone else.
//!
//! A subscriber whose username is being guessed from elsewhere can still log in from an address
//! where it logged in before: a password that matched from an address exempts that pair from the
//! username's budget (for [`TRUSTED_FOR`]); the address's own budget still counts.
//!
//! Memory: the budgets are maps of 16-byte keys (a keyed hash of the username; the address,
//! IPv6 by its /64). Keys whose budget is full again are dropped at most every
//! [`SWEEP_EVERY`]; a map that still holds [`MAX_KEYS`] keys is started afresh (every budget
//! full again: a flood of new keys cannot grow the process without bound, at the price of one
//! more burst for the guessers, which the log says).

use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The most keys a budget map holds before it is started afresh.
pub const MAX_KEYS: usize = 250_000;
/// How often keys whose budget is full again are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long an address where a subscriber's password matched stays exempt from its username's
/// budget.
const TRUSTED_FOR: Duration = Duration::from_secs(24 * 3600);
/// The most (username, address) pairs remembered as trusted.
const MAX_TRUSTED: usize = 100_000;

type Key = [u8; 16];
type Budgets = RateLimiter<Key, DashMapStateStore<Key>, MonotonicClock>;

/// Password checks allowed per minute (and in a burst) for one username and for one address.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleLimits {
    pub per_username: u32,
    pub per_address: u32,
}

impl Default for ThrottleLimits {
    fn default() -> ThrottleLimits {
        ThrottleLimits {
            per_username: 10,
            per_address: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Whose {
    Username,
    Address,
}

/// Whose budget is spent, and when the next check would be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    Username(Duration),
    Address(Duration),
}

impl Throttled {
    /// Whole seconds to wait, at least one.
    pub fn retry_after_seconds(&self) -> u32 {
        let (Throttled::Username(wait) | Throttled::Address(wait)) = self;
        u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Throttled::Username(_) => "throttled_username",
            Throttled::Address(_) => "throttled_address",
        }
    }
}

pub struct Throttle {
    /// A random per-process key for the username hashes.
    key: [u8; 32],
    limits: ThrottleLimits,
    usernames: RwLock<Budgets>,
    addresses: RwLock<Budgets>,
    trusted: Mutex<HashMap<Key, Instant>>,
    /// Keys whose budget was found spent, and until when: a request for one of them is answered
    /// `429` before anything else is done for it (no database read), until then.
    spent: Mutex<HashMap<(Whose, Key), Instant>>,
    clock: MonotonicClock,
    born: Instant,
    /// Milliseconds after `born` of the last sweep.
    swept_ms: AtomicU64,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            key: super::random_key(),
            limits,
            usernames: RwLock::new(budgets(limits.per_username)),
            addresses: RwLock::new(budgets(limits.per_address)),
            trusted: Mutex::new(HashMap::new()),
            spent: Mutex::new(HashMap::new()),
            clock: MonotonicClock,
            born: Instant::now(),
            swept_ms: AtomicU64::new(0),
        }
    }

    /// Takes one password check from the budgets of `address` (if known) and `username`
    /// (unless the pair is trusted); `Err` when either is spent, and then no check may run.
    pub fn take(&self, username: &str, address: Option<IpAddr>) -> Result<(), Throttled> {
        self.sweep_now_and_then();
        let user = self.username_key(username);
        if let Some(address) = address {
            let key = address_key(address);
            take_from(&self.addresses, &key, &self.clock)
                .map_err(|wait| self.spent_until(Whose::Address, key, wait))?;
            if self.is_trusted(&pair_key(&user, address)) {
                return Ok(());
            }
        }
        take_from(&self.usernames, &user, &self.clock)
            .map_err(|wait| self.spent_until(Whose::Username, user, wait))
    }

    /// Whether a password check for `username` from `address` would be refused now, as a budget
    /// was found spent a moment ago: answered without reading the database. Takes nothing.
    pub fn spent(&self, username: &str, address: Option<IpAddr>) -> Option<Throttled> {
        let user = self.username_key(username);
        let trusted = address.is_some_and(|address| self.is_trusted(&pair_key(&user, address)));
        let spent = self.spent.lock().ok()?;
        let now = Instant::now();
        let left = |whose, key| {
            spent
                .get(&(whose, key))
                .and_then(|until: &Instant| until.checked_duration_since(now))
        };
        if let Some(address) = address
            && let Some(wait) = left(Whose::Address, address_key(address))
        {
            return Some(Throttled::Address(wait));
        }
        if trusted {
            return None;
        }
        left(Whose::Username, user).map(Throttled::Username)
    }

    fn spent_until(&self, whose: Whose, key: Key, wait: Duration) -> Throttled {
        if let Ok(mut spent) = self.spent.lock() {
            if spent.len() >= MAX_KEYS {
                let now = Instant::now();
                spent.retain(|_, until| *until > now);
            }
            if spent.len() < MAX_KEYS {
                spent.insert((whose, key), Instant::now() + wait);
            }
        }
        match whose {
            Whose::Username => Throttled::Username(wait),
            Whose::Address => Throttled::Address(wait),
        }
    }

    /// The password of `username` matched from `address`: that pair is exempt from the
    /// username's budget for a while.
    pub fn succeeded(&self, username: &str, address: Option<IpAddr>) {
        let Some(address) = address else { return };
        let pair = pair_key(&self.username_key(username), address);
        let Ok(mut trusted) = self.trusted.lock() else {
            return;
        };
        if trusted.len() >= MAX_TRUSTED {
            trusted.retain(|_, since| since.elapsed() < TRUSTED_FOR);
            if trusted.len() >= MAX_TRUSTED {
                trusted.clear();
            }
        }
        trusted.insert(pair, Instant::now());
    }

    /// Keys held now, in both budget maps (for `/metrics` and the tests of the bound).
    pub fn keys(&self) -> usize {
        let len = |budgets: &RwLock<Budgets>| budgets.read().map_or(0, |b| b.len());
        len(&self.usernames) + len(&self.addresses)
    }

    fn is_trusted(&self, pair: &Key) -> bool {
        self.trusted
            .lock()
            .ok()
            .and_then(|trusted| trusted.get(pair).map(|since| since.elapsed() < TRUSTED_FOR))
            .unwrap_or(false)
    }

    fn username_key(&self, username: &str) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(username.as_bytes());
        truncate(hasher.finalize().into())
    }

    fn sweep_now_and_then(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.swept_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= SWEEP_EVERY.as_millis() as u64;
        if due
            && self
                .swept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }

    /// Drops the keys whose budget is full again; starts a map afresh that is still too big.
    pub fn sweep(&self) {
        if let Ok(mut spent) = self.spent.lock() {
            let now = Instant::now();
            spent.retain(|_, until| *until > now);
            spent.shrink_to_fit();
        }
        for (name, budgets, per_minute) in [
            ("username", &self.usernames, self.limits.per_username),
            ("address", &self.addresses, self.limits.per_address),
        ] {
            let too_big = budgets.read().is_ok_and(|budgets| {
                budgets.retain_recent();
                budgets.shrink_to_fit();
                budgets.len() >= MAX_KEYS
            });
            if too_big && let Ok(mut budgets) = budgets.write() {
                *budgets = self::budgets(per_minute);
                tracing::warn!(
                    budgets = name,
                    keys = MAX_KEYS,
                    "too many password-check budgets at once: started them afresh"
                );
            }
        }
    }
}

fn budgets(per_minute: u32) -> Budgets {
    let burst = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::dashmap_with_clock(Quota::per_minute(burst), MonotonicClock)
}

/// Takes one from `key`'s budget; how long to wait when it is spent. A map at its bound takes
/// no new key until the next sweep (the keys it has still count): it never grows past
/// [`MAX_KEYS`]. A key enters only when its address's budget allowed the check, so filling a
/// map takes thousands of addresses.
fn take_from(budgets: &RwLock<Budgets>, key: &Key, clock: &MonotonicClock) -> Result<(), Duration> {
    let Ok(budgets) = budgets.read() else {
        return Ok(());
    };
    if budgets.len() >= MAX_KEYS {
        return Ok(());
    }
    budgets
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// An IPv4 address whole; an IPv6 address by its /64, the block a single host usually holds.
fn address_key(address: IpAddr) -> Key {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            octets
        }
    }
}

fn pair_key(user: &Key, address: IpAddr) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(user);
    hasher.update(address_key(address));
    truncate(hasher.finalize().into())
}

fn truncate(hash: [u8; 32]) -> Key {
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash[..16]);
    key
}

/// A short hash of a username for log lines, keyed by a random key of this process: which
/// username is under attack can be followed from line to line while the server runs, and the
/// log cannot be searched offline for a username, nor for a password typed where the username
/// goes.
pub fn username_hash(username: &str) -> String {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let mut hasher = Sha256::new();
    hasher.update(KEY.get_or_init(super::random_key));
    hasher.update(username.as_bytes());
    let hash: [u8; 32] = hasher.finalize().into();
    hash[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("address"))
    }

    #[test]
    fn a_username_and_an_address_each_have_a_budget() {
        let throttle = Throttle::new(ThrottleLimits {
            per_username: 3,
            per_address: 5,
        });
        for _ in 0..3 {
            assert_eq!(throttle.take("victim", ip("10.0.0.1")), Ok(()));
        }
        let refused = throttle.take("victim", ip("10.0.0.2"));
        assert!(
            matches!(refused, Err(Throttled::Username(_))),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().retry_after_seconds() >= 1);
        // The same address, other usernames: the address's budget (5) is spent after 2 more.
        assert_eq!(throttle.take("other-1", ip("10.0.0.1")), Ok(()));
        assert_eq!(throttle.take("other-2", ip("10.0.0.1")), Ok(()));
        let refused = throttle.take("other-3", ip("10.0.0.1"));
        assert!(matches!(refused, Err(Throttled::Address(_))), "{refused:?}");
        // IPv6 by /64: the hosts of one block share a budget; another block has its own.
        for n in 0..5 {
            let host = ip(&format!("2001:db8::{}", n + 1));
            assert_eq!(throttle.take(&format!("v6-{n}"), host), Ok(()));
        }
        let refused = throttle.take("v6-5", ip("2001:db8::99"));
        assert!(matches!(refused, Err(Throttled::Address(_))), "{refused:?}");
        assert_eq!(throttle.take("v6-6", ip("2001:db8:0:1::1")), Ok(()));
    }

    #[test]
    fn a_trusted_address_logs_in_while_its_username_is_guessed_elsewhere() {
        let throttle = Throttle::new(ThrottleLimits {
            per_username: 2,
            per_address: 100,
        });
        assert_eq!(throttle.take("crm", ip("10.0.0.1")), Ok(()));
        throttle.succeeded("crm", ip("10.0.0.1"));
        // Guessed from elsewhere until the username's budget is spent.
        while throttle.take("crm", ip("10.9.9.9")).is_ok() {}
        assert!(matches!(
            throttle.take("crm", ip("10.8.8.8")),
            Err(Throttled::Username(_))
        ));
        assert_eq!(
            throttle.take("crm", ip("10.0.0.1")),
            Ok(()),
            "its own address"
        );
        // What was found spent is known without taking anything.
        assert!(matches!(
            throttle.spent("crm", ip("10.8.8.8")),
            Some(Throttled::Username(_))
        ));
        assert_eq!(throttle.spent("crm", ip("10.0.0.1")), None);
        assert_eq!(throttle.spent("other", ip("10.8.8.8")), None);
    }

    /// A flood of a million new usernames: the maps stay within their bound.
    #[test]
    fn a_million_keys_stay_within_the_bound() {
        let throttle = Throttle::new(ThrottleLimits::default());
        for n in 0..1_000_000u32 {
            let _ = throttle.take(&format!("user-{n}"), None);
        }
        assert!(
            throttle.keys() <= MAX_KEYS,
            "{} keys after a million usernames",
            throttle.keys()
        );
        throttle.sweep();
        assert!(throttle.keys() <= MAX_KEYS);
    }

    #[test]
    fn username_hashes_are_short_stable_and_not_the_name() {
        assert_eq!(username_hash("crm"), username_hash("crm"));
        // Keyed: not the plain SHA-256 that anyone could compute from a list of names.
        let plain: [u8; 32] = Sha256::digest(b"crm").into();
        let plain: String = plain[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_ne!(username_hash("crm"), plain);
        assert_ne!(username_hash("crm"), username_hash("crn"));
        assert_eq!(username_hash("crm").len(), 16);
        assert!(!username_hash("crm").contains("crm"));
    }
}
