use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;

/// A throwaway certificate authority that issues leaf certificates for any
/// names.
///
/// Keys are ECDSA P-256 and validity runs from 1975 to 4096, so clock skew
/// in CI never matters. Nothing is written to disk.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// Generates a new CA.
    ///
    /// # Panics
    ///
    /// If key generation or signing fails, which does not happen with the
    /// `ring` backend short of a broken system RNG.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "webhooks-dispatch-testkit CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate chain (leaf, then this CA) and its private key.
    ///
    /// Each name becomes an IP address SAN when it parses as an IP address,
    /// and a DNS name SAN otherwise.
    ///
    /// # Panics
    ///
    /// If a name is not a valid DNS name (for example contains a space).
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generate leaf key");
        let sans: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        let mut params = CertificateParams::new(sans)
            .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert_der()], key)
    }

    /// A root store trusting only this CA — what the dispatcher under test is
    /// given instead of the public web PKI.
    pub fn root_store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        store
            .add(self.cert_der())
            .expect("the CA certificate is a valid trust anchor");
        store
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}
