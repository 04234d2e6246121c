//! Reading `DATABASE_URL`-style connection URLs: where they point (the loopback guard) and how to show them
//! (with the password hidden).
//!
//! The guard parses the URL itself instead of asking a driver, because the two drivers in this workspace
//! read some URLs differently (tokio-postgres ends the user info at the first `@` anywhere, the `url` crate
//! under sqlx at the last `@` before the path; sqlx falls back to `PGHOST` when the URL has no host). Rather
//! than pick one reading, it refuses any URL the readings could disagree on, and checks every host either
//! would use: the ones in the URL's authority and those in `host=` and `hostaddr=` parameters.

use std::borrow::Cow;
use std::net::IpAddr;

/// What [`require_loopback`] accepts, for its error messages.
const ALLOWED: &str =
    "allowed: a host on 127.0.0.0/8, ::1, localhost, or a Unix-socket directory (a host starting with /)";

/// Checks that the PostgreSQL URL `url` (`postgres://` or `postgresql://`) points at this machine only.
///
/// Every host it names — in the authority (`user@host:port,host2:port2`, IPv6 in brackets, a
/// percent-encoded socket directory such as `%2Frun%2Fpostgresql`) and in `host=` and `hostaddr=` query
/// parameters — must be an IP address on 127.0.0.0/8, `::1`, `localhost` (any case), or a Unix-socket
/// directory starting with `/`. Refused as well: a URL with no host at all (sqlx would fall back to `PGHOST`,
/// which may point anywhere), keyword/value connection strings, other schemes, and URLs the drivers split
/// differently (a raw `#`, or an `@` anywhere but once in the user info: percent-encode them as `%23` and
/// `%40`).
///
/// # Errors
///
/// A message with the URL (password hidden), what is wrong with it and what is allowed.
pub fn require_loopback(url: &str) -> Result<(), String> {
    let refuse = |why: String| Err(format!("{} {why}; {ALLOWED}", redacted(url)));
    let hosts = match hosts(url) {
        Ok(hosts) => hosts,
        Err(why) => return refuse(why),
    };
    if hosts.is_empty() {
        return refuse(
            "names no host (sqlx would then use PGHOST or a default of its own, which this check cannot vouch \
             for)"
                .to_owned(),
        );
    }
    match hosts.iter().find(|host| !is_local(host)) {
        Some(host) => refuse(format!("names host {host:?}, which is not on this machine")),
        None => Ok(()),
    }
}

/// Every host `url` names, raw for TCP hosts (see [`authority_host`]) and decoded for socket directories and
/// parameters; `Err` for URLs the drivers could read differently.
fn hosts(url: &str) -> Result<Vec<String>, String> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| {
            url.get(..scheme.len())
                .filter(|head| head.eq_ignore_ascii_case(scheme))
                .map(|_| &url[scheme.len()..])
        })
        .ok_or_else(|| "is not a postgres:// or postgresql:// URL".to_owned())?;
    // The url crate ends the URL at a '#', tokio-postgres does not: "postgres://remote#@127.0.0.1" is
    // 127.0.0.1 to one and `remote` to the other.
    if rest.contains('#') {
        return Err(
            "contains a '#', which the drivers read differently (percent-encode it as %23)".to_owned(),
        );
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // With exactly one '@' and that one before the path, both drivers agree where the user info ends.
    let host_list = match authority.matches('@').count() {
        0 if rest[authority_end..].contains('@') => {
            return Err(
                "has an '@' after the host, where tokio-postgres would end the user info and look for \
                        the host (percent-encode it as %40)"
                    .to_owned(),
            )
        }
        0 => authority,
        1 => authority.split_once('@').map_or(authority, |(_, hosts)| hosts),
        _ => {
            return Err(
                "has more than one '@' before the host, which the drivers split differently \
                        (percent-encode '@' in user names and passwords as %40)"
                    .to_owned(),
            )
        }
    };
    let mut hosts = Vec::new();
    if !host_list.is_empty() {
        for chunk in host_list.split(',') {
            hosts.push(authority_host(chunk)?);
        }
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            if !(key.eq_ignore_ascii_case("host") || key.eq_ignore_ascii_case("hostaddr")) {
                continue;
            }
            // Both drivers decode parameter values. A list is split even where a driver would not, so that
            // no reading can hide a host.
            let value = decode(value);
            if value.starts_with('/') {
                hosts.push(value.into_owned());
            } else {
                hosts.extend(value.split(',').map(str::to_owned));
            }
        }
    }
    Ok(hosts)
}

/// The host of one `host[:port]` or `[v6][:port]` entry of the authority.
///
/// A socket directory is decoded (both drivers do), but a TCP host is kept raw: sqlx hands it undecoded to
/// the resolver, so `%31%32%37.0.0.1` would be a DNS lookup there, not 127.0.0.1.
fn authority_host(chunk: &str) -> Result<String, String> {
    let host = match chunk.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) if after.is_empty() || after.starts_with(':') => host,
            _ => return Err(format!("has a malformed IPv6 host {chunk:?}")),
        },
        None => chunk.split(':').next().unwrap_or(""),
    };
    let decoded = decode(host);
    if decoded.starts_with('/') {
        Ok(decoded.into_owned())
    } else {
        Ok(host.to_owned())
    }
}

/// Whether a host is one of the allowed forms (see [`ALLOWED`]).
fn is_local(host: &str) -> bool {
    if host.starts_with('/') || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// Percent-decoding as the drivers do it: `%XX` becomes that byte, anything else stays.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).expect("two hex digits fit a byte"));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// `url` with its passwords (in the user info and in `password=` parameters) replaced by `***`, fit for
/// messages. Errs on the side of hiding: for a URL with several `@`, everything from the first `:` to the
/// last `@` is hidden, since either driver's reading may put a password there.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A keyword/value string or something else: any part of it may be a password.
        return "<not a URL>".to_owned();
    };
    let rest = match rest.split_once('?') {
        Some((head, query)) => {
            let pairs: Vec<Cow<'_, str>> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if decode(key).eq_ignore_ascii_case("password") => {
                        Cow::Owned(format!("{key}=***"))
                    }
                    _ => Cow::Borrowed(pair),
                })
                .collect();
            format!("{head}?{}", pairs.join("&"))
        }
        None => rest.to_owned(),
    };
    let shown = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}:***{}", &rest[..colon], &rest[at..]),
            None => rest,
        },
        None => rest,
    };
    format!("{scheme}://{shown}")
}

#[cfg(test)]
mod tests {
    use super::{redacted, require_loopback};

    #[test]
    fn loopback_hosts_sockets_and_localhost_are_accepted() {
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgresql://u@127.9.8.7/db",
            "POSTGRES://u@127.0.0.1/db",
            "postgres://u:secret@localhost/db",
            "postgres://LocalHost:5432/db",
            "postgres://u@[::1]:5432/db",
            "postgres://[::1]/db",
            "postgres://127.0.0.1",
            "postgres:///db?host=/var/run/postgresql",
            "postgres:///db?host=%2Fvar%2Frun%2Fpostgresql&sslmode=disable",
            "postgres://%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://u@127.0.0.1:5432,127.0.0.2:5433,localhost/db",
            "postgres://u@localhost/db?hostaddr=127.0.0.1",
            "postgres://u@127.0.0.1/db?host=127.0.0.2,localhost",
            "postgres://u:p%40ss%23word@127.0.0.1/db?application_name=a%40b",
            "postgres://u@127.0.0.1/db?password=x&statement-cache-capacity=0",
        ] {
            assert_eq!(require_loopback(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn remote_hosts_are_refused_wherever_they_are_named() {
        for (url, host) in [
            ("postgres://u@10.0.0.5/db", "10.0.0.5"),
            ("postgres://u@db.example.com:5432/db", "db.example.com"),
            ("postgresql://[2001:db8::1]:5432/db", "2001:db8::1"),
            ("postgres://[::ffff:10.0.0.1]/db", "::ffff:10.0.0.1"),
            ("postgres://0.0.0.0/db", "0.0.0.0"),
            // getaddrinfo would read these as 127.0.0.1, sqlx's resolver might ask DNS: not vouched for.
            ("postgres://127.1/db", "127.1"),
            ("postgres://%31%32%37.0.0.1/db", "%31%32%37.0.0.1"),
            ("postgres://localhost./db", "localhost."),
            ("postgres://127.0.0.1,db.example.com/db", "db.example.com"),
            ("postgres://127.0.0.1/db?host=db.example.com", "db.example.com"),
            (
                "postgres://127.0.0.1/db?sslmode=disable&HOST=db.example.com",
                "db.example.com",
            ),
            (
                "postgres://127.0.0.1/db?host=127.0.0.1,db.example.com",
                "db.example.com",
            ),
            ("postgres://localhost/db?hostaddr=10.0.0.5", "10.0.0.5"),
            ("postgres:///db?host=db%2Eexample.com", "db.example.com"),
            ("postgres://u@:5432/db", ""),
        ] {
            let err = require_loopback(url).unwrap_err();
            assert!(err.contains(&format!("names host {host:?}")), "{url}: {err}");
            assert!(err.contains("127.0.0.0/8, ::1, localhost"), "{url}: {err}");
        }
    }

    #[test]
    fn urls_without_a_host_or_read_differently_by_the_drivers_are_refused() {
        for (url, why) in [
            ("postgres:///db", "names no host"),
            ("postgres://u:pw@/db", "names no host"),
            ("postgres://", "names no host"),
            (
                "host=127.0.0.1 dbname=db",
                "is not a postgres:// or postgresql:// URL",
            ),
            (
                "mysql://u@127.0.0.1/db",
                "is not a postgres:// or postgresql:// URL",
            ),
            ("127.0.0.1:5432", "is not a postgres:// or postgresql:// URL"),
            // The url crate: host db.example.com; tokio-postgres: host 127.0.0.1.
            ("postgres://db.example.com#@127.0.0.1/db", "'#'"),
            // tokio-postgres ends the user info at the first '@' anywhere: host db.example.com.
            (
                "postgres://127.0.0.1/db?application_name=a@db.example.com",
                "'@' after the host",
            ),
            ("postgres://u?x@127.0.0.1/db", "'@' after the host"),
            ("postgres://u:p@127.0.0.1@db.example.com/db", "more than one '@'"),
            ("postgres://[::1/db", "malformed IPv6 host"),
        ] {
            let err = require_loopback(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.ends_with("(a host starting with /)"), "{url}: {err}");
        }
    }

    #[test]
    fn refusals_hide_the_password() {
        let err =
            require_loopback("postgres://app:hunter2@db.example.com:5432/prod?password=hunter3").unwrap_err();
        assert!(
            err.starts_with("postgres://app:***@db.example.com:5432/prod?password=*** names host"),
            "{err}"
        );
        let err = require_loopback("postgres://app:hun@ter2@db.example.com/prod").unwrap_err();
        assert!(!err.contains("hun") && !err.contains("ter2"), "{err}");
        let err = require_loopback("host=db.example.com password=hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redaction_keeps_everything_but_passwords() {
        assert_eq!(
            redacted("postgres://u:pw@127.0.0.1:5432/db?sslmode=disable&password=x%26y&pass=1"),
            "postgres://u:***@127.0.0.1:5432/db?sslmode=disable&password=***&pass=1"
        );
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("postgres://h:5432/db"), "postgres://h:5432/db");
        assert_eq!(redacted("postgres://u:p?w@h/db"), "postgres://u:***@h/db");
        assert_eq!(redacted("dbname=x password=y"), "<not a URL>");
    }
}
