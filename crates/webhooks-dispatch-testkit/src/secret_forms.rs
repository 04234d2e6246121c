//! Looking for a leaked endpoint secret in every encoding of its key (invariant 7).

use base64::Engine as _;

/// Every form in which an endpoint secret could leak: the `whsec_…` text, its base64 part, the raw key
/// bytes, their hex (both cases), the other base64 alphabets and paddings, and `Debug` of the bytes. A leak
/// that re-encodes the key (a hex dump, a URL-safe encoding, a `{:?}` of a `Vec<u8>`) is as bad as one that
/// prints the text.
#[derive(Debug)]
pub struct SecretForms(Vec<(&'static str, Vec<u8>)>);

impl SecretForms {
    /// The forms of `secret` (`whsec_` + standard base64 of the key).
    pub fn of(secret: &str) -> SecretForms {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let b64 = secret.strip_prefix("whsec_").expect("a whsec_ secret");
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
}
