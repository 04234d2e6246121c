//! SSRF defence: decide which network destinations a webhook may be sent to.
//!
//! Webhook URLs are chosen by tenants, so without this module anyone who can register an endpoint can make
//! the dispatcher talk to the cloud metadata service, the database on the private network or the admin port
//! on loopback. The defence has three parts, and the rest of the crate must use all of them:
//!
//! 1. [`Destination::parse`] rejects URLs whose shape is wrong (not https, credentials, fragments).
//! 2. [`vet`] resolves the host once and checks *every* address with an [`AddressPolicy`].
//! 3. The caller connects to exactly the [`SocketAddr`]s that `vet` returned, never resolving the name a
//!    second time, so a DNS answer that changes between the check and the connect (DNS rebinding) cannot
//!    slip a private address past the check.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::{IpNet, Ipv4Net};

mod bounded;

pub(crate) use bounded::BoundedResolver;

/// Which destination addresses may be contacted.
///
/// The default refuses everything that is not globally routable unicast, because a webhook receiver is by
/// definition a third party on the public internet. The allowlist exists for the two legitimate exceptions:
/// tests that run a receiver on loopback, and internal deployments whose receivers live on a private network.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// Builds a policy that still refuses every non-global address, except those inside `allow`.
    ///
    /// Allowlisting is deliberately by network rather than by host name: a name can be re-pointed by whoever
    /// controls its DNS, a network range cannot.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The explicit exceptions, exactly as given to [`AddressPolicy::new`], so operators can log or display
    /// the effective policy.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.allow
    }

    /// Decides whether `ip` may be contacted: globally routable unicast always may, anything else only when
    /// an allowlisted network contains it.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4 address it maps to, for the
    /// classification and for the allowlist match, because a dual-stack socket connecting to it really
    /// talks IPv4 to `a.b.c.d`. An allowlist entry written as a mapped IPv6 network (`::ffff:10.0.0.0/104`)
    /// is likewise read as the IPv4 network it spells.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|net| net_contains(net, ip)) => Ok(()),
            Some(range) => Err(Refusal(range)),
        }
    }
}

/// Allowlist match for an already canonical address (mapped IPv6 turned into IPv4).
fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V6(net6), IpAddr::V4(v4)) => {
            // Only a net lying wholly inside ::ffff:0:0/96 can stand for IPv4 addresses; a broad IPv6
            // entry such as ::/0 must not silently open up all of IPv4.
            match (net6.network().to_ipv4_mapped(), net6.prefix_len().checked_sub(96)) {
                (Some(base), Some(len)) => Ipv4Net::new(base, len).is_ok_and(|n| n.contains(&v4)),
                _ => false,
            }
        }
        _ => net.contains(&ip),
    }
}

/// Why an address was refused.
///
/// It carries the category only, never the address, so that the text can be shown to the endpoint's owner
/// without revealing how their host name resolves inside our network (which would make this an oracle for
/// mapping internal DNS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address refused: {}", .0.as_str())]
pub struct Refusal(pub RefusedRange);

/// The special-purpose range a refused address belongs to.
///
/// Distinct variants rather than a bare "not allowed" let operators tell a misconfigured internal receiver
/// (`Private`, fix: allowlist it) from an attack attempt (`LinkLocal` metadata, `EmbeddedIpv4` tricks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedRange {
    /// 0.0.0.0/8 and `::`: "this host/network", which many stacks treat as the local machine.
    Unspecified,
    /// 127.0.0.0/8 and `::1`.
    Loopback,
    /// RFC 1918 networks and the local-use NAT64 prefix 64:ff9b:1::/48.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT space, often used for internal platform networks.
    SharedCgnat,
    /// 169.254.0.0/16 (cloud metadata lives here) and fe80::/10.
    LinkLocal,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 240.0.0.0/4 and the IPv6 discard prefix 100::/64.
    Reserved,
    /// Documentation ranges (TEST-NET-1/2/3, 2001:db8::/32, 3fff::/20).
    Documentation,
    /// 198.18.0.0/15 and 2001:2::/48.
    Benchmarking,
    /// IETF protocol assignments (192.0.0.0/24, 2001::/23 including ORCHID).
    IetfProtocol,
    /// fc00::/7, the IPv6 counterpart of private networks.
    UniqueLocal,
    /// An IPv6 form (NAT64, 6to4, Teredo) that embeds a refused IPv4 address and would reach it through a
    /// translator or tunnel.
    EmbeddedIpv4,
    /// IPv6 outside 2000::/3, the only block allocated for global unicast.
    NotGlobalUnicast,
    /// Ranges withdrawn from use: the 6to4 relay anycast 192.88.99.0/24, site-local fec0::/10 and
    /// IPv4-compatible ::/96.
    Deprecated,
}

impl RefusedRange {
    /// A stable snake_case name, suitable for logs, metrics labels and error texts.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedCgnat => "shared_cgnat",
            Self::LinkLocal => "link_local",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::IetfProtocol => "ietf_protocol",
            Self::UniqueLocal => "unique_local",
            Self::EmbeddedIpv4 => "embedded_ipv4",
            Self::NotGlobalUnicast => "not_global_unicast",
            Self::Deprecated => "deprecated",
        }
    }
}

/// Refused IPv4 ranges as (network, prefix length, category). Order matters only where ranges nest: the
/// broadcast address must be found before the 240.0.0.0/4 block that contains it.
const V4_REFUSED: &[(u32, u32, RefusedRange)] = &[
    (0xffff_ffff, 32, RefusedRange::Broadcast),
    (0x0000_0000, 8, RefusedRange::Unspecified),
    (0x0a00_0000, 8, RefusedRange::Private),
    (0x6440_0000, 10, RefusedRange::SharedCgnat),
    (0x7f00_0000, 8, RefusedRange::Loopback),
    (0xa9fe_0000, 16, RefusedRange::LinkLocal),
    (0xac10_0000, 12, RefusedRange::Private),
    (0xc000_0000, 24, RefusedRange::IetfProtocol),
    (0xc000_0200, 24, RefusedRange::Documentation),
    (0xc058_6300, 24, RefusedRange::Deprecated),
    (0xc0a8_0000, 16, RefusedRange::Private),
    (0xc612_0000, 15, RefusedRange::Benchmarking),
    (0xc633_6400, 24, RefusedRange::Documentation),
    (0xcb00_7100, 24, RefusedRange::Documentation),
    (0xe000_0000, 4, RefusedRange::Multicast),
    (0xf000_0000, 4, RefusedRange::Reserved),
];

/// Whether the top `len` bits of `bits` equal `prefix` (an IPv4 network as a u32).
fn in_v4(bits: u32, prefix: u32, len: u32) -> bool {
    len == 0 || bits >> (32 - len) == prefix >> (32 - len)
}

/// Whether the top `len` bits of `bits` equal `prefix` (an IPv6 network as a u128).
fn in_v6(bits: u128, prefix: u128, len: u32) -> bool {
    len == 0 || bits >> (128 - len) == prefix >> (128 - len)
}

/// Returns the refused range `ip` falls in, or `None` if it is globally routable unicast.
///
/// Pure and allowlist-free so it can be exhaustively tested and reused for logging; [`AddressPolicy::check`]
/// is what enforces. IPv6 forms that carry an IPv4 address to a translator or tunnel (mapped, NAT64, 6to4,
/// Teredo) are judged by that IPv4 address, since otherwise `64:ff9b::a9fe:a9fe` would be a way to reach
/// 169.254.169.254 through a NAT64 gateway.
pub fn classify(ip: IpAddr) -> Option<RefusedRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<RefusedRange> {
    let bits = u32::from(ip);
    V4_REFUSED
        .iter()
        .find(|&&(prefix, len, _)| in_v4(bits, prefix, len))
        .map(|&(_, _, range)| range)
}

/// `EmbeddedIpv4` if any of the IPv4 addresses an IPv6 form would deliver to is refused.
fn embedded(v4s: &[u32]) -> Option<RefusedRange> {
    let refused = v4s.iter().any(|&v4| classify_v4(Ipv4Addr::from(v4)).is_some());
    refused.then_some(RefusedRange::EmbeddedIpv4)
}

fn classify_v6(ip: Ipv6Addr) -> Option<RefusedRange> {
    use RefusedRange as R;
    let bits = u128::from(ip);
    let low32 = bits as u32;
    match bits {
        0 => return Some(R::Unspecified),
        1 => return Some(R::Loopback),
        _ => {}
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        // A mapped address *is* the IPv4 address on a dual-stack socket: report the real range.
        return classify_v4(v4);
    }
    let ranges: &[(u128, u32, R)] = &[
        (0, 96, R::Deprecated),                        // ::/96 IPv4-compatible
        (0x0064_ff9b_0001 << 80, 48, R::Private),      // 64:ff9b:1::/48 local NAT64
        (0x0100 << 112, 64, R::Reserved),              // 100::/64 discard
        (0xff << 120, 8, R::Multicast),                // ff00::/8
        (0xfc << 120, 7, R::UniqueLocal),              // fc00::/7
        (0xfe80 << 112, 10, R::LinkLocal),             // fe80::/10
        (0xfec0 << 112, 10, R::Deprecated),            // fec0::/10 site-local
        (0x2001_0db8 << 96, 32, R::Documentation),     // 2001:db8::/32
        (0x3fff << 112, 20, R::Documentation),         // 3fff::/20
        (0x2001_0002_0000 << 80, 48, R::Benchmarking), // 2001:2::/48
    ];
    if in_v6(bits, 0x0064_ff9b << 96, 96) {
        // NAT64 well-known prefix: the translator connects to the last 32 bits.
        return embedded(&[low32]);
    }
    if let Some(&(_, _, range)) = ranges.iter().find(|&&(p, len, _)| in_v6(bits, p, len)) {
        return Some(range);
    }
    if !in_v6(bits, 0x2000 << 112, 3) {
        return Some(R::NotGlobalUnicast);
    }
    if in_v6(bits, 0x2002 << 112, 16) {
        // 6to4: the relay tunnels to the IPv4 address in bits 16..48.
        return embedded(&[(bits >> 80) as u32]);
    }
    if in_v6(bits, 0x2001 << 112, 23) {
        if in_v6(bits, 0x2001_0000 << 96, 32) {
            // Teredo: the server address in bits 32..64, the client address obfuscated in the low bits.
            return embedded(&[(bits >> 64) as u32, !low32]);
        }
        // AMT 2001:3::/32 and AS112-v6 2001:4:112::/48 are real, globally reachable services. Everything
        // else here, ORCHID 2001:10::/28 included, is a protocol assignment, not a host.
        let amt = in_v6(bits, 0x2001_0003 << 96, 32);
        let as112 = in_v6(bits, 0x2001_0004_0112 << 80, 48);
        let globally_reachable = amt || as112;
        return (!globally_reachable).then_some(R::IetfProtocol);
    }
    None
}

/// A parsed webhook destination whose URL has the right shape.
///
/// Holding the parsed host separately from the URL means nothing downstream re-parses the raw string, so
/// no two parsers can disagree about which host a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    url: url::Url,
    host: DestinationHost,
    port: u16,
}

/// The host part of a [`Destination`]: either a name that still has to be resolved and vetted, or an
/// address literal that is vetted as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationHost {
    /// A DNS name, lowercase and without the trailing dot, so equal names compare equal.
    Domain(String),
    /// An IP literal. Numeric forms such as `0x7f.1` or `2130706433` arrive here already decoded, so they
    /// cannot hide a loopback address from the check.
    Ip(IpAddr),
}

/// Why a URL cannot be a webhook destination.
///
/// The texts are generic because they are shown to the people who register endpoints.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("url is not valid")]
    Malformed,
    /// Payloads are signed but not encrypted; plain http would expose them and invite downgrade tricks.
    #[error("url scheme must be https")]
    NotHttps,
    /// Nothing to connect to.
    #[error("url must have a host")]
    MissingHost,
    /// Credentials in URLs leak into logs, and `https://trusted@evil` fools human reviewers.
    #[error("url must not contain credentials")]
    Credentials,
    /// A fragment is never sent over HTTP, so accepting one would suggest a behaviour we do not have.
    #[error("url must not contain a fragment")]
    Fragment,
}

impl Destination {
    /// Parses and shape-checks a webhook URL.
    ///
    /// Rules: it parses with the `url` crate (WHATWG rules, the same parser the rest of the crate sees);
    /// the scheme is https (scheme case is normalised by the parser); there is a host; there are no
    /// credentials and no fragment; the port defaults to 443. Length limits are enforced elsewhere.
    pub fn parse(raw: &str) -> Result<Destination, UrlError> {
        let url = url::Url::parse(raw).map_err(|e| match e {
            url::ParseError::EmptyHost => UrlError::MissingHost,
            _ => UrlError::Malformed,
        })?;
        if url.scheme() != "https" {
            return Err(UrlError::NotHttps);
        }
        let host = match url.host() {
            None => return Err(UrlError::MissingHost),
            Some(url::Host::Ipv4(v4)) => DestinationHost::Ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => DestinationHost::Ip(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) => {
                let name = name.to_ascii_lowercase();
                let name = name.strip_suffix('.').unwrap_or(&name);
                if name.is_empty() {
                    return Err(UrlError::MissingHost);
                }
                // Empty labels ("a..b", ".a", "a..") can never resolve; refuse rather than let resolvers
                // each interpret them their own way.
                if name.split('.').any(str::is_empty) {
                    return Err(UrlError::Malformed);
                }
                // The name is what TLS authenticates: one rustls cannot take as a DNS server name (`a!b`,
                // `-a`, a label over 63 or a name over 253 characters) could be registered and would then
                // fail every attempt, so it is refused here with the other shape errors.
                if rustls::pki_types::DnsName::try_from(name).is_err() {
                    return Err(UrlError::Malformed);
                }
                DestinationHost::Domain(name.to_owned())
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Destination { url, host, port })
    }

    /// The parsed URL, for logging and for building the request.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The host to resolve and vet (or the literal to vet).
    pub fn host(&self) -> &DestinationHost {
        &self.host
    }

    /// The TCP port, with https's 443 filled in so callers never guess.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name used for TLS SNI and certificate verification: the domain, or the IP literal's text
    /// (IPv6 without brackets, as certificate IP SANs are matched).
    pub fn host_str(&self) -> String {
        match &self.host {
            DestinationHost::Domain(name) => name.clone(),
            DestinationHost::Ip(ip) => ip.to_string(),
        }
    }

    /// The HTTP `Host` header: the host (IPv6 in brackets, as RFC 9110 requires) plus `:port` only when the
    /// port is not the default, matching what browsers and servers expect for virtual-host routing.
    pub fn host_header(&self) -> String {
        let host = match &self.host {
            DestinationHost::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host_str(),
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The request target: path plus `?query` when the URL has a query; never empty, since an HTTP/1.1
    /// origin-form target must start with `/`.
    pub fn path_and_query(&self) -> String {
        let path = match self.url.path() {
            "" => "/",
            p => p,
        };
        match self.url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        }
    }
}

/// The boxed future a [`Resolver`] returns; boxed so the trait stays object safe (`&dyn Resolver`).
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// The DNS seam: production uses [`SystemResolver`], tests inject a [`StaticResolver`] so they never touch
/// the network and can simulate hostile answers (private addresses, rebinding).
pub trait Resolver: Send + Sync + 'static {
    /// All addresses `host` resolves to. `port` is passed because some resolvers (getaddrinfo) want it.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The operating system's resolver (via `tokio::net::lookup_host`), returning each address once, in the
/// order the system gave them, so connection attempts follow the system's address preference.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in tokio::net::lookup_host((host, port)).await? {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// A fixed name→addresses map, for tests and for internal deployments without usable DNS.
///
/// Clones share one map, so a test can hand a clone to the dispatcher and change an answer afterwards,
/// which is how DNS rebinding is simulated. Names are compared case-insensitively, like DNS; unknown names
/// fail with [`io::ErrorKind::NotFound`].
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    map: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
    lookups: Arc<AtomicUsize>,
}

/// DNS names are case-insensitive and `name.` is the same name as `name`.
fn normalise_name(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

impl StaticResolver {
    /// An empty map: every lookup fails until names are inserted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (replacing any previous answer) the addresses `host` resolves to. An empty list is kept, so
    /// tests can exercise the "lookup returned nothing" path.
    pub fn insert(&self, host: &str, addrs: Vec<IpAddr>) {
        // A poisoned lock only means another test thread panicked; the map itself is still consistent.
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(normalise_name(host), addrs);
    }

    /// How many `resolve` calls were made on this resolver or its clones, so tests can prove that IP
    /// literals skip DNS, that an attempt resolves at most once, and when the dispatcher's DNS cache answers
    /// instead.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> ResolveFuture<'a> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let answer = map
            .get(&normalise_name(host))
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not in static resolver"));
        Box::pin(std::future::ready(answer))
    }
}

/// Why [`vet`] refused a destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VetError {
    /// The name did not resolve, or resolved to nothing; retrying later may help.
    #[error("dns lookup failed")]
    Lookup(#[source] io::Error),
    /// An address is outside the policy; retrying will not help unless DNS or the policy changes.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Resolves the destination (or takes its IP literal) and checks every address against `policy`.
///
/// Every address must pass, not just the first: an attacker who controls the DNS of their webhook host
/// can answer `[public, private]`, and a connector that falls back to the next address on failure would
/// then reach the private one. So one refused address refuses the whole destination.
///
/// On success it returns the vetted socket addresses (the URL's port applied). The caller must connect to
/// exactly these, never resolving the name again: a second lookup could return something else (DNS
/// rebinding). Mapped IPv6 addresses are returned as the IPv4 address they were judged as. Timeouts are the
/// caller's concern: wrap this future in `tokio::time::timeout` (the dispatcher bounds every lookup of its
/// resolver by its `dns_timeout` and `concurrent_lookups` settings).
pub async fn vet(
    policy: &AddressPolicy,
    resolver: &dyn Resolver,
    dest: &Destination,
) -> Result<Vec<SocketAddr>, VetError> {
    let ips = match dest.host() {
        DestinationHost::Ip(ip) => vec![*ip],
        DestinationHost::Domain(name) => {
            let ips = resolver
                .resolve(name, dest.port())
                .await
                .map_err(VetError::Lookup)?;
            if ips.is_empty() {
                let empty = io::Error::new(io::ErrorKind::NotFound, "dns lookup returned no addresses");
                return Err(VetError::Lookup(empty));
            }
            ips
        }
    };
    let mut vetted: Vec<SocketAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        policy.check(ip)?;
        let addr = SocketAddr::new(ip.to_canonical(), dest.port());
        if !vetted.contains(&addr) {
            vetted.push(addr);
        }
    }
    Ok(vetted)
}

#[cfg(test)]
mod tests;
