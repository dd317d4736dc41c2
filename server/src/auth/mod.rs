//! HTTP Basic authentication of service subscribers, with a short-lived cache of verified
//! credentials so that a known-good request costs no argon2.
//!
//! The cache is keyed by a keyed hash of the parsed username and password (never the plain
//! password, and not the header's spelling) and remembers which stored password hash the
//! credential was verified against. Every request still reads the subscriber's current row (in
//! the lookup's one statement, which also answers the grant), so a changed password or a
//! removed subscriber stops working at once, on every replica, without shared state.
//!
//! Only a credential that was let through is cached. Every refusal (wrong password, unknown
//! user, no grant, no scope) costs one password check, first time and every time, so neither
//! the time to answer nor `/metrics` tells a right password from a wrong one. Requests that
//! bring the same credential while it is being checked wait for that one check, right or wrong.

mod checks;
mod throttle;

pub use checks::{PasswordChecks, Unavailable};
pub use throttle::{Throttle, ThrottleLimits, Throttled, username_hash};

use crate::errors::ApiError;
use crate::store::SubscriberAccess;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The scope getLinkedCustomer needs on the department in its path.
pub const SEARCH_SCOPE: &str = "customer.search";

/// The longest a request waits for its password check, queue included.
const CHECK_WAIT: Duration = Duration::from_secs(2);
/// Password checks that may wait for a thread, per thread: at ~20 ms a check, about a third of
/// [`CHECK_WAIT`]. Past that, a request is told to come back rather than queued.
const QUEUED_PER_THREAD: usize = 32;

/// A username and password read from an `Authorization: Basic` header.
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    /// The password as sent, for checking it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Reads `Basic base64(username:password)`; `None` when absent or unreadable.
pub fn parse_basic(header: &str) -> Option<Credentials> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    if !is_valid_username(username) {
        return None;
    }
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// What a subscriber may be called: 1 to 64 characters, no control characters (which some
/// databases refuse in text) and no `:` (which ends the username in a Basic header).
pub fn is_valid_username(username: &str) -> bool {
    (1..=64).contains(&username.chars().count())
        && !username.chars().any(|c| c.is_control() || c == ':')
}

/// Hashes a new password for storage (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|err| anyhow::anyhow!("could not hash the password: {err}"))?;
    Ok(hash.to_string())
}

/// 32 random bytes from the system's generator (through the salts argon2 makes).
pub(crate) fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&argon2::password_hash::generate_salt());
    key[16..].copy_from_slice(&argon2::password_hash::generate_salt());
    key
}

/// A new random password: 24 characters of URL-safe base64 (144 bits).
pub fn generate_password() -> String {
    let mut password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_key());
    password.truncate(24);
    password
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// One request's share of a password check in `in_flight`. When dropped, the entry goes if its
/// check has answered (so that a later request checks again: a refusal is never cached) or if
/// no other request waits on it any more.
struct Waiting<'a> {
    in_flight: &'a Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<bool>>>>,
    flight: [u8; 32],
    cell: &'a Arc<tokio::sync::OnceCell<bool>>,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Ok(mut in_flight) = self.in_flight.lock() else {
            return;
        };
        let Some(running) = in_flight.get(&self.flight) else {
            return;
        };
        // The map's reference and this request's: nobody else waits.
        let last = Arc::strong_count(self.cell) <= 2;
        if Arc::ptr_eq(running, self.cell) && (self.answered || last) {
            in_flight.remove(&self.flight);
        }
    }
}

/// A request's credentials as this server keys them, looked up once per request: their cache
/// key, and the stored hash they were last verified against if they are in the cache (fresh or
/// not). A lookup reads the document only while the subscriber's hash is still that one, and
/// [`Authenticator::authorize`] decides as ever.
pub struct Presented<'a> {
    credentials: &'a Credentials,
    key: [u8; 32],
    pub verified_hash: Option<String>,
}

impl Presented<'_> {
    pub fn username(&self) -> &str {
        &self.credentials.username
    }
}

struct Verified {
    subscriber_id: i64,
    password_hash: String,
    at: Instant,
    /// When a request began checking this credential again after it expired.
    refresh_started: Option<Instant>,
}

pub struct Authenticator {
    /// A random per-process key, so that cache keys are useless outside this process.
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// The password checks running now, by credential and stored hash: a request with the
    /// same credential as one being checked waits for that check instead of starting its own.
    in_flight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<bool>>>>,
    /// Bounds the CPU and memory that argon2 can take, however many bad passwords arrive.
    checks: PasswordChecks,
    /// Checked against when the username is unknown (see `authorize`).
    decoy_hash: String,
    /// The size of `in_flight`, set when `/metrics` is read.
    shared_checks: prometheus::IntGauge,
    /// Password checks per username and per client address.
    throttle: Throttle,
    /// The keys the throttle holds, set when `/metrics` is read.
    throttle_keys: prometheus::IntGauge,
}

impl Authenticator {
    pub fn new(ttl: Duration, limits: ThrottleLimits) -> anyhow::Result<Authenticator> {
        let key = random_key();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Authenticator {
            key,
            ttl,
            capacity: 10_000,
            verified: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            checks: PasswordChecks::start(cores, cores * QUEUED_PER_THREAD, CHECK_WAIT)?,
            decoy_hash: hash_password("a password that no request will match")?,
            shared_checks: prometheus::IntGauge::new(
                "password_checks_shared",
                "Password checks being shared by the requests that wait on them now.",
            )?,
            throttle: Throttle::new(limits),
            throttle_keys: prometheus::IntGauge::new(
                "password_check_budgets",
                "Usernames and client addresses whose password-check budget is being counted.",
            )?,
        })
    }

    /// argon2 checks that ran to the end (what the cache saves shows here), and the checks
    /// being shared now, for `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.checks.done.clone()),
            Box::new(self.shared_checks.clone()),
            Box::new(self.throttle_keys.clone()),
        ]
    }

    /// Brings the gauges up to date, before `/metrics` is read.
    pub fn update_gauges(&self) {
        self.shared_checks.set(self.checks_in_flight() as i64);
        self.throttle_keys.set(self.throttle.keys() as i64);
    }

    #[cfg(test)]
    fn password_checks(&self) -> prometheus::IntCounter {
        self.checks.done.clone()
    }

    /// Length-prefixed, so that `ab` + `c` and `a` + `bc` are different keys.
    fn cache_key(&self, credentials: &Credentials) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update((credentials.username.len() as u64).to_le_bytes());
        hasher.update(credentials.username.as_bytes());
        hasher.update(credentials.password.as_bytes());
        hasher.finalize().into()
    }

    /// `credentials`, keyed and looked up in the cache once for the whole request.
    pub fn present<'a>(&self, credentials: &'a Credentials) -> Presented<'a> {
        let key = self.cache_key(credentials);
        let verified_hash = self
            .verified
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).map(|entry| entry.password_hash.clone()));
        Presented {
            credentials,
            key,
            verified_hash,
        }
    }

    /// Credentials that are not cached, and so would need a password check, that a budget
    /// found spent a moment ago refuses: the request is answered `429` before the database is
    /// read. Cached credentials are never refused here.
    pub fn spent(&self, presented: &Presented<'_>, address: Option<IpAddr>) -> Option<Throttled> {
        if presented.verified_hash.is_some() {
            return None;
        }
        self.throttle.spent(presented.username(), address)
    }

    /// Lets the request through if `credentials` name a subscriber (`access`, as read for this
    /// request) whose password matches and who holds the scope on the department; every other
    /// outcome is the same `NotAuthorized`, after the same one password check.
    pub async fn authorize(
        &self,
        presented: &Presented<'_>,
        access: Option<&SubscriberAccess>,
        address: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let Some(access) = access else {
            // An unknown username costs the same password check (and budget) as a known one,
            // so that neither the time to answer nor a 429 tells which usernames exist.
            self.verify_once(presented, address, &self.decoy_hash)
                .await?;
            return Err(ApiError::NotAuthorized);
        };
        let key = presented.key;
        if access.granted && self.is_cached(&key, access.subscriber_id, &access.password_hash) {
            return Ok(());
        }
        // Checked even without the grant: a refusal that skipped the hash would answer faster
        // for a right password than for a wrong one.
        let matches = self
            .verify_once(presented, address, &access.password_hash)
            .await?;
        if !(matches && access.granted) {
            return Err(ApiError::NotAuthorized);
        }
        self.throttle.succeeded(presented.username(), address);
        self.remember(key, access.subscriber_id, access.password_hash.clone());
        Ok(())
    }

    /// [`Authenticator::verify`], shared by the requests that arrive with the same credential
    /// (`key`) for the same stored hash while it runs: a burst of one subscriber's requests on
    /// a server whose cache is empty (it has just started) costs one check, not one per
    /// request (which would fill the queue and answer a good credential with 503s). Right and
    /// wrong passwords are shared alike, so this tells nothing about either; requests one after
    /// another still cost a check each when refused.
    async fn verify_once(
        &self,
        presented: &Presented<'_>,
        address: Option<IpAddr>,
        stored: &str,
    ) -> Result<bool, ApiError> {
        let mut hasher = Sha256::new();
        hasher.update(presented.key);
        hasher.update(stored.as_bytes());
        let flight: [u8; 32] = hasher.finalize().into();
        let cell = self
            .in_flight
            .lock()
            .map(|mut in_flight| in_flight.entry(flight).or_default().clone())
            .ok();
        let Some(cell) = cell else {
            return self.throttled_verify(presented, address, stored).await;
        };
        // Taken out of the map when this request is done with it, or dropped (its client went
        // away): nothing is left behind, however the waiters end.
        let mut waiting = Waiting {
            in_flight: &self.in_flight,
            flight,
            cell: &cell,
            answered: false,
        };
        // The first request runs the check; the others wait for its answer. If it gives up
        // (its client went away) or the check could not be run, the next one tries itself.
        let answer = cell
            .get_or_try_init(|| self.throttled_verify(presented, address, stored))
            .await
            .copied();
        waiting.answered = true;
        answer
    }

    /// The password checks being shared now (what `in_flight` holds), for `/metrics`.
    pub fn checks_in_flight(&self) -> usize {
        self.in_flight.lock().map_or(0, |in_flight| in_flight.len())
    }

    /// A check that starts here takes from the username's and the address's budgets; past
    /// either, a 429 and no check (requests that share a check running already take nothing).
    async fn throttled_verify(
        &self,
        presented: &Presented<'_>,
        address: Option<IpAddr>,
        stored: &str,
    ) -> Result<bool, ApiError> {
        self.throttle
            .take(presented.username(), address)
            .map_err(ApiError::TooManyRequests)?;
        self.verify(presented.credentials.password(), stored).await
    }

    /// A check that cannot be done now is a 503 (come back), never a 401 (wrong password).
    async fn verify(&self, password: &str, stored: &str) -> Result<bool, ApiError> {
        self.checks
            .verify(password, stored)
            .await
            .map_err(|unavailable| match unavailable {
                Unavailable::Saturated => {
                    tracing::warn!("password checks are saturated; a request was told to retry");
                    ApiError::Unavailable
                }
                Unavailable::Stopped => {
                    anyhow::anyhow!("the password check threads stopped").into()
                }
            })
    }

    /// Whether this credential was verified against `password_hash` not long ago. Once the
    /// entry has expired, one request checks the password again while the others that arrive
    /// meanwhile are still let through on the entry, for at most one check's wait: so a busy
    /// credential's expiry costs one password check, not one per request in flight (which
    /// would fill the queue and turn a good credential's requests into 503s). The stored hash
    /// is compared on every request, so a changed password still stops working at once.
    fn is_cached(&self, key: &[u8; 32], subscriber_id: i64, password_hash: &str) -> bool {
        let Ok(mut cache) = self.verified.lock() else {
            return false;
        };
        let Some(entry) = cache.get_mut(key) else {
            return false;
        };
        let same = entry.subscriber_id == subscriber_id
            && bool::from(
                entry
                    .password_hash
                    .as_bytes()
                    .ct_eq(password_hash.as_bytes()),
            );
        if !same {
            return false;
        }
        if entry.at.elapsed() < self.ttl {
            return true;
        }
        match entry.refresh_started {
            Some(started) if started.elapsed() < CHECK_WAIT => true,
            _ => {
                entry.refresh_started = Some(Instant::now());
                false
            }
        }
    }

    fn remember(&self, key: [u8; 32], subscriber_id: i64, password_hash: String) {
        let Ok(mut cache) = self.verified.lock() else {
            return;
        };
        if cache.len() >= self.capacity {
            let ttl = self.ttl;
            cache.retain(|_, entry| entry.at.elapsed() < ttl);
            if cache.len() >= self.capacity {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Verified {
                subscriber_id,
                password_hash,
                at: Instant::now(),
                refresh_started: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(userpass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userpass)
        )
    }

    /// Subscriber 7, password `s3cret`, granted.
    fn reader_access() -> SubscriberAccess {
        SubscriberAccess {
            subscriber_id: 7,
            password_hash: hash_password("s3cret").unwrap(),
            granted: true,
        }
    }

    #[test]
    fn reads_basic_credentials() {
        let creds = parse_basic(&basic("demo:pa:ss")).unwrap();
        assert_eq!(creds.username, "demo");
        assert_eq!(creds.password, "pa:ss");
        assert!(parse_basic(&basic("nocolon")).is_none());
        assert!(parse_basic(&basic(":pw")).is_none());
        assert!(parse_basic(&basic("de\0mo:pw")).is_none());
        assert!(parse_basic(&basic(&format!("{}:pw", "u".repeat(65)))).is_none());
        assert!(parse_basic("Bearer abc").is_none());
        assert!(parse_basic("Basic !!!").is_none());
        assert!(parse_basic("Basic").is_none());
        assert!(!format!("{creds:?}").contains("pa:ss"));
    }

    /// A busy credential's expiry: one request checks it again, the others go on meanwhile.
    #[tokio::test]
    async fn an_expired_credential_is_checked_again_once_not_per_request() {
        let auth = std::sync::Arc::new(
            Authenticator::new(Duration::from_millis(50), ThrottleLimits::default()).unwrap(),
        );
        let access = reader_access();
        let credentials = parse_basic(&basic("reader:s3cret")).unwrap();
        auth.authorize(&auth.present(&credentials), Some(&access), None)
            .await
            .unwrap();
        assert_eq!(auth.password_checks().get(), 1);
        auth.authorize(&auth.present(&credentials), Some(&access), None)
            .await
            .unwrap();
        assert_eq!(auth.password_checks().get(), 1, "cached");

        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (auth, access) = (auth.clone(), access.clone());
            let credentials = parse_basic(&basic("reader:s3cret")).unwrap();
            requests.spawn(async move {
                auth.authorize(&auth.present(&credentials), Some(&access), None)
                    .await
            });
        }
        while let Some(answer) = requests.join_next().await {
            let answer = answer.unwrap();
            assert!(answer.is_ok(), "{answer:?}");
        }
        assert_eq!(
            auth.password_checks().get(),
            2,
            "one check for the expiry, not 16"
        );

        // A changed password is refused at once, even while an expired entry is refreshed.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (first, second) = (auth.present(&credentials), auth.present(&credentials));
        let refresh = auth.authorize(&first, Some(&access), None);
        let changed = SubscriberAccess {
            password_hash: hash_password("other").unwrap(),
            ..access.clone()
        };
        let (refreshed, after_change) =
            tokio::join!(refresh, auth.authorize(&second, Some(&changed), None));
        assert!(refreshed.is_ok());
        assert!(matches!(after_change, Err(ApiError::NotAuthorized)));
    }

    /// A server that has just started gets a burst of one subscriber's requests, none of
    /// them cached: one check answers them all. Wrong passwords are shared the same way when
    /// they arrive together, and cost a check each when they come one after another.
    #[tokio::test]
    async fn requests_with_a_credential_being_checked_wait_for_that_check() {
        let auth = std::sync::Arc::new(
            Authenticator::new(Duration::from_secs(60), ThrottleLimits::default()).unwrap(),
        );
        let access = reader_access();
        let burst = |header: &'static str| {
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..40 {
                let (auth, access) = (auth.clone(), access.clone());
                let credentials = parse_basic(&basic(header)).unwrap();
                requests.spawn(async move {
                    auth.authorize(&auth.present(&credentials), Some(&access), None)
                        .await
                });
            }
            requests
        };
        let mut good = burst("reader:s3cret");
        while let Some(answer) = good.join_next().await {
            assert!(answer.unwrap().is_ok());
        }
        assert_eq!(auth.password_checks().get(), 1, "one check for 40 requests");

        let mut wrong = burst("reader:guess");
        while let Some(answer) = wrong.join_next().await {
            assert!(matches!(answer.unwrap(), Err(ApiError::NotAuthorized)));
        }
        assert_eq!(
            auth.password_checks().get(),
            2,
            "one check for 40 identical guesses"
        );
        let credentials = parse_basic(&basic("reader:guess")).unwrap();
        for expected in 3..6 {
            assert!(
                auth.authorize(&auth.present(&credentials), Some(&access), None)
                    .await
                    .is_err()
            );
            assert_eq!(
                auth.password_checks().get(),
                expected,
                "a refusal is never cached"
            );
        }
    }

    /// Every request waiting on a check goes away before it answers (their clients reset):
    /// the shared entry goes with the last of them.
    #[tokio::test]
    async fn a_check_whose_waiters_all_went_away_leaves_nothing_behind() {
        let auth = std::sync::Arc::new(
            Authenticator::new(Duration::from_secs(60), ThrottleLimits::default()).unwrap(),
        );
        let access = reader_access();
        for round in 0..20 {
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let (auth, access) = (auth.clone(), access.clone());
                // Different credentials in each round, shared by the round's four requests.
                let credentials = parse_basic(&basic(&format!("user{round}:guess"))).unwrap();
                requests.spawn(async move {
                    auth.authorize(&auth.present(&credentials), Some(&access), None)
                        .await
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                auth.checks_in_flight() >= 1,
                "round {round}: the check is shared"
            );
            requests.abort_all();
            while requests.join_next().await.is_some() {}
            assert_eq!(
                auth.checks_in_flight(),
                0,
                "round {round}: an entry was left behind"
            );
        }
        // And answered ones go as before.
        let credentials = parse_basic(&basic("reader:s3cret")).unwrap();
        auth.authorize(&auth.present(&credentials), Some(&access), None)
            .await
            .unwrap();
        assert_eq!(auth.checks_in_flight(), 0);
    }

    #[test]
    fn hashes_verify_only_the_right_password() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("s3cret!", &hash));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}
