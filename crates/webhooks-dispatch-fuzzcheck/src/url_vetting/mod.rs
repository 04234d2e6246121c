//! Target `url_vetting`: `ssrf::Destination::parse` and `ssrf::vet`, with a `StaticResolver` that answers
//! the URL's host name with addresses from the input (no DNS is ever asked).
//!
//! Input, line by line:
//!
//! ```text
//! <url>
//! <address> | allow <network> | empty     any number; other lines are ignored
//! ```
//!
//! Addresses are the resolver's answer for the URL's host (no address line: the name does not resolve;
//! `empty`: it resolves to nothing); `allow` lines are the policy's allowlist.
//!
//! Properties of an accepted destination: https, a host (a lowercase name without empty labels, or an IP
//! literal), no credentials or fragment, the URL's port; parsing its own URL again gives the same
//! destination; its host header and request target make a request the `http` crate accepts, naming the
//! same host and port; a name is one rustls takes as the TLS server name.
//!
//! Properties of vetting: an IP literal is never looked up and a name exactly once; a vetted answer is
//! every address of the answer, canonical (no IPv4-mapped form), on the URL's port, each once, and every
//! one of them globally reachable by an independent model of the IANA registries (see `reachable.rs`) or
//! inside an allowlisted network; a refusal names an address the policy refuses.

mod reachable;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll, Waker};

use ipnet::IpNet;
use webhooks_dispatch::rustls::pki_types::ServerName;
use webhooks_dispatch::ssrf::{vet, AddressPolicy, Destination, DestinationHost, StaticResolver, VetError};

use crate::input::{split_lines, text};
use crate::Known;

/// Parses and vets one input's URL and checks the properties above; panics on a violated one.
pub fn check(data: &[u8]) {
    let ([url_line], rest) = split_lines::<1>(data);
    let raw = String::from_utf8_lossy(url_line);
    let resolution = Resolution::decode(rest);
    let Ok(dest) = Destination::parse(&raw) else {
        return;
    };
    check_shape(&raw, &dest);
    check_request(&dest);

    let resolver = StaticResolver::new();
    if let (DestinationHost::Domain(name), Some(answer)) = (dest.host(), &resolution.answer) {
        resolver.insert(name, answer.clone());
    }
    let policy = AddressPolicy::new(resolution.allow.clone());
    let result = ready(vet(&policy, &resolver, &dest));

    let (candidates, lookups) = match dest.host() {
        DestinationHost::Ip(ip) => (vec![*ip], 0),
        DestinationHost::Domain(_) => (resolution.answer.clone().unwrap_or_default(), 1),
    };
    assert_eq!(resolver.lookups(), lookups, "lookups for {raw:?}");
    for &ip in &candidates {
        if policy.check(ip).is_ok() {
            assert!(
                allowed(ip, &resolution.allow),
                "policy passed {ip}, which is neither globally reachable nor allowlisted ({:?})",
                resolution.allow
            );
        }
    }
    match result {
        Ok(vetted) => check_vetted(&dest, &candidates, &resolution.allow, &vetted),
        Err(VetError::Lookup(_)) => assert!(
            candidates.is_empty(),
            "lookup failed for {raw:?} although the resolver answers {candidates:?}"
        ),
        Err(VetError::Refused(_)) => assert!(
            candidates.iter().any(|&ip| policy.check(ip).is_err()),
            "vetting refused {raw:?} although the policy passes every address of {candidates:?}"
        ),
        Err(other) => panic!("unexpected vetting error {other:?}"),
    }
}

/// The resolver's answer and the policy's allowlist, from the lines after the URL.
struct Resolution {
    /// `None`: the name is unknown to the resolver.
    answer: Option<Vec<IpAddr>>,
    allow: Vec<IpNet>,
}

impl Resolution {
    fn decode(lines: &[u8]) -> Resolution {
        let mut answer: Option<Vec<IpAddr>> = None;
        let mut allow = Vec::new();
        for line in lines.split(|&b| b == b'\n').filter_map(text).map(str::trim) {
            if let Some(net) = line.strip_prefix("allow ") {
                allow.extend(net.trim().parse::<IpNet>().ok());
            } else if line == "empty" {
                answer.get_or_insert_with(Vec::new);
            } else if let Ok(ip) = line.parse::<IpAddr>() {
                answer.get_or_insert_with(Vec::new).push(ip);
            }
        }
        Resolution { answer, allow }
    }
}

fn check_shape(raw: &str, dest: &Destination) {
    let url = dest.url();
    assert_eq!(url.scheme(), "https", "{raw:?}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "credentials in {raw:?}"
    );
    assert!(url.fragment().is_none(), "fragment in {raw:?}");
    assert_eq!(Some(dest.port()), url.port_or_known_default(), "port of {raw:?}");
    match (dest.host(), url.host()) {
        (DestinationHost::Domain(name), Some(url::Host::Domain(host))) => {
            assert!(
                !name.is_empty() && !name.ends_with('.'),
                "host {name:?} of {raw:?}"
            );
            assert_eq!(*name, name.to_ascii_lowercase(), "host of {raw:?}");
            assert!(
                !name.split('.').any(str::is_empty),
                "empty label in {name:?} of {raw:?}"
            );
            assert_eq!(
                name.as_str(),
                host.trim_end_matches('.').to_ascii_lowercase(),
                "{raw:?}"
            );
        }
        (DestinationHost::Ip(IpAddr::V4(ip)), Some(url::Host::Ipv4(host))) => assert_eq!(*ip, host),
        (DestinationHost::Ip(IpAddr::V6(ip)), Some(url::Host::Ipv6(host))) => assert_eq!(*ip, host),
        (ours, theirs) => panic!("{raw:?}: host {ours:?}, but the URL's is {theirs:?}"),
    }
    // Nothing downstream re-parses the raw text, but the stored URL is parsed again at every attempt.
    assert_eq!(
        Destination::parse(url.as_str()).as_ref(),
        Ok(dest),
        "{raw:?} serializes as {:?}, which parses differently",
        url.as_str()
    );
}

/// The delivery builds its request from `host_header` and `path_and_query`: for HTTP/1.1 the origin form,
/// for HTTP/2 the absolute form. Both must be accepted by `http` and name the vetted host and port, and a
/// name must be usable as the TLS server name, or the destination is registered but never delivered to.
fn check_request(dest: &Destination) {
    // A name that is not a DNS name is a known finding; for any other the properties are enforced.
    let finding = match dest.host() {
        DestinationHost::Domain(name) if !dns_name(name) => Some(Known::HostNotDnsName),
        _ => None,
    };
    let deliverable = |holds: bool, message: &dyn Fn() -> String| match finding {
        Some(finding) => crate::known(finding, holds, message),
        None => assert!(holds, "{}", message()),
    };
    let host_header = dest.host_header();
    let origin_form = dest.path_and_query();
    let absolute_form = format!("https://{host_header}{origin_form}");
    for target in [&origin_form, &absolute_form] {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(target.as_str())
            .header(http::header::HOST, host_header.as_str())
            .body(());
        deliverable(request.is_ok(), &|| {
            format!("request to {target:?} (Host {host_header:?}) cannot be built")
        });
    }
    if let DestinationHost::Domain(name) = dest.host() {
        deliverable(ServerName::try_from(name.as_str()).is_ok(), &|| {
            format!("accepted host {name:?} is not a valid TLS server name")
        });
    }
    let Ok(uri) = absolute_form.parse::<http::Uri>() else {
        return;
    };
    let uri_host = uri.host().expect("an absolute URI has a host");
    let uri_host = uri_host.trim_start_matches('[').trim_end_matches(']');
    match dest.host() {
        DestinationHost::Ip(ip) => {
            assert_eq!(uri_host.parse::<IpAddr>().ok(), Some(*ip), "{absolute_form:?}")
        }
        DestinationHost::Domain(name) => assert_eq!(uri_host, name, "{absolute_form:?}"),
    }
    assert_eq!(uri.port_u16().unwrap_or(443), dest.port(), "{absolute_form:?}");
    if let Ok(origin) = origin_form.parse::<http::Uri>() {
        assert_eq!(
            origin.path_and_query().map(|p| p.as_str()),
            Some(origin_form.as_str())
        );
    }
}

/// A name DNS can carry as a host name: at most 253 characters, labels of 1–63 letters, digits, hyphens or
/// underscores (in use in practice), neither starting nor ending with a hyphen.
fn dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_vetted(dest: &Destination, candidates: &[IpAddr], allow: &[IpNet], vetted: &[SocketAddr]) {
    assert!(
        !vetted.is_empty(),
        "vetting passed {:?} with no address",
        dest.url().as_str()
    );
    for (i, addr) in vetted.iter().enumerate() {
        assert_eq!(addr.port(), dest.port(), "{addr} is not on the URL's port");
        assert_eq!(addr.ip(), addr.ip().to_canonical(), "{addr} is not canonical");
        assert!(!vetted[..i].contains(addr), "{addr} vetted twice");
    }
    for &ip in candidates {
        // One refused address refuses the whole answer, so a vetted answer holds only allowed addresses,
        // and all of them: the connector may fall back to any.
        assert!(
            allowed(ip, allow),
            "vetted an answer with {ip}, which is neither globally reachable nor allowlisted ({allow:?})"
        );
        let addr = SocketAddr::new(ip.to_canonical(), dest.port());
        assert!(
            vetted.contains(&addr),
            "{addr} of the answer missing from {vetted:?}"
        );
    }
    for addr in vetted {
        assert!(
            candidates.iter().any(|ip| ip.to_canonical() == addr.ip()),
            "{addr} vetted but not in the answer {candidates:?}"
        );
    }
}

/// Globally reachable (by the independent model), or inside an allowlisted network, an IPv4 address also
/// through a network written as IPv4-mapped IPv6 (and only one lying inside `::ffff:0:0/96`).
fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    reachable::globally_reachable(ip)
        || allow.iter().any(|net| match (net, ip) {
            (IpNet::V6(net), IpAddr::V4(v4)) => net.prefix_len() >= 96 && net.contains(&v4.to_ipv6_mapped()),
            (net, ip) => net.contains(&ip),
        })
}

/// Polls a future that must be ready at once: `vet` with a `StaticResolver` never waits.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("vetting with a static resolver waited"),
    }
}
