//! An independent model of "globally reachable", written from the IANA special-purpose address registries
//! (RFC 6890 and updates) and `std::net`'s classifiers, to cross-check `ssrf::classify`.
//!
//! It is deliberately more permissive than the library in places (the registries call 192.0.0.9/32, the
//! AS112 and AMT blocks and ORCHIDv2 globally reachable; the library refuses some of them), so the check only
//! runs one way: whatever the library lets through must be reachable here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// IPv4 blocks the registry marks not globally reachable, beyond what `std` classifies.
const V4_NOT_REACHABLE: &[&str] = &[
    "0.0.0.0/8",      // "this network"
    "100.64.0.0/10",  // shared address space (CGNAT)
    "192.0.0.0/24",   // IETF protocol assignments (with the exceptions below)
    "192.88.99.0/24", // deprecated 6to4 relay anycast
    "198.18.0.0/15",  // benchmarking
    "240.0.0.0/4",    // reserved
    "255.255.255.255/32",
];

/// Globally reachable exceptions inside 192.0.0.0/24: PCP anycast and TURN anycast.
const V4_REACHABLE_EXCEPTIONS: &[&str] = &["192.0.0.9/32", "192.0.0.10/32"];

/// IPv6 blocks the registry marks not globally reachable, beyond what `std` classifies.
const V6_NOT_REACHABLE: &[&str] = &[
    "::/96",          // IPv4-compatible (deprecated) and the unspecified address
    "::ffff:0:0/96",  // IPv4-mapped: judged as IPv4, never returned by vetting in this form
    "64:ff9b:1::/48", // local-use IPv4/IPv6 translation
    "100::/64",       // discard-only
    "2001::/23",      // IETF protocol assignments (with the exceptions below)
    "2001:db8::/32",  // documentation
    "3fff::/20",      // documentation
    "5f00::/16",      // segment routing SIDs
    "fc00::/7",       // unique local
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated)
];

/// Globally reachable exceptions inside 2001::/23, and Teredo, which is judged by what it embeds.
const V6_REACHABLE_EXCEPTIONS: &[&str] = &[
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:20::/28",
    "2001::/32",
];

/// Whether the registries and `std` agree `ip` is a globally reachable unicast address, judging IPv6 forms
/// that deliver to an IPv4 address (mapped, NAT64, 6to4, Teredo) by every IPv4 address they embed.
pub(crate) fn globally_reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_reachable(v4),
        IpAddr::V6(v6) => v6_reachable(v6),
    }
}

fn v4_reachable(ip: Ipv4Addr) -> bool {
    let std_says_special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast();
    let excepted = V4_REACHABLE_EXCEPTIONS.iter().any(|n| v4_net(n).contains(&ip));
    !std_says_special && (excepted || !V4_NOT_REACHABLE.iter().any(|n| v4_net(n).contains(&ip)))
}

fn v6_reachable(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reachable(v4);
    }
    let bits = u128::from(ip);
    if v6_net("64:ff9b::/96").contains(&ip) {
        return v4_reachable(Ipv4Addr::from(bits as u32));
    }
    if v6_net("2002::/16").contains(&ip) {
        return v4_reachable(Ipv4Addr::from((bits >> 80) as u32));
    }
    if v6_net("2001::/32").contains(&ip) {
        // Teredo: the server in bits 32..64, the client's address inverted in the last 32 bits.
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return v4_reachable(server) && v4_reachable(client);
    }
    let std_says_special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local();
    // Only 2000::/3 is allocated for global unicast; everything outside it is reserved by IANA.
    let global_unicast_block = v6_net("2000::/3").contains(&ip);
    let excepted = V6_REACHABLE_EXCEPTIONS.iter().any(|n| v6_net(n).contains(&ip));
    !std_says_special
        && global_unicast_block
        && (excepted || !V6_NOT_REACHABLE.iter().any(|n| v6_net(n).contains(&ip)))
}

fn v4_net(text: &str) -> Ipv4Net {
    text.parse().expect("the table holds valid IPv4 networks")
}

fn v6_net(text: &str) -> Ipv6Net {
    text.parse().expect("the table holds valid IPv6 networks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_agrees_with_well_known_addresses() {
        let reachable = [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        let special = [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "4000::1",
        ];
        for ip in reachable {
            assert!(globally_reachable(ip.parse().unwrap()), "{ip}");
        }
        for ip in special {
            assert!(!globally_reachable(ip.parse().unwrap()), "{ip}");
        }
    }
}
