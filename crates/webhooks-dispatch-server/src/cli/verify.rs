//! `verify`: checks a received webhook offline, under an HMAC secret (`v1`) or an ed25519 public key (`v1a`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use webhooks_dispatch::signing::Ed25519PublicKey;
use webhooks_dispatch::{verify, verify_ed25519, EndpointSecret, VerifyError};

use super::fail;
use crate::Error;

/// The variable `--secret` may come from instead of the command line.
const SECRET_VARIABLE: &str = "WEBHOOKS_DISPATCH_VERIFY_SECRET";

/// `verify …`: the three Standard Webhooks headers, the secret or public key, and the body.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The endpoint's whsec_… secret, for `v1` signatures; else from WEBHOOKS_DISPATCH_VERIFY_SECRET, which
    /// is better: command lines are visible to others. Give this or --public-key.
    #[arg(long, conflicts_with = "public_key")]
    pub secret: Option<String>,
    /// The endpoint's whpk_… ed25519 public key, for `v1a` signatures (an ed25519 endpoint). Not a secret.
    #[arg(long, value_name = "WHPK")]
    pub public_key: Option<String>,
    /// The webhook-id header.
    #[arg(long)]
    pub id: String,
    /// The webhook-timestamp header (Unix seconds; accepted within 5 minutes of this machine's clock).
    #[arg(long)]
    pub timestamp: String,
    /// The webhook-signature header (one or more space-separated v1,… or v1a,… values).
    #[arg(long)]
    pub signature: String,
    /// File holding the exact request body; standard input when absent.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
}

/// What the signature is checked with.
enum Verifier {
    Hmac(EndpointSecret),
    Ed25519(Ed25519PublicKey),
}

impl VerifyArgs {
    /// The public key when given (a secret in the environment is then ignored: the flag is the explicit
    /// choice), else the secret from the flag or the environment.
    fn verifier(&self) -> Result<Verifier, Error> {
        if let Some(key) = &self.public_key {
            let key = Ed25519PublicKey::parse(key.trim())
                .map_err(|_| Error::Input("--public-key: not a whpk_ ed25519 public key".to_owned()))?;
            return Ok(Verifier::Ed25519(key));
        }
        let secret = match &self.secret {
            Some(secret) => secret.clone(),
            None => std::env::var(SECRET_VARIABLE).map_err(|_| {
                Error::Input(format!(
                    "give --secret (or {SECRET_VARIABLE}) for a whsec_ secret, or --public-key for an \
                     ed25519 endpoint"
                ))
            })?,
        };
        let secret =
            EndpointSecret::parse(secret.trim()).map_err(|e| Error::Input(format!("--secret: {e}")))?;
        Ok(Verifier::Hmac(secret))
    }

    fn body(&self) -> Result<Vec<u8>, Error> {
        match &self.body_file {
            Some(path) => {
                std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
            }
            None => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map(|_| buf)
                    .map_err(|e| Error::io("reading standard input", e))
            }
        }
    }
}

/// Runs `verify`: prints `valid` and exits 0, or `invalid: …` and exits 1.
pub(super) fn verify_command(args: &VerifyArgs) -> ExitCode {
    let verifier = match args.verifier() {
        Ok(verifier) => verifier,
        Err(e) => return fail(&e),
    };
    let body = match args.body() {
        Ok(body) => body,
        Err(e) => return fail(&e),
    };
    let header = |name: &str| match name {
        "webhook-id" => Some(args.id.as_str()),
        "webhook-timestamp" => Some(args.timestamp.as_str()),
        "webhook-signature" => Some(args.signature.as_str()),
        _ => None,
    };
    let checked: Result<(), VerifyError> = match &verifier {
        Verifier::Hmac(secret) => verify(secret, header, &body),
        Verifier::Ed25519(key) => verify_ed25519(key, header, &body),
    };
    match checked {
        Ok(()) => {
            println!("valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("invalid: {e}");
            ExitCode::FAILURE
        }
    }
}
