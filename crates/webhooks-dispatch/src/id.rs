//! Identifier generation.
//!
//! Ids are a type prefix plus a ULID: unique without coordination between processes, and time-ordered so
//! recent rows cluster in the primary-key index.

use ulid::Ulid;

pub(crate) fn endpoint_id() -> String {
    format!("ep_{}", Ulid::new())
}

pub(crate) fn message_id() -> String {
    format!("msg_{}", Ulid::new())
}

/// Identifies one drain's claim, so a drain whose lease expired cannot record over a newer claim.
pub(crate) fn lease_token() -> String {
    Ulid::new().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_prefixes_and_are_unique() {
        let a = super::message_id();
        let b = super::message_id();
        assert!(a.starts_with("msg_") && super::endpoint_id().starts_with("ep_"));
        assert_ne!(a, b);
    }
}
