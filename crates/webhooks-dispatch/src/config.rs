//! Dispatcher configuration: a builder whose `build` performs no I/O and cannot fail.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderValue;
use ipnet::IpNet;
use rustls::RootCertStore;

use crate::concurrency::{Caps, EndpointLimiter};
use crate::delivery::{default_roots, Deliverer, DeliveryOptions};
use crate::dispatcher::Dispatcher;
use crate::hold_back::HoldBack;
use crate::keyring::SecretCipher;
use crate::notify::Debounce;
use crate::observe::{NoopObserver, Observer};
use crate::retry::RetryPolicy;
use crate::ssrf::{AddressPolicy, BoundedResolver, Resolver, SystemResolver};

/// Source of "now" for scheduling and signature timestamps; inject one in tests.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// `at + d`, or the latest representable time when that lies beyond it. Every duration a time is computed
/// from is clamped by the builder, so this saturates only for a clock set near the end of time; it exists so
/// that no setting, policy or clock can make a time computation panic.
pub(crate) fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Default absolute deadline for one attempt (DNS, connect, TLS, request and response head).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on opening a connection (TCP connect, then the TLS handshake, each), inside the attempt's
/// deadline: a healthy receiver connects in milliseconds, and one that does not within this is treated as
/// unreachable rather than holding a delivery slot for the whole attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default number of deliveries one `deliver_due` call or one worker runs at once. By Little's law a worker
/// delivers at most this many ÷ the receivers' latency per second: with receivers answering in 20 ms, 64
/// held one worker at 2,800/s (bound 3,200/s), far below what its database round trips allow; 256 measured
/// 6,900/s (the benchmark's sizing scenario). Each in-flight attempt costs a task and a connection.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Default most attempts in flight to one endpoint in this process.
pub const DEFAULT_PER_ENDPOINT_CONCURRENCY: usize = 16;
/// Default shortest time between two wake-up NOTIFYs sent by one process.
pub const DEFAULT_NOTIFY_DEBOUNCE: Duration = Duration::from_millis(5);
/// Largest response-body prefix read from an endpoint; the rest is discarded unread.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 4 * 1024;
/// Default time a vetted DNS answer is reused: long enough that a busy endpoint costs one lookup per half
/// minute instead of one per delivery, short enough that a DNS change is followed promptly.
pub const DEFAULT_DNS_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default time an unused keep-alive connection is kept open.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default number of idle HTTP/1.1 connections kept per destination (host name and address).
pub const DEFAULT_MAX_IDLE_PER_DESTINATION: usize = 32;

/// Default deadline of one DNS lookup of the system resolver (or an injected one): registration fails with
/// `dns_timeout` after it, and a delivery's lookup is bounded by it inside the attempt's own deadline.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default most DNS lookups in flight at once per dispatcher configuration: the system resolver runs each on
/// tokio's blocking pool (shared with SQLite's statements and file I/O), which must not be taken by lookups.
pub const DEFAULT_CONCURRENT_LOOKUPS: usize = 32;

// The largest value each setting takes: larger ones are clamped to these, so no setting can overflow the time
// and counter arithmetic built on it (`Instant + d`, leases of several attempt deadlines, `DateTime + d`).
/// Largest attempt deadline ([`DispatcherBuilder::attempt_timeout`]): 1 hour.
pub const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Largest delivery concurrency and per-endpoint cap ([`DispatcherBuilder::concurrency`],
/// [`DispatcherBuilder::per_endpoint_concurrency`]).
pub const MAX_CONCURRENCY: usize = 65_536;
/// Largest NOTIFY debounce interval ([`DispatcherBuilder::notify_debounce`]): 1 minute.
pub const MAX_NOTIFY_DEBOUNCE: Duration = Duration::from_secs(60);
/// Largest response-body prefix read ([`DispatcherBuilder::max_response_body`]): 1 MiB. The body never
/// decides an outcome; it is read only so a connection can be reused.
pub const MAX_RESPONSE_BODY_LIMIT: usize = 1024 * 1024;
/// Largest DNS cache TTL ([`DispatcherBuilder::dns_cache_ttl`]): 1 day.
pub const MAX_DNS_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest keep-alive idle time ([`DispatcherBuilder::pool_idle_timeout`]): 1 day.
pub const MAX_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest failing time before an endpoint is disabled ([`DispatcherBuilder::disable_failing_after`]): 10 years.
pub const MAX_DISABLE_FAILING_AFTER: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Largest DNS lookup deadline ([`DispatcherBuilder::dns_timeout`]): 1 minute.
pub const MAX_DNS_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest number of DNS lookups in flight at once ([`DispatcherBuilder::concurrent_lookups`]): tokio's
/// default number of blocking threads, which the system resolver's lookups occupy.
pub const MAX_CONCURRENT_LOOKUPS: usize = 512;

/// Default time an endpoint may go without a delivery, while failing and with a message gone dead, before it
/// is disabled as failing: 5 days.
pub const DEFAULT_DISABLE_FAILING_AFTER: Duration = Duration::from_secs(5 * 24 * 60 * 60);

/// What an attempt answered `410 Gone` does besides ending its message as dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnGone {
    /// Disable the endpoint (reason `gone`) in the statement that records the attempt, as the Standard
    /// Webhooks spec asks: the receiver said it is no more, so nothing else is sent until it is enabled.
    #[default]
    Disable,
    /// Only end the message as dead, like any other permanent failure.
    Dead,
}

/// Everything the dispatcher needs besides its executor; shared by all `Dispatcher` handles.
pub(crate) struct Settings {
    pub retry: RetryPolicy,
    pub clock: Arc<dyn Clock>,
    pub policy: AddressPolicy,
    pub resolver: Arc<dyn Resolver>,
    pub deliverer: Deliverer,
    pub attempt_timeout: Duration,
    pub concurrency: usize,
    pub limiter: Arc<EndpointLimiter>,
    /// None: dispatch never sends NOTIFY.
    pub notify: Option<Debounce>,
    /// Wakes workers in this process that share this configuration. The only wake-up on engines without
    /// NOTIFY (SQLite), and a head start on PostgreSQL. `notify_one` keeps a permit when no worker is waiting,
    /// so a dispatch between a worker's empty claim and its sleep is not missed.
    pub local_wake: tokio::sync::Notify,
    pub observer: Arc<dyn Observer>,
    pub on_gone: OnGone,
    pub disable_failing_after: Option<Duration>,
    /// None: endpoints are never held back.
    pub hold_back: Option<HoldBack>,
    /// None: new keys are stored as plaintext and sealed rows cannot be opened.
    pub cipher: Option<Arc<dyn SecretCipher>>,
    /// Endpoint keys already opened, so a claimed message does not decrypt its keys again.
    pub opened_keys: crate::keys::OpenedKeys,
}

/// Configures a [`Dispatcher`]. Every setter takes already-valid values, so [`build`](Self::build) cannot fail.
pub struct DispatcherBuilder<E> {
    executor: E,
    retry: RetryPolicy,
    attempt_timeout: Duration,
    allow: Vec<IpNet>,
    resolver: Arc<dyn Resolver>,
    roots: Option<RootCertStore>,
    clock: Arc<dyn Clock>,
    concurrency: usize,
    per_endpoint: usize,
    /// None: half of `concurrency`.
    per_owner: Option<usize>,
    per_host: Option<usize>,
    hold_back: Option<HoldBack>,
    connect_timeout: Duration,
    notify: Option<Duration>,
    max_response_body: usize,
    user_agent: HeaderValue,
    dns_cache_ttl: Duration,
    pool_idle_timeout: Duration,
    max_idle_per_destination: usize,
    http2: bool,
    observer: Arc<dyn Observer>,
    coalesce: Option<Arc<dyn crate::store::Executor>>,
    on_gone: OnGone,
    disable_failing_after: Option<Duration>,
    dns_timeout: Duration,
    concurrent_lookups: usize,
    cipher: Option<Arc<dyn SecretCipher>>,
}

impl<E: crate::store::Executor + Clone + 'static> DispatcherBuilder<E> {
    /// Group commit for single dispatches (default off): concurrent [`Dispatcher::dispatch`] calls on this
    /// dispatcher and its clones are written by one multi-row insert, each caller still getting exactly its
    /// own result. For a dispatcher over a pool that many requests share, as in a service; dispatches made
    /// through [`Dispatcher::using`] (a caller's transaction) are never coalesced.
    pub fn coalesce_dispatches(mut self) -> Self {
        self.coalesce = Some(Arc::new(self.executor.clone()));
        self
    }
}

impl<E> DispatcherBuilder<E> {
    pub(crate) fn new(executor: E) -> Self {
        DispatcherBuilder {
            executor,
            retry: RetryPolicy::default(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            allow: Vec::new(),
            resolver: Arc::new(SystemResolver),
            roots: None,
            clock: Arc::new(SystemClock),
            concurrency: DEFAULT_CONCURRENCY,
            per_endpoint: DEFAULT_PER_ENDPOINT_CONCURRENCY,
            per_owner: None,
            per_host: None,
            hold_back: Some(HoldBack::default()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            notify: Some(DEFAULT_NOTIFY_DEBOUNCE),
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            observer: Arc::new(NoopObserver),
            user_agent: HeaderValue::from_static(concat!("webhooks-dispatch/", env!("CARGO_PKG_VERSION"))),
            dns_cache_ttl: DEFAULT_DNS_CACHE_TTL,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            max_idle_per_destination: DEFAULT_MAX_IDLE_PER_DESTINATION,
            http2: true,
            coalesce: None,
            on_gone: OnGone::default(),
            disable_failing_after: Some(DEFAULT_DISABLE_FAILING_AFTER),
            dns_timeout: DEFAULT_DNS_TIMEOUT,
            concurrent_lookups: DEFAULT_CONCURRENT_LOOKUPS,
            cipher: None,
        }
    }

    /// Disables an endpoint (reason `failing`) once it has failed for this long without a single delivery
    /// and at least one of its messages went dead meanwhile (default 5 days; `None`: never). The clock starts
    /// at its first failed attempt after its last delivery and any delivery stops it; both are kept in the
    /// database, so the rule holds across restarts and processes. It is checked when a failed attempt is
    /// recorded. At most [`MAX_DISABLE_FAILING_AFTER`] (10 years); longer is clamped to it.
    pub fn disable_failing_after(mut self, after: Option<Duration>) -> Self {
        self.disable_failing_after = after.map(|after| after.min(MAX_DISABLE_FAILING_AFTER));
        self
    }

    /// What a `410 Gone` answer does besides ending its message as dead (default: disable the endpoint).
    pub fn on_gone(mut self, on_gone: OnGone) -> Self {
        self.on_gone = on_gone;
        self
    }

    /// How many attempts and what backoff (default: 6 attempts, 60 s doubling, capped at 1 h). Delays longer
    /// than [`MAX_RETRY_DELAY`](crate::retry::MAX_RETRY_DELAY) (30 days) are clamped to it.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy.clamped();
        self
    }

    /// Absolute deadline for one attempt (default 10 s). Zero is raised to 1 ms; more than
    /// [`MAX_ATTEMPT_TIMEOUT`] (1 hour) is clamped to it.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout.clamp(Duration::from_millis(1), MAX_ATTEMPT_TIMEOUT);
        self
    }

    /// Deadline of one DNS lookup (default 5 s; at least 1 ms, at most [`MAX_DNS_TIMEOUT`], 1 minute),
    /// waiting for a lookup slot included. Registration and updates whose lookup misses it fail with
    /// [`DispatchError::DnsTimeout`](crate::DispatchError::DnsTimeout), which is worth retrying; a delivery's
    /// lookup is bounded by it and by the attempt's own deadline, whichever ends first.
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout.clamp(Duration::from_millis(1), MAX_DNS_TIMEOUT);
        self
    }

    /// Most DNS lookups in flight at once for this configuration, registrations and deliveries together
    /// (default 32; at least 1, at most [`MAX_CONCURRENT_LOOKUPS`], 512). The system resolver blocks one thread
    /// of tokio's blocking pool per lookup — the pool SQLite statements run on — so the cap keeps lookups to
    /// a hostile or slow name server from taking it. A lookup keeps its slot until the resolver answers (a
    /// blocked thread is still busy after its caller gave up), for at most a minute.
    pub fn concurrent_lookups(mut self, n: usize) -> Self {
        self.concurrent_lookups = n.clamp(1, MAX_CONCURRENT_LOOKUPS);
        self
    }

    /// Bound on opening a connection to an endpoint — the TCP connect, then the TLS handshake, each — inside
    /// the attempt's deadline (default 3 s; 1 ms to the attempt timeout). A receiver that does not get that far
    /// in time counts as unreachable: retried, and its endpoint backed off.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.clamp(Duration::from_millis(1), MAX_ATTEMPT_TIMEOUT);
        self
    }

    /// Allows delivery to addresses inside `net` even though they are not globally routable (loopback in
    /// tests, private services in internal deployments). This is the only way to weaken the SSRF policy, and
    /// it is deliberately code, not an environment variable.
    pub fn allow_net(mut self, net: IpNet) -> Self {
        self.allow.push(net);
        self
    }

    /// DNS resolver used at registration and before every attempt (default: the system resolver). Its lookups
    /// are bounded like the system resolver's ([`dns_timeout`](Self::dns_timeout),
    /// [`concurrent_lookups`](Self::concurrent_lookups)).
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Certificate authorities trusted for endpoint TLS, replacing the default Mozilla roots.
    pub fn root_certificates(mut self, roots: RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Clock for scheduling and signature timestamps (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many deliveries one `deliver_due` call or one worker runs concurrently (default 256; at least 1, at
    /// most [`MAX_CONCURRENCY`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.clamp(1, MAX_CONCURRENCY);
        self
    }

    /// Most attempts in flight to any one endpoint in this process (default 16; at least 1, at most
    /// [`MAX_CONCURRENCY`]), so a slow or hanging endpoint cannot take every delivery slot.
    pub fn per_endpoint_concurrency(mut self, n: usize) -> Self {
        self.per_endpoint = n.clamp(1, MAX_CONCURRENCY);
        self
    }

    /// Most attempts in flight, in this process, to all the endpoints of one owner together (default: half of
    /// [`concurrency`](Self::concurrency); at least 1), so one tenant whose endpoints all hang holds at most
    /// this many slots and the rest stay for everyone else.
    pub fn per_owner_concurrency(mut self, n: usize) -> Self {
        self.per_owner = Some(n.clamp(1, MAX_CONCURRENCY));
        self
    }

    /// Most attempts in flight, in this process, to one destination host (the URL's host name, whatever the
    /// endpoint or owner) (default: half of [`concurrency`](Self::concurrency); at least 1), so a shared
    /// receiver that hangs cannot take every slot either.
    pub fn per_host_concurrency(mut self, n: usize) -> Self {
        self.per_host = Some(n.clamp(1, MAX_CONCURRENCY));
        self
    }

    /// Whether and how an endpoint that keeps failing is held back, new messages included (default
    /// [`HoldBack::default`]: after 3 transient failures in a row, 1 s doubling up to 1 minute; `None`: never,
    /// only each message's own backoff applies). Kept in the database, so every process honours it.
    pub fn hold_back(mut self, hold_back: Option<HoldBack>) -> Self {
        self.hold_back = hold_back.map(HoldBack::clamped);
        self
    }

    /// Whether `dispatch` wakes listening workers with a PostgreSQL NOTIFY, and the shortest interval between
    /// two NOTIFYs from this process (default: on, 5 ms; at most [`MAX_NOTIFY_DEBOUNCE`], 1 minute). `None`
    /// turns it off (workers then poll).
    pub fn notify_debounce(mut self, interval: Option<Duration>) -> Self {
        self.notify = interval.map(|interval| interval.min(MAX_NOTIFY_DEBOUNCE));
        self
    }

    /// Largest response-body prefix read (default 4 KiB; at most [`MAX_RESPONSE_BODY_LIMIT`], 1 MiB). HTTP/2
    /// flow-control windows are sized from it.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes.min(MAX_RESPONSE_BODY_LIMIT);
        self
    }

    /// `User-Agent` sent with every delivery.
    pub fn user_agent(mut self, value: HeaderValue) -> Self {
        self.user_agent = value;
        self
    }

    /// How long a vetted DNS answer is reused before the name is resolved again (default 30 s).
    ///
    /// Only answers in which every address passed the address policy are cached, and cached addresses are
    /// checked against the policy again on every attempt; failures and refusals are never cached. The TTL is
    /// therefore the longest a DNS change (a move, or a rebinding to a refused address) can go unnoticed.
    /// `Duration::ZERO` disables the cache, so every attempt resolves the name afresh. At most
    /// [`MAX_DNS_CACHE_TTL`] (1 day).
    pub fn dns_cache_ttl(mut self, ttl: Duration) -> Self {
        self.dns_cache_ttl = ttl.min(MAX_DNS_CACHE_TTL);
        self
    }

    /// How long an unused keep-alive connection stays open for reuse (default 90 s; at most
    /// [`MAX_POOL_IDLE_TIMEOUT`], 1 day). `Duration::ZERO` disables connection reuse: every attempt opens and
    /// closes its own connection.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout.min(MAX_POOL_IDLE_TIMEOUT);
        self
    }

    /// Most idle HTTP/1.1 connections kept per destination — TLS host name plus vetted address (default 32).
    /// Sized like the concurrency to one endpoint: more idle connections than concurrent attempts are never
    /// used. Zero disables connection reuse, HTTP/2 sharing included.
    pub fn max_idle_per_destination(mut self, n: usize) -> Self {
        self.max_idle_per_destination = n;
        self
    }

    /// Whether to offer HTTP/2 in TLS ALPN (default true). An endpoint that accepts it gets one multiplexed
    /// connection shared by concurrent attempts; endpoints that do not still get HTTP/1.1.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Encrypts endpoint secrets and signing keys at rest (default: none, and then they are stored as
    /// plaintext: give every production dispatcher a [`KeyRing`](crate::KeyRing)). Every process sharing a
    /// database needs a cipher that opens every key it holds: add a new master key to all of them before any
    /// makes it current.
    pub fn secret_cipher(mut self, cipher: Arc<dyn SecretCipher>) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Receives dispatch and attempt events, for metrics (default: none).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Finishes configuration. Performs no I/O.
    pub fn build(self) -> Dispatcher<E> {
        let policy = AddressPolicy::new(self.allow);
        // Every lookup, at registration and before attempts, goes through the same bounds and slots.
        let resolver: Arc<dyn Resolver> = Arc::new(BoundedResolver::new(
            self.resolver,
            self.dns_timeout,
            self.concurrent_lookups,
        ));
        let deliverer = Deliverer::new(
            self.roots.unwrap_or_else(default_roots),
            policy.clone(),
            resolver.clone(),
            DeliveryOptions {
                timeout: self.attempt_timeout,
                max_response_body: self.max_response_body,
                user_agent: self.user_agent,
                dns_cache_ttl: self.dns_cache_ttl,
                pool_idle_timeout: self.pool_idle_timeout,
                max_idle_per_destination: self.max_idle_per_destination,
                http2: self.http2,
                h2_streams: self.per_endpoint,
                connect_timeout: self.connect_timeout.min(self.attempt_timeout),
            },
        );
        let settings = Settings {
            retry: self.retry,
            clock: self.clock,
            policy,
            resolver,
            deliverer,
            attempt_timeout: self.attempt_timeout,
            concurrency: self.concurrency,
            limiter: Arc::new(EndpointLimiter::new(Caps {
                per_endpoint: self.per_endpoint,
                per_owner: self.per_owner.unwrap_or(self.concurrency.div_ceil(2)),
                per_host: self.per_host.unwrap_or(self.concurrency.div_ceil(2)),
            })),
            notify: self.notify.map(Debounce::new),
            local_wake: tokio::sync::Notify::new(),
            observer: self.observer,
            on_gone: self.on_gone,
            disable_failing_after: self.disable_failing_after,
            hold_back: self.hold_back,
            cipher: self.cipher,
            opened_keys: crate::keys::OpenedKeys::default(),
        };
        Dispatcher::from_parts(self.executor, Arc::new(settings))
            .with_coalescer(self.coalesce.map(crate::coalesce::Coalescer::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::tests::any_duration;
    use proptest::prelude::*;

    fn any_count() -> impl Strategy<Value = usize> {
        prop_oneof![Just(0), Just(usize::MAX), any::<usize>(), 0usize..100_000]
    }

    proptest! {
        /// Whatever durations and counts a caller passes, `build()` does not panic and every setting it keeps
        /// is within its documented bound, so the arithmetic built on them cannot overflow: the drain's and
        /// the worker's leases (several attempt deadlines plus a margin, `Instant + lease`, `DateTime +
        /// lease`), the worker's catch-up claim (`Instant + debounce`) and claim sizes (`concurrency +
        /// batch`, `12 × per-endpoint cap`), per-endpoint semaphores, DNS cache expiries and retry times.
        #[test]
        fn any_builder_settings_build_within_their_documented_bounds(
            d in proptest::array::uniform8(any_duration()),
            n in proptest::array::uniform4(any_count()),
            max_attempts in any::<u32>(),
        ) {
            let retry = RetryPolicy { max_attempts, base_delay: d[6], max_delay: d[7] };
            let b = Dispatcher::builder(())
                .attempt_timeout(d[0])
                .dns_cache_ttl(d[1])
                .pool_idle_timeout(d[2])
                .notify_debounce(Some(d[3]))
                .disable_failing_after(Some(d[4]))
                .dns_timeout(d[5])
                .retry_policy(retry)
                .concurrency(n[0])
                .per_endpoint_concurrency(n[1])
                .max_response_body(n[2])
                .concurrent_lookups(n[3]);
            prop_assert!(b.dns_cache_ttl <= MAX_DNS_CACHE_TTL && b.pool_idle_timeout <= MAX_POOL_IDLE_TIMEOUT);
            prop_assert!(b.dns_timeout <= MAX_DNS_TIMEOUT && !b.dns_timeout.is_zero());
            prop_assert!((1..=MAX_CONCURRENT_LOOKUPS).contains(&b.concurrent_lookups));
            prop_assert!(b.max_response_body <= MAX_RESPONSE_BODY_LIMIT);
            let expires = tokio::time::Instant::now().checked_add(b.dns_cache_ttl.max(b.pool_idle_timeout));
            prop_assert!(expires.is_some());

            let d = b.build();
            let s = d.settings();
            let now = tokio::time::Instant::now();
            prop_assert!(s.attempt_timeout <= MAX_ATTEMPT_TIMEOUT);
            let worst_lease = s
                .attempt_timeout
                .checked_mul(crate::MAX_BATCH + 1)
                .and_then(|lease| lease.checked_add(Duration::from_secs(60)));
            prop_assert!(worst_lease.is_some_and(|lease| now.checked_add(lease).is_some()));
            let far = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(365 * 1000);
            prop_assert!(worst_lease.is_some_and(|lease| later(far, lease) < DateTime::<Utc>::MAX_UTC));
            prop_assert!(s.concurrency <= MAX_CONCURRENCY && s.limiter.cap() <= MAX_CONCURRENCY);
            prop_assert!(s.concurrency.checked_add(crate::MAX_BATCH as usize).is_some());
            prop_assert!(s.limiter.cap().checked_mul(12).is_some());
            let route = crate::concurrency::Route {
                endpoint_id: "ep".to_owned(),
                owner_id: "o".into(),
                host: "h".into(),
            };
            prop_assert!(s.limiter.try_acquire(&route).is_some());
            let debounce = s.notify.as_ref().map_or(Duration::ZERO, |n| n.interval());
            prop_assert!(debounce <= MAX_NOTIFY_DEBOUNCE && now.checked_add(debounce).is_some());
            prop_assert!(s.disable_failing_after.is_some_and(|after| after <= MAX_DISABLE_FAILING_AFTER));
            for failed in [1, 2, 64, u32::MAX] {
                let delay = s.retry.backoff(failed);
                prop_assert!(delay <= crate::retry::MAX_RETRY_DELAY);
                prop_assert!(later(far, delay) < DateTime::<Utc>::MAX_UTC);
            }
            prop_assert!(s.deliverer.limits().1 <= MAX_RESPONSE_BODY_LIMIT);
        }
    }

    #[test]
    fn later_saturates_at_the_end_of_time_instead_of_panicking() {
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(later(end, Duration::from_secs(1)), end);
        assert_eq!(later(end - chrono::Duration::seconds(5), Duration::MAX), end);
        let t = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            later(t, Duration::from_secs(90)),
            t + chrono::Duration::seconds(90)
        );
    }

    /// The limits the README promises, as a dispatcher built with no settings resolves them (the response
    /// read limit is also proven on the wire by the conformance suite).
    #[test]
    fn defaults_are_the_documented_limits() {
        let d = Dispatcher::builder(()).build();
        let s = d.settings();
        assert_eq!(s.attempt_timeout, Duration::from_secs(10));
        assert_eq!(s.deliverer.limits(), (Duration::from_secs(10), 4 * 1024));
        assert_eq!(s.concurrency, 256);
        assert_eq!(s.limiter.cap(), 16);
        let caps = s.limiter.caps();
        assert_eq!(
            (caps.per_owner, caps.per_host),
            (128, 128),
            "half of the concurrency each"
        );
        assert_eq!(s.hold_back, Some(HoldBack::default()));
        assert_eq!(
            (s.retry.max_attempts, s.retry.base_delay, s.retry.max_delay),
            (6, Duration::from_secs(60), Duration::from_secs(3600))
        );
        assert!(s.notify.is_some(), "dispatch wakes workers by default");
    }
}
