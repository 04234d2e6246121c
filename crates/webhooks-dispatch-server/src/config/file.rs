//! Reading the TOML configuration file without ever quoting a value from it in an error.

use std::path::Path;

use super::RawSettings;
use crate::Error;

impl RawSettings {
    /// Reads a TOML file. Parse errors keep their line number but not the quoted values, which could be
    /// secrets (an API key written where a number was expected).
    pub fn from_file(path: &Path) -> Result<RawSettings, Error> {
        let file_error = |message: String| Error::ConfigFile {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        RawSettings::from_toml_str(&text).map_err(file_error)
    }

    /// Parses the text of a TOML file as [`RawSettings::from_file`] does (the fuzz target for the loader
    /// starts here); the error is the message it reports, with the line number and without quoted values.
    pub fn from_toml_str(text: &str) -> Result<RawSettings, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = elide_quoted(e.message());
            match line {
                Some(n) => format!("line {n}: {message}"),
                None => message,
            }
        })
    }
}

/// Replaces every double-quoted part of a parser message with `"…"`.
fn elide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    let mut escaped = false;
    for c in message.chars() {
        // A quoted part is printed like a Rust string: `\"` inside it does not end it (the rest would leak).
        if inside && (escaped || c == '\\') {
            escaped = !escaped && c == '\\';
            continue;
        }
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}
