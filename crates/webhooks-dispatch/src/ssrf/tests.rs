//! Tests for the SSRF defence. None of them sends a packet: DNS goes through [`StaticResolver`], and the
//! only [`SystemResolver`] test uses IP literals, which tokio parses without a lookup.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use RefusedRange::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn dest(s: &str) -> Destination {
    Destination::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// First, middle and last address of every range, and the neighbours just outside where they are not
/// themselves in another refused range.
const TABLE: &[(&str, Option<RefusedRange>)] = &[
    // ---- IPv4 ----
    ("0.0.0.0", Some(Unspecified)),
    ("0.128.0.1", Some(Unspecified)),
    ("0.255.255.255", Some(Unspecified)),
    ("1.0.0.0", None),
    ("9.255.255.255", None),
    ("10.0.0.0", Some(Private)),
    ("10.128.0.1", Some(Private)),
    ("10.255.255.255", Some(Private)),
    ("11.0.0.0", None),
    ("100.63.255.255", None),
    ("100.64.0.0", Some(SharedCgnat)),
    ("100.100.100.100", Some(SharedCgnat)),
    ("100.127.255.255", Some(SharedCgnat)),
    ("100.128.0.0", None),
    ("126.255.255.255", None),
    ("127.0.0.0", Some(Loopback)),
    ("127.0.0.1", Some(Loopback)),
    ("127.255.255.255", Some(Loopback)),
    ("128.0.0.0", None),
    ("169.253.255.255", None),
    ("169.254.0.0", Some(LinkLocal)),
    ("169.254.169.254", Some(LinkLocal)),
    ("169.254.255.255", Some(LinkLocal)),
    ("169.255.0.0", None),
    ("172.15.255.255", None),
    ("172.16.0.0", Some(Private)),
    ("172.24.0.1", Some(Private)),
    ("172.31.255.255", Some(Private)),
    ("172.32.0.0", None),
    ("191.255.255.255", None),
    ("192.0.0.0", Some(IetfProtocol)),
    ("192.0.0.9", Some(IetfProtocol)),
    ("192.0.0.255", Some(IetfProtocol)),
    ("192.0.1.0", None),
    ("192.0.1.255", None),
    ("192.0.2.0", Some(Documentation)),
    ("192.0.2.128", Some(Documentation)),
    ("192.0.2.255", Some(Documentation)),
    ("192.0.3.0", None),
    ("192.88.98.255", None),
    ("192.88.99.0", Some(Deprecated)),
    ("192.88.99.1", Some(Deprecated)),
    ("192.88.99.255", Some(Deprecated)),
    ("192.88.100.0", None),
    ("192.167.255.255", None),
    ("192.168.0.0", Some(Private)),
    ("192.168.1.1", Some(Private)),
    ("192.168.255.255", Some(Private)),
    ("192.169.0.0", None),
    ("198.17.255.255", None),
    ("198.18.0.0", Some(Benchmarking)),
    ("198.19.0.1", Some(Benchmarking)),
    ("198.19.255.255", Some(Benchmarking)),
    ("198.20.0.0", None),
    ("198.51.99.255", None),
    ("198.51.100.0", Some(Documentation)),
    ("198.51.100.77", Some(Documentation)),
    ("198.51.100.255", Some(Documentation)),
    ("198.51.101.0", None),
    ("203.0.112.255", None),
    ("203.0.113.0", Some(Documentation)),
    ("203.0.113.7", Some(Documentation)),
    ("203.0.113.255", Some(Documentation)),
    ("203.0.114.0", None),
    ("223.255.255.255", None),
    ("224.0.0.0", Some(Multicast)),
    ("230.1.2.3", Some(Multicast)),
    ("239.255.255.255", Some(Multicast)),
    ("240.0.0.0", Some(Reserved)),
    ("250.1.2.3", Some(Reserved)),
    ("255.255.255.254", Some(Reserved)),
    ("255.255.255.255", Some(Broadcast)),
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("93.184.216.34", None),
    // ---- IPv6: special single addresses and IPv4-compatible ::/96 ----
    ("::", Some(Unspecified)),
    ("::1", Some(Loopback)),
    ("::2", Some(Deprecated)),
    ("::8.8.8.8", Some(Deprecated)),
    ("::ffff:ffff", Some(Deprecated)),
    ("::1:0:0", Some(NotGlobalUnicast)),
    // ---- IPv4-mapped ::ffff:0:0/96: judged as the IPv4 address ----
    ("::fffe:ffff:ffff", Some(NotGlobalUnicast)),
    ("::ffff:0.0.0.0", Some(Unspecified)),
    ("::ffff:127.0.0.1", Some(Loopback)),
    ("::ffff:10.1.2.3", Some(Private)),
    ("::ffff:8.8.8.8", None),
    ("::ffff:255.255.255.255", Some(Broadcast)),
    ("::1:0:0:0", Some(NotGlobalUnicast)),
    // ---- NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48 ----
    ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("64:ff9b::", Some(EmbeddedIpv4)),
    ("64:ff9b::8.8.8.8", None),
    ("64:ff9b::7f00:1", Some(EmbeddedIpv4)),
    ("64:ff9b::ffff:ffff", Some(EmbeddedIpv4)),
    ("64:ff9b::1:0:0", Some(NotGlobalUnicast)),
    ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("64:ff9b:1::", Some(Private)),
    ("64:ff9b:1:8000::8.8.8.8", Some(Private)),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Private)),
    ("64:ff9b:2::", Some(NotGlobalUnicast)),
    // ---- discard 100::/64 ----
    ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("100::", Some(Reserved)),
    ("100::8000:0:0:1", Some(Reserved)),
    ("100::ffff:ffff:ffff:ffff", Some(Reserved)),
    ("100:0:0:1::", Some(NotGlobalUnicast)),
    // ---- edges of global unicast 2000::/3 ----
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("2000::", None),
    ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("4000::", Some(NotGlobalUnicast)),
    ("5f00::1", Some(NotGlobalUnicast)),
    ("e000::", Some(NotGlobalUnicast)),
    // ---- 2001::/23 IETF protocol assignments and its carve-outs ----
    ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001::", Some(EmbeddedIpv4)),      // Teredo, server 0.0.0.0
    ("2001:0:808:808::f7f7:f7f7", None), // Teredo, server and client 8.8.8.8
    ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(EmbeddedIpv4)),
    ("2001:1::", Some(IetfProtocol)),
    ("2001:1::1", Some(IetfProtocol)),
    ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:2::", Some(Benchmarking)),
    ("2001:2:0:8000::1", Some(Benchmarking)),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some(Benchmarking)),
    ("2001:2:1::", Some(IetfProtocol)),
    ("2001:2:ffff:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:3::", None),
    ("2001:3:8000::1", None),
    ("2001:3:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:4::", Some(IetfProtocol)),
    ("2001:4:111:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:4:112::", None),
    ("2001:4:112:8000::1", None),
    ("2001:4:112:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:4:113::", Some(IetfProtocol)),
    ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:10::", Some(IetfProtocol)),
    ("2001:18::1", Some(IetfProtocol)),
    ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:20::", Some(IetfProtocol)),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some(IetfProtocol)),
    ("2001:200::", None),
    // ---- documentation 2001:db8::/32 and 3fff::/20 ----
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:db8::", Some(Documentation)),
    ("2001:db8:8000::1", Some(Documentation)),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some(Documentation)),
    ("2001:db9::", None),
    ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("3fff::", Some(Documentation)),
    ("3fff:800::1", Some(Documentation)),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Documentation)),
    ("3fff:1000::", None),
    // ---- 6to4 2002::/16 ----
    ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2002::", Some(EmbeddedIpv4)),
    ("2002:808:808::1", None),
    ("2002:c0a8:101::1", Some(EmbeddedIpv4)),
    ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(EmbeddedIpv4)),
    ("2003::", None),
    // ---- unique local, link-local, site-local, multicast ----
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("fc00::", Some(UniqueLocal)),
    ("fd12:3456::1", Some(UniqueLocal)),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
    ("fe00::", Some(NotGlobalUnicast)),
    ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
    ("fe80::", Some(LinkLocal)),
    ("fe80::1", Some(LinkLocal)),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
    ("fec0::", Some(Deprecated)),
    ("fed0::1", Some(Deprecated)),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Deprecated)),
    ("ff00::", Some(Multicast)),
    ("ff02::1", Some(Multicast)),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
    // ---- ordinary global IPv6 ----
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("2a00:1450:4001:82a::200e", None),
];

#[test]
fn ssrf_classify_matches_range_table() {
    let wrong: Vec<String> = TABLE
        .iter()
        .filter(|(addr, want)| classify(ip(addr)) != *want)
        .map(|(addr, want)| format!("{addr}: want {want:?}, got {:?}", classify(ip(addr))))
        .collect();
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn ssrf_default_policy_agrees_with_classify() {
    let policy = AddressPolicy::default();
    for (addr, want) in TABLE {
        assert_eq!(policy.check(ip(addr)).err(), want.map(Refusal), "{addr}");
    }
}

/// The IPv6 forms that deliver to `a`: mapped, NAT64, 6to4, and Teredo with `a` as server or as client
/// (the other side being the public 8.8.8.8).
fn ipv6_forms(a: Ipv4Addr) -> [(&'static str, IpAddr); 5] {
    let a = u128::from(u32::from(a));
    let public = u128::from(u32::from(Ipv4Addr::new(8, 8, 8, 8)));
    let v6 = |bits: u128| IpAddr::V6(Ipv6Addr::from(bits));
    [
        ("mapped", v6(0xffff << 32 | a)),
        ("nat64", v6(0x0064_ff9b << 96 | a)),
        ("6to4", v6(0x2002 << 112 | a << 80 | 1)),
        (
            "teredo-server",
            v6(0x2001 << 112 | a << 64 | (public ^ 0xffff_ffff)),
        ),
        (
            "teredo-client",
            v6(0x2001 << 112 | public << 64 | (a ^ 0xffff_ffff)),
        ),
    ]
}

#[test]
fn ssrf_refuses_ipv6_forms_embedding_refused_ipv4() {
    for refused in ["127.0.0.1", "10.0.0.1", "169.254.169.254"] {
        let a = v4(refused);
        for (form, addr) in ipv6_forms(a) {
            let want = if form == "mapped" {
                classify(IpAddr::V4(a))
            } else {
                Some(EmbeddedIpv4)
            };
            assert!(want.is_some());
            assert_eq!(classify(addr), want, "{form} of {refused}: {addr}");
        }
    }
    for (form, addr) in ipv6_forms(v4("8.8.8.8")) {
        assert_eq!(classify(addr), None, "{form} of 8.8.8.8: {addr}");
    }
    // The helper builds what the textbook forms look like.
    assert_eq!(ipv6_forms(v4("127.0.0.1"))[1].1, ip("64:ff9b::127.0.0.1"));
    assert_eq!(ipv6_forms(v4("127.0.0.1"))[2].1, ip("2002:7f00:1::1"));
}

#[test]
fn ssrf_refusal_texts_are_generic_and_snake_case() {
    assert_eq!(Refusal(Loopback).to_string(), "address refused: loopback");
    assert_eq!(Refusal(SharedCgnat).to_string(), "address refused: shared_cgnat");
    let all = [
        Unspecified,
        Loopback,
        Private,
        SharedCgnat,
        LinkLocal,
        Broadcast,
        Multicast,
        Reserved,
        Documentation,
        Benchmarking,
        IetfProtocol,
        UniqueLocal,
        EmbeddedIpv4,
        NotGlobalUnicast,
        Deprecated,
    ];
    let names: std::collections::HashSet<&str> = all.iter().map(RefusedRange::as_str).collect();
    assert_eq!(names.len(), all.len(), "names must be distinct");
    for name in names {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
    }
}

#[test]
fn ssrf_allowlist_admits_only_its_networks() {
    let policy = AddressPolicy::new(vec![net("127.0.0.0/8"), net("fd00::/8")]);
    assert_eq!(policy.allowlist(), &[net("127.0.0.0/8"), net("fd00::/8")]);
    assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
    assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
    assert_eq!(policy.check(ip("fd00::5")), Ok(()));
    assert_eq!(policy.check(ip("8.8.8.8")), Ok(()));
    assert_eq!(policy.check(ip("10.0.0.1")), Err(Refusal(Private)));
    assert_eq!(policy.check(ip("::1")), Err(Refusal(Loopback)));
    assert_eq!(policy.check(ip("fc00::1")), Err(Refusal(UniqueLocal)));
    // Only the mapped form is the same address; tunnels and translators are other hosts.
    assert_eq!(policy.check(ip("2002:7f00:1::1")), Err(Refusal(EmbeddedIpv4)));
    assert_eq!(policy.check(ip("64:ff9b::7f00:1")), Err(Refusal(EmbeddedIpv4)));
}

#[test]
fn ssrf_mapped_allowlist_entries_mean_ipv4_but_broad_ipv6_entries_do_not() {
    let mapped = AddressPolicy::new(vec![net("::ffff:10.0.0.0/104")]);
    assert_eq!(mapped.check(ip("10.1.2.3")), Ok(()));
    assert_eq!(mapped.check(ip("::ffff:10.1.2.3")), Ok(()));
    assert_eq!(mapped.check(ip("192.168.0.1")), Err(Refusal(Private)));
    let everything_v6 = AddressPolicy::new(vec![net("::/0")]);
    assert_eq!(everything_v6.check(ip("::1")), Ok(()));
    assert_eq!(everything_v6.check(ip("::ffff:10.1.2.3")), Err(Refusal(Private)));
    assert_eq!(everything_v6.check(ip("10.1.2.3")), Err(Refusal(Private)));
}

#[test]
fn ssrf_url_rules_reject_with_the_right_error() {
    let cases = [
        ("http://example.com/hook", UrlError::NotHttps),
        ("HTTP://example.com/hook", UrlError::NotHttps),
        ("ftp://example.com/hook", UrlError::NotHttps),
        ("wss://example.com/hook", UrlError::NotHttps),
        ("file:///etc/passwd", UrlError::NotHttps),
        ("https://", UrlError::MissingHost),
        ("https:///", UrlError::MissingHost),
        ("https://:8443/hook", UrlError::MissingHost),
        ("https://./hook", UrlError::MissingHost),
        ("https://user@example.com/hook", UrlError::Credentials),
        ("https://user:pw@example.com/hook", UrlError::Credentials),
        ("https://:pw@example.com/hook", UrlError::Credentials),
        ("https://example.com@evil.example/hook", UrlError::Credentials),
        ("https://example.com/hook#frag", UrlError::Fragment),
        ("https://example.com/hook#", UrlError::Fragment),
        ("not a url", UrlError::Malformed),
        ("", UrlError::Malformed),
        ("https://exa mple.com/", UrlError::Malformed),
        ("https://example.com:99999/", UrlError::Malformed),
        ("https://[::1/", UrlError::Malformed),
        ("https://a..b/", UrlError::Malformed),
        ("https://example.com../", UrlError::Malformed),
        // Not DNS names TLS can authenticate (found by the url_vetting fuzz target).
        ("https://a!b.example/", UrlError::Malformed),
        ("https://-a.example/", UrlError::Malformed),
        ("https://example.`com/", UrlError::Malformed),
    ];
    for (raw, want) in cases {
        assert_eq!(Destination::parse(raw), Err(want), "{raw:?}");
    }
}

#[test]
fn ssrf_url_accessors_give_exact_values() {
    let d = dest("https://Hooks.Example.COM./v1/in?x=1&y=2");
    assert_eq!(d.host(), &DestinationHost::Domain("hooks.example.com".into()));
    assert_eq!(d.port(), 443);
    assert_eq!(d.host_str(), "hooks.example.com");
    assert_eq!(d.host_header(), "hooks.example.com");
    assert_eq!(d.path_and_query(), "/v1/in?x=1&y=2");
    assert_eq!(d.url().scheme(), "https");

    let d = dest("https://example.com:8443");
    assert_eq!(d.port(), 8443);
    assert_eq!(d.host_header(), "example.com:8443");
    assert_eq!(d.path_and_query(), "/");

    let d = dest("https://example.com:443/a");
    assert_eq!(d.port(), 443);
    assert_eq!(d.host_header(), "example.com");

    let d = dest("https://[2001:DB8::1]:8443/a/b?c");
    assert_eq!(d.host(), &DestinationHost::Ip(ip("2001:db8::1")));
    assert_eq!(d.port(), 8443);
    assert_eq!(d.host_str(), "2001:db8::1");
    assert_eq!(d.host_header(), "[2001:db8::1]:8443");
    assert_eq!(d.path_and_query(), "/a/b?c");

    let d = dest("https://[2606:4700:4700::1111]/hook");
    assert_eq!(d.host_header(), "[2606:4700:4700::1111]");
    assert_eq!(d.host_str(), "2606:4700:4700::1111");

    let d = dest("https://203.0.113.9:9000/?");
    assert_eq!(d.host(), &DestinationHost::Ip(ip("203.0.113.9")));
    assert_eq!(d.host_header(), "203.0.113.9:9000");
    assert_eq!(d.path_and_query(), "/?");

    // Scheme case is normalised by the parser; empty userinfo carries no credentials.
    assert_eq!(dest("HTTPS://example.com/").host_str(), "example.com");
    assert_eq!(
        dest("https://@example.com/").url().as_str(),
        "https://example.com/"
    );
}

#[test]
fn ssrf_numeric_host_spellings_become_ip_literals() {
    for raw in [
        "https://0x7f.1/",
        "https://2130706433/",
        "https://0177.0.0.1/",
        "https://127.1/",
    ] {
        assert_eq!(dest(raw).host(), &DestinationHost::Ip(ip("127.0.0.1")), "{raw}");
    }
    assert_eq!(
        dest("https://bücher.example/").host_str(),
        "xn--bcher-kva.example"
    );
}

#[tokio::test]
async fn ssrf_accepts_public_ipv6_literal_url() {
    let d = dest("https://[2606:4700:4700::1111]/hook");
    assert_eq!(d.host(), &DestinationHost::Ip(ip("2606:4700:4700::1111")));
    let resolver = StaticResolver::new();
    let addrs = vet(&AddressPolicy::default(), &resolver, &d).await.unwrap();
    assert_eq!(addrs, vec!["[2606:4700:4700::1111]:443".parse().unwrap()]);
    assert_eq!(resolver.lookups(), 0);
}

#[tokio::test]
async fn ssrf_vet_refuses_if_any_resolved_address_is_refused() {
    let resolver = StaticResolver::new();
    resolver.insert("mixed.example", vec![ip("8.8.8.8"), ip("10.0.0.1")]);
    resolver.insert("mixed6.example", vec![ip("2606:4700:4700::1111"), ip("fe80::1")]);
    let policy = AddressPolicy::default();
    let err = vet(&policy, &resolver, &dest("https://mixed.example/"))
        .await
        .unwrap_err();
    assert!(matches!(err, VetError::Refused(Refusal(Private))), "{err:?}");
    let err = vet(&policy, &resolver, &dest("https://mixed6.example/"))
        .await
        .unwrap_err();
    assert!(matches!(err, VetError::Refused(Refusal(LinkLocal))), "{err:?}");
    assert_eq!(err.to_string(), "address refused: link_local");
}

#[tokio::test]
async fn ssrf_vet_returns_all_vetted_addresses_with_port() {
    let resolver = StaticResolver::new();
    resolver.insert(
        "Public.Example",
        vec![ip("8.8.8.8"), ip("2001:4860:4860::8888"), ip("8.8.8.8")],
    );
    let d = dest("https://public.example:8443/h");
    let addrs = vet(&AddressPolicy::default(), &resolver, &d).await.unwrap();
    let want: Vec<SocketAddr> = vec![
        "8.8.8.8:8443".parse().unwrap(),
        "[2001:4860:4860::8888]:8443".parse().unwrap(),
    ];
    assert_eq!(addrs, want);
    assert_eq!(resolver.lookups(), 1);
}

#[tokio::test]
async fn ssrf_vet_lookup_failure_and_empty_answer_are_lookup_errors() {
    let resolver = StaticResolver::new();
    resolver.insert("empty.example", vec![]);
    let policy = AddressPolicy::default();
    let err = vet(&policy, &resolver, &dest("https://unknown.example/"))
        .await
        .unwrap_err();
    match err {
        VetError::Lookup(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    let err = vet(&policy, &resolver, &dest("https://empty.example/"))
        .await
        .unwrap_err();
    assert!(matches!(err, VetError::Lookup(_)), "{err:?}");
    assert_eq!(err.to_string(), "dns lookup failed");
    assert_eq!(resolver.lookups(), 2);
}

#[tokio::test]
async fn ssrf_vet_literal_ip_skips_resolver_and_is_checked() {
    let resolver = StaticResolver::new();
    let policy = AddressPolicy::default();
    let err = vet(&policy, &resolver, &dest("https://169.254.169.254/latest"))
        .await
        .unwrap_err();
    assert!(matches!(err, VetError::Refused(Refusal(LinkLocal))), "{err:?}");
    let err = vet(&policy, &resolver, &dest("https://0x7f.1/"))
        .await
        .unwrap_err();
    assert!(matches!(err, VetError::Refused(Refusal(Loopback))), "{err:?}");
    let ok = vet(&policy, &resolver, &dest("https://8.8.8.8/")).await.unwrap();
    assert_eq!(ok, vec!["8.8.8.8:443".parse().unwrap()]);
    assert_eq!(resolver.lookups(), 0);
}

#[tokio::test]
async fn ssrf_vet_allowlist_admits_loopback_with_url_port() {
    let resolver = StaticResolver::new();
    resolver.insert("localhost", vec![ip("127.0.0.1"), ip("::ffff:127.0.0.1")]);
    let policy = AddressPolicy::new(vec![net("127.0.0.0/8")]);
    let addrs = vet(&policy, &resolver, &dest("https://localhost:4443/hook"))
        .await
        .unwrap();
    // The mapped answer is the same IPv4 host, returned in its IPv4 form and only once.
    assert_eq!(addrs, vec!["127.0.0.1:4443".parse().unwrap()]);
    let addrs = vet(&policy, &resolver, &dest("https://[::ffff:127.0.0.1]:9/"))
        .await
        .unwrap();
    assert_eq!(addrs, vec!["127.0.0.1:9".parse().unwrap()]);
    // Without the allowlist the same destination is refused.
    let err = vet(
        &AddressPolicy::default(),
        &resolver,
        &dest("https://localhost:4443/"),
    )
    .await;
    assert!(
        matches!(err, Err(VetError::Refused(Refusal(Loopback)))),
        "{err:?}"
    );
}

#[tokio::test]
async fn ssrf_static_resolver_clones_share_answers_for_rebinding_tests() {
    let resolver = StaticResolver::new();
    let handed_out: Box<dyn Resolver> = Box::new(resolver.clone());
    resolver.insert("rebind.example", vec![ip("93.184.216.34")]);
    let policy = AddressPolicy::default();
    let d = dest("https://REBIND.example/");
    assert!(vet(&policy, handed_out.as_ref(), &d).await.is_ok());
    resolver.insert("rebind.example.", vec![ip("127.0.0.1")]);
    let err = vet(&policy, handed_out.as_ref(), &d).await.unwrap_err();
    assert!(matches!(err, VetError::Refused(Refusal(Loopback))), "{err:?}");
    assert_eq!(resolver.lookups(), 2);
}

#[tokio::test]
async fn ssrf_system_resolver_takes_literals_without_dns() {
    // tokio parses IP literals itself, so this sends nothing on the network.
    let ips = SystemResolver.resolve("127.0.0.1", 443).await.unwrap();
    assert_eq!(ips, vec![ip("127.0.0.1")]);
    let ips = SystemResolver.resolve("::1", 443).await.unwrap();
    assert_eq!(ips, vec![ip("::1")]);
}

#[test]
fn ssrf_vet_future_is_send() {
    // The dispatcher spawns deliveries on a multi-threaded runtime.
    fn assert_send<T: Send>(_: &T) {}
    let (policy, resolver, d) = (
        AddressPolicy::default(),
        SystemResolver,
        dest("https://x.example/"),
    );
    assert_send(&vet(&policy, &resolver, &d));
}

/// Every address of the ranges property (2) names, built from a range index and arbitrary host bits.
fn refused_private_v4() -> impl Strategy<Value = Ipv4Addr> {
    let nets = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
    ];
    (0..nets.len(), any::<u32>()).prop_map(move |(i, host)| {
        let n: Ipv4Net = nets[i].parse().unwrap();
        Ipv4Addr::from(u32::from(n.network()) | (host & u32::from(n.hostmask())))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn prop_mapped_ipv6_classifies_as_its_ipv4(a in any::<u32>()) {
        let a = Ipv4Addr::from(a);
        prop_assert_eq!(classify(IpAddr::V6(a.to_ipv6_mapped())), classify(IpAddr::V4(a)));
        let policy = AddressPolicy::default();
        prop_assert_eq!(policy.check(IpAddr::V6(a.to_ipv6_mapped())), policy.check(IpAddr::V4(a)));
    }

    #[test]
    fn prop_private_ranges_and_their_6to4_nat64_forms_are_refused(a in refused_private_v4(), low in any::<u64>()) {
        prop_assert!(classify(IpAddr::V4(a)).is_some(), "{}", a);
        let a = u128::from(u32::from(a));
        let six_to_four = IpAddr::V6(Ipv6Addr::from(0x2002 << 112 | a << 80 | u128::from(low)));
        let nat64 = IpAddr::V6(Ipv6Addr::from(0x0064_ff9b << 96 | a));
        prop_assert_eq!(classify(six_to_four), Some(EmbeddedIpv4), "{}", six_to_four);
        prop_assert_eq!(classify(nat64), Some(EmbeddedIpv4), "{}", nat64);
    }

    #[test]
    fn prop_default_policy_is_exactly_classify(bits in any::<u128>(), v4 in any::<u32>()) {
        let policy = AddressPolicy::default();
        for addr in [IpAddr::V6(Ipv6Addr::from(bits)), IpAddr::V4(Ipv4Addr::from(v4))] {
            prop_assert_eq!(policy.check(addr).err(), classify(addr).map(Refusal));
        }
    }

    #[test]
    fn prop_non_global_unicast_ipv6_is_refused(bits in any::<u128>()) {
        // Outside 2000::/3 the only addresses allowed are NAT64 forms of public IPv4 and mapped public IPv4.
        let addr = Ipv6Addr::from(bits);
        let top3 = bits >> 125;
        let nat64 = bits >> 32 == 0x0064_ff9b << 64;
        if top3 != 1 && !nat64 && addr.to_ipv4_mapped().is_none() {
            prop_assert!(classify(IpAddr::V6(addr)).is_some(), "{}", addr);
        }
    }

    #[test]
    fn prop_parse_never_panics_and_ok_is_https_without_userinfo(raw in any::<String>()) {
        check_parsed(&raw)?;
    }

    #[test]
    fn prop_parse_url_shaped_strings(raw in "(https?|HTTPS|ftp)://([a-z0-9:@.\\[\\]%_-]{0,24})(/[ -~]{0,16})?") {
        check_parsed(&raw)?;
    }
}

fn check_parsed(raw: &str) -> Result<(), TestCaseError> {
    if let Ok(d) = Destination::parse(raw) {
        prop_assert_eq!(d.url().scheme(), "https");
        prop_assert!(
            d.url().username().is_empty() && d.url().password().is_none(),
            "{}",
            raw
        );
        prop_assert!(d.url().fragment().is_none());
        prop_assert!(d.path_and_query().starts_with('/'));
        if let DestinationHost::Domain(name) = d.host() {
            prop_assert!(!name.is_empty() && !name.ends_with('.'));
            prop_assert_eq!(name, &name.to_ascii_lowercase());
        }
    }
    Ok(())
}
