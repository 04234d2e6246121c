//! The service's start-up and command errors (HTTP errors are [`crate::api::ApiError`]).
//!
//! Every message is written for the operator reading a terminal, and none contains a secret: database URLs
//! are shown with their password redacted, API keys are referred to by position, and driver errors from the
//! library are its generic [`StorageError`](webhooks_dispatch::StorageError) text.

use std::path::PathBuf;

use webhooks_dispatch::{DispatchError, StorageError};

/// Why the service or a command could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {message}")]
    ConfigFile {
        /// The file given with `--config`.
        path: PathBuf,
        /// What was wrong, with quoted values elided.
        message: String,
    },
    /// A command-line argument is unusable (e.g. `--data` is not JSON).
    #[error("invalid input: {0}")]
    Input(String),
    /// The database could not be reached at start-up.
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect {
        /// The URL with its password redacted.
        url: String,
        /// The driver's explanation, scrubbed of every secret value of the URL.
        reason: String,
    },
    /// A library call failed.
    #[error("{}", dispatch_message(.0))]
    Dispatch(#[from] DispatchError),
    /// Binding, reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Dispatch(e.into())
    }
}

/// The library's message, plus a hint for the mistake every new installation makes once: forgetting to
/// create the tables.
fn dispatch_message(e: &DispatchError) -> String {
    match e {
        DispatchError::Storage(s) if s.kind() == webhooks_dispatch::StorageErrorKind::UndefinedTable => {
            format!("{e} ({s}): the tables do not exist yet; run `webhooks-dispatch migrate` first")
        }
        DispatchError::Storage(s) => format!("{e} ({s})"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `serve`, `worker` and `migrate` print this after "error: " and exit non-zero: it must say what is wrong
    // and what to do, not the generic "storage error".
    #[test]
    fn a_schema_from_a_newer_release_is_explained_at_start() {
        let e = Error::from(DispatchError::SchemaTooNew {
            found: 3,
            supported: 2,
        });
        let text = e.to_string();
        assert!(text.starts_with("the database schema is at version 3"), "{text}");
        assert!(
            text.contains("knows (2)") && text.contains("run a release that knows it"),
            "{text}"
        );
    }
}
