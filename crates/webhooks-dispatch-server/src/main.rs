//! The `webhooks-dispatch` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    webhooks_dispatch_server::cli::run(webhooks_dispatch_server::cli::Cli::parse())
}
