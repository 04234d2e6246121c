//! Showing a database connection string without its passwords, in every form one can take.
//!
//! A password reaches a connection string in more places than the URL's user info: `?password=` (which
//! sqlx reads), `?sslpassword=`, a fragment, or a keyword/value string (`host=/tmp password='s e c'`), quoted
//! or not. Each is replaced by `redacted`; whatever cannot be parsed is not shown at all, since any part of
//! it may be a password.

/// What every hidden value is replaced by.
const HIDDEN: &str = "redacted";

/// Shown for a connection string that cannot be parsed: none of it can be vouched for.
const UNPARSEABLE: &str = "[unparseable connection string]";

/// The connection string with every password replaced by `redacted`, safe to log: the user info's password,
/// every query parameter whose name (decoded, any case) contains `password`, `passwd`, `secret` or `token`,
/// the fragment, and the same parameters of a keyword/value string. A URL that does not parse is shown as
/// its scheme only, anything else that does not parse not at all.
pub fn redact_url(raw: &str) -> String {
    redaction(raw).shown
}

/// `text` (a driver's message about the connection `raw` describes) with every secret value of `raw`
/// replaced by `redacted`, in case the driver quoted one back. Both the encoded and the decoded spelling of
/// each value are replaced.
pub fn scrub(text: &str, raw: &str) -> String {
    let mut secrets = redaction(raw).secrets;
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), HIDDEN);
    }
    out
}

/// What may be shown, and the values that must not be.
struct Redaction {
    shown: String,
    secrets: Vec<String>,
}

fn redaction(raw: &str) -> Redaction {
    let raw = raw.trim();
    match raw.split_once(':') {
        Some((scheme, _)) if is_scheme(scheme) => redact_as_url(raw, scheme),
        _ => redact_keyword_value(raw),
    }
}

/// RFC 3986's scheme syntax: a letter, then letters, digits, `+`, `-`, `.`. A keyword/value string never
/// matches: its first `:` (if any) comes after an `=` or a space.
pub(super) fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether a parameter named `key` holds a secret. Broader than the drivers' own names on purpose: hiding a
/// harmless value costs nothing.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// `%XX` decoded as the drivers decode it; anything else (an invalid sequence too) kept as it is.
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or_default());
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact_as_url(raw: &str, scheme: &str) -> Redaction {
    let Ok(mut url) = url::Url::parse(raw) else {
        return Redaction {
            shown: format!("{scheme}:{UNPARSEABLE}"),
            secrets: Vec::new(),
        };
    };
    let mut secrets = Vec::new();
    if let Some(password) = url.password().map(str::to_owned) {
        secrets.push(decoded(&password));
        secrets.push(password);
        // Cannot fail: the URL already has a password, so it can have one.
        let _ = url.set_password(Some(HIDDEN));
    }
    if let Some(query) = url.query().map(str::to_owned) {
        for piece in query.split('&') {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            if is_secret_key(&decoded(key)) {
                secrets.push(value.to_owned());
            }
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                if is_secret_key(&k) {
                    secrets.push(v.into_owned());
                    (k.into_owned(), HIDDEN.to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        if pairs.iter().any(|(k, _)| is_secret_key(k)) {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    if let Some(fragment) = url.fragment().map(str::to_owned) {
        // No driver reads it, so nothing legitimate is lost by hiding it; a password pasted there is not.
        secrets.push(decoded(&fragment));
        secrets.push(fragment);
        url.set_fragment(Some(HIDDEN));
    }
    Redaction {
        shown: url.to_string(),
        secrets,
    }
}

/// A keyword/value connection string (`host=/tmp user=x password='a b'`), read as libpq reads it: `key =
/// value` pairs separated by spaces, values single-quoted or bare, `\` escaping the next character.
fn redact_keyword_value(raw: &str) -> Redaction {
    let Some(pairs) = keyword_values(raw) else {
        return Redaction {
            shown: UNPARSEABLE.to_owned(),
            secrets: Vec::new(),
        };
    };
    let mut secrets = Vec::new();
    let shown: Vec<String> = pairs
        .into_iter()
        .map(|(key, written, value)| {
            if is_secret_key(key) {
                secrets.push(written.to_owned());
                secrets.push(value);
                format!("{key}={HIDDEN}")
            } else {
                format!("{key}={written}")
            }
        })
        .collect();
    Redaction {
        shown: shown.join(" "),
        secrets,
    }
}

/// `(key, value as written, value)` for each pair; `None` unless the whole string is well-formed.
fn keyword_values(raw: &str) -> Option<Vec<(&str, &str, String)>> {
    let mut pairs = Vec::new();
    let mut rest = raw.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace())?;
        let key = &rest[..key_end];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        rest = rest[key_end..].trim_start().strip_prefix('=')?.trim_start();
        let (value, len) = value(rest)?;
        pairs.push((key, &rest[..len], value));
        rest = rest[len..].trim_start();
    }
    (!pairs.is_empty()).then_some(pairs)
}

/// The value at the start of `text` and how many bytes it was written in.
fn value(text: &str) -> Option<(String, usize)> {
    let quoted = text.starts_with('\'');
    let mut out = String::new();
    let mut chars = text.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '\'' if quoted => return Some((out, i + 1)),
            c if c.is_whitespace() && !quoted => return Some((out, i)),
            c => out.push(c),
        }
    }
    // A bare value may end the string; a quoted one must be closed.
    (!quoted).then_some((out, text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_password_form_and_keeps_the_rest() {
        for (raw, shown) in [
            (
                "postgres://app:hunter2@db:5432/hooks?sslmode=require",
                "postgres://app:redacted@db:5432/hooks?sslmode=require",
            ),
            (
                "postgres://app@db/hooks?sslmode=require&password=hunter2",
                "postgres://app@db/hooks?sslmode=require&password=redacted",
            ),
            (
                "postgres://db/hooks?pass%77ord=hunter2&SSLPASSWORD=x#hunter3",
                "postgres://db/hooks?password=redacted&SSLPASSWORD=redacted#redacted",
            ),
            ("postgres://db/hooks", "postgres://db/hooks"),
            ("sqlite://webhooks-dispatch.db", "sqlite://webhooks-dispatch.db"),
            (
                "postgres://db:notaport/x",
                "postgres:[unparseable connection string]",
            ),
            (
                "host=/tmp user=x password='hun ter\\'2' dbname = 'my db'",
                "host=/tmp user=x password=redacted dbname='my db'",
            ),
            ("password=hun\\ ter2 host=db", "password=redacted host=db"),
            ("host=db password='unterminated", UNPARSEABLE),
            ("hunter2", UNPARSEABLE),
            ("host=db password:hunter2", UNPARSEABLE),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn scrub_replaces_both_spellings_of_every_secret() {
        let raw = "postgres://app:p%40ss@db/x?password=q%20w";
        let text = "failed for p@ss and p%40ss, q w and q%20w";
        assert_eq!(
            scrub(text, raw),
            "failed for redacted and redacted, redacted and redacted"
        );
        assert_eq!(
            scrub("connection refused", "postgres://db/x"),
            "connection refused"
        );
    }
}
