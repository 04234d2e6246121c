//! Looking for a leaked secret in every encoding it could take: an endpoint secret in every encoding of its
//! key (invariant 7), a database password in every way a connection string can carry it.

use base64::Engine as _;

/// Every form in which an endpoint secret could leak: the `whsec_…` text, its base64 part, the raw key
/// bytes, their hex (both cases), the other base64 alphabets and paddings, and `Debug` of the bytes. A leak
/// that re-encodes the key (a hex dump, a URL-safe encoding, a `{:?}` of a `Vec<u8>`) is as bad as one that
/// prints the text.
#[derive(Debug)]
pub struct SecretForms(Vec<(&'static str, Vec<u8>)>);

impl SecretForms {
    /// The forms of `secret`: an HMAC secret (`whsec_` + standard base64 of the key), an ed25519 signing key
    /// (`whsk_` + base64), or a master key as a key ring reads it (`id:` + base64).
    pub fn of(secret: &str) -> SecretForms {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let b64 = secret
            .strip_prefix("whsec_")
            .or_else(|| secret.strip_prefix("whsk_"))
            .or_else(|| secret.split_once(':').map(|(_, key)| key))
            .expect("a whsec_ or whsk_ secret, or an id:base64 master key");
        let raw = STANDARD.decode(b64).expect("the secret is base64");
        // Short needles would match by chance; the library's keys are 32 bytes.
        assert!(raw.len() >= 24, "key of {} bytes", raw.len());
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        // Some forms coincide for a given key (no `+` or `/` in it); checking one twice is harmless.
        SecretForms(vec![
            ("whsec_ text", secret.as_bytes().to_vec()),
            ("base64 part", b64.as_bytes().to_vec()),
            ("raw key bytes", raw.clone()),
            ("lowercase hex", hex.as_bytes().to_vec()),
            ("uppercase hex", hex.to_uppercase().into_bytes()),
            ("unpadded base64", STANDARD_NO_PAD.encode(&raw).into_bytes()),
            ("base64url", URL_SAFE.encode(&raw).into_bytes()),
            ("unpadded base64url", URL_SAFE_NO_PAD.encode(&raw).into_bytes()),
            ("Debug of the key bytes", format!("{raw:?}").into_bytes()),
            ("hex Debug of the key bytes", format!("{raw:x?}").into_bytes()),
        ])
    }

    /// The name of the first form found in `haystack`, if any.
    pub fn found_in(&self, haystack: &[u8]) -> Option<&'static str> {
        self.0
            .iter()
            .find(|(_, needle)| haystack.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|(name, _)| *name)
    }

    /// Panics, naming `place` and the form, if any form occurs in `haystack`.
    pub fn assert_absent(&self, place: &str, haystack: &[u8]) {
        if let Some(form) = self.found_in(haystack) {
            panic!("the endpoint secret ({form}) appears in {place}");
        }
    }
}

/// Every form in which a database password could leak from a connection string: the text itself, as the
/// `url` crate encodes it in a URL's user info, form-encoded as in a `?password=` query, fully
/// percent-encoded, single-quoted and escaped as in a keyword/value string (`password='…'`), and `Debug` of
/// the text. A redaction that removes one spelling but prints another is still a leak.
#[derive(Debug)]
pub struct PasswordForms(Vec<(&'static str, String)>);

impl PasswordForms {
    /// The forms of `password`, which must be at least 6 characters (shorter ones would match by chance).
    pub fn of(password: &str) -> PasswordForms {
        assert!(
            password.chars().count() >= 6,
            "password {password:?} is too short to search for"
        );
        let percent: String = password
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        PasswordForms(vec![
            ("text", password.to_owned()),
            ("user-info encoding", Self::in_userinfo(password)),
            ("query encoding", Self::in_query(password)),
            ("percent-encoding", percent.clone()),
            ("lowercase percent-encoding", percent.to_lowercase()),
            ("keyword/value quoting", Self::quoted(password)),
            ("Debug of the text", format!("{password:?}")),
        ])
    }

    /// `password` as the password of a URL's user info (`postgres://user:HERE@host`), encoded as the `url`
    /// crate (and so sqlx) reads it back.
    pub fn in_userinfo(password: &str) -> String {
        let mut url = url::Url::parse("postgres://user@host").expect("a valid URL");
        url.set_password(Some(password))
            .expect("postgres URLs take a password");
        url.password().expect("just set").to_owned()
    }

    /// `password` form-encoded, as the value of a query parameter (`?password=HERE`).
    pub fn in_query(password: &str) -> String {
        url::form_urlencoded::byte_serialize(password.as_bytes()).collect()
    }

    /// `password` as a keyword/value connection string's single-quoted value (`password='HERE'`), with `\`
    /// and `'` escaped by a backslash as libpq reads them.
    pub fn quoted(password: &str) -> String {
        format!("'{}'", password.replace('\\', "\\\\").replace('\'', "\\'"))
    }

    /// The name of the first form found in `haystack`, if any.
    pub fn found_in(&self, haystack: &[u8]) -> Option<&'static str> {
        self.0
            .iter()
            .find(|(_, needle)| haystack.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .map(|(name, _)| *name)
    }

    /// Panics, naming `place` and the form, if any form occurs in `haystack`.
    pub fn assert_absent(&self, place: &str, haystack: &[u8]) {
        if let Some(form) = self.found_in(haystack) {
            panic!("the database password ({form}) appears in {place}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a `SecretForms` that misses an encoding (the checks above would then pass whatever leaked in
    // it), or that matches text which is not this secret.
    #[test]
    fn secret_forms_recognise_every_encoding_of_the_key_and_nothing_else() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        use base64::Engine as _;
        // 0xfb bytes encode to `+/v7` in standard base64 and `-_v7` in base64url, so the alphabets differ.
        let raw = vec![0xfbu8; 32];
        let secret = format!("whsec_{}", STANDARD.encode(&raw));
        let forms = SecretForms::of(&secret);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let encodings: [Vec<u8>; 10] = [
            secret.clone().into_bytes(),
            STANDARD.encode(&raw).into_bytes(),
            raw.clone(),
            hex.clone().into_bytes(),
            hex.to_uppercase().into_bytes(),
            STANDARD_NO_PAD.encode(&raw).into_bytes(),
            URL_SAFE.encode(&raw).into_bytes(),
            URL_SAFE_NO_PAD.encode(&raw).into_bytes(),
            format!("{raw:?}").into_bytes(),
            format!("{raw:x?}").into_bytes(),
        ];
        for encoded in encodings {
            let haystack = [&b"{\"level\":\"TRACE\",\"key\":\""[..], &encoded, b"\"}"].concat();
            assert!(
                forms.found_in(&haystack).is_some(),
                "missed {}",
                String::from_utf8_lossy(&encoded)
            );
        }
        let other = [0x11u8; 32];
        let unrelated = [
            format!("whsec_{} {other:?} {other:x?}", STANDARD.encode(other)).as_bytes(),
            &other,
            &raw[..31],
        ]
        .concat();
        assert_eq!(forms.found_in(&unrelated), None);
    }

    // Catches: a `PasswordForms` that misses a spelling the service could print (the checks would then pass
    // whatever leaked in it), or that matches text which is not this password.
    #[test]
    fn password_forms_recognise_every_spelling_and_nothing_else() {
        let password = "p@ss w'rd\\:/?#&=+%é";
        let forms = PasswordForms::of(password);
        let userinfo = PasswordForms::in_userinfo(password);
        let query = PasswordForms::in_query(password);
        assert!(
            userinfo.contains("%40") && query.contains('+'),
            "{userinfo} {query}"
        );
        for text in [
            format!("postgres://u:{userinfo}@h/db"),
            format!("postgres://u@h/db?sslmode=require&password={query}"),
            format!("host=/tmp password={} user=x", PasswordForms::quoted(password)),
            format!("{:?}", password.to_owned()),
            password.to_owned(),
        ] {
            assert!(forms.found_in(text.as_bytes()).is_some(), "missed {text}");
        }
        let shown = "postgres://u:redacted@h/db?password=redacted host=/tmp password=redacted p@ss w'rd";
        assert_eq!(forms.found_in(shown.as_bytes()), None);
    }
}
