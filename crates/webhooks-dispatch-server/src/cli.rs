//! The command line: `serve`, `worker`, `migrate`, and client conveniences
//! (`endpoint add|list|show|update|disable|enable|delete|rotate-secret|expire-previous-secrets|keys`,
//! `send`, `event send`, `message list`, `attempts`, `keys generate|add|rekey`, `verify`).
//!
//! The client commands talk to the database directly through the library, with the same `--database-url`
//! as the service, not over HTTP: nothing to authenticate, and they work while the service is down.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::value::RawValue;
use webhooks_dispatch::{Attempt, ListMessages, MessageState, NewEvent, NewMessage};

mod endpoint;
mod generated_key;
mod keys;
mod verify;

use endpoint::{endpoint_command, EndpointCommand};
pub use keys::KeysCommand;
pub use verify::VerifyArgs;

use crate::config::{Config, RawSettings};
use crate::{database, logging, server, Error};

const ABOUT: &str = "Sends webhooks: signed (Standard Webhooks), retried, logged, SSRF-safe.";
const LONG_ABOUT: &str = "\
Sends webhooks: signed (Standard Webhooks), retried, logged, SSRF-safe.

`serve` runs the HTTP API and the delivery worker; `worker` runs deliveries only. The client commands
(`endpoint`, `send`, `event`, `message`, `attempts`, `keys`) use the database directly with the same
--database-url — no HTTP and no API key, and they work while the service is down. `verify` checks a
received webhook offline.

Endpoint secrets are sealed in the database under a master key ring (--master-keys or
WEBHOOKS_DISPATCH_MASTER_KEYS, or a key file: --master-keys-file, by default with SQLite the database's
path plus `.keys`, created on first start). Back the key file up with the database.

Settings come from flags, then WEBHOOKS_DISPATCH_* environment variables, then the --config TOML file
(same names in snake_case), then defaults. Exit status: 0 success, 1 failure or invalid signature, 2 usage.";

/// `webhooks-dispatch [SETTINGS] <COMMAND>`.
#[derive(Debug, Parser)]
#[command(name = "webhooks-dispatch", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Settings shared by every command (they may also follow the command name).
    #[command(flatten)]
    pub settings: RawSettings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the delivery worker in one process until SIGTERM or Ctrl-C.
    Serve {
        /// Serve the API only; run deliveries elsewhere with `worker`.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run only the delivery worker until SIGTERM or Ctrl-C.
    Worker,
    /// Create the tables if missing, then exit (`serve` and `worker` also do this at start).
    Migrate,
    /// Register and inspect endpoints (direct database access).
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Enqueue one message (direct database access); prints its id.
    Send(SendArgs),
    /// Fan owners' events out to their endpoints (direct database access).
    #[command(subcommand)]
    Event(EventCommand),
    /// Inspect what was sent (direct database access).
    #[command(subcommand)]
    Message(MessageCommand),
    /// Show a message's status and attempt log as a table (direct database access).
    Attempts {
        /// The msg_… id.
        message_id: String,
    },
    /// Master keys that seal endpoint secrets at rest: generate, add to the key file, rekey.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check a received webhook's signature (no database). Exit 0 when valid, 1 when not.
    Verify(VerifyArgs),
}

/// `event …`.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Send an owner's event to each of its endpoints subscribed to the type; prints the event id, then one
    /// line per message and per skipped endpoint.
    Send(EventArgs),
}

/// `message …`.
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// List messages newest first, one per line (id, endpoint, state, event type, dispatch time); the cursor
    /// of the next (older) page, if any, goes to standard error.
    List(MessageListArgs),
}

/// `message list …`: filters combine.
#[derive(Debug, Args)]
pub struct MessageListArgs {
    /// Only messages to this endpoint (ep_…).
    #[arg(long, value_name = "ID")]
    pub endpoint: Option<String>,
    /// Only the messages this event fanned out (evt_…).
    #[arg(long, value_name = "ID")]
    pub event: Option<String>,
    /// Only messages in this state.
    #[arg(long, value_parser = ["pending", "delivered", "dead"])]
    pub status: Option<String>,
    /// Only messages dispatched at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub since: Option<DateTime<Utc>>,
    /// Only messages dispatched before this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many (1..=250).
    #[arg(long, default_value_t = webhooks_dispatch::DEFAULT_LIST_LIMIT)]
    pub limit: u32,
    /// Where the previous page ended.
    #[arg(long)]
    pub cursor: Option<String>,
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2030-01-01T00:00:00Z ({e})"))
}

/// `event send …`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Whose event it is (the endpoints' owner id).
    #[arg(long)]
    pub owner: String,
    /// Event type, e.g. invoice.paid.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: String,
    /// Payload as JSON; stored once and sent byte for byte to every endpoint.
    #[arg(long, value_name = "JSON")]
    pub data: String,
    /// Sending again with the same key for the same owner creates nothing and prints the first event.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// `send …`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Target endpoint id (ep_…).
    #[arg(long)]
    pub endpoint: String,
    /// Event type, e.g. invoice.paid.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: String,
    /// Payload as JSON; sent byte for byte.
    #[arg(long, value_name = "JSON")]
    pub data: String,
    /// Sending again with the same key for the same endpoint creates nothing and prints the first id.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Verify(args) = &cli.command {
        // Offline and configuration-free: a broken service configuration must not stop a receiver check.
        return verify::verify_command(args);
    }
    if let Command::Keys(KeysCommand::Generate { id }) = &cli.command {
        // The same: a key for a configuration being written cannot depend on that configuration.
        return keys::generate_command(id.as_deref());
    }
    let (config, generated) = match resolve(cli.settings, &cli.command) {
        Ok(resolved) => resolved,
        Err(e) => return fail(&e),
    };
    let default_filter = match cli.command {
        Command::Serve { .. } | Command::Worker | Command::Migrate => logging::SERVICE_FILTER,
        _ => logging::CLIENT_FILTER,
    };
    logging::init(config.log_format, default_filter);
    if let Some(shown) = &generated {
        generated_key::announce(shown);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::io("starting the async runtime", e)),
    };
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The configuration for `command`, and where `serve` put the API key it generated, if it did.
fn resolve(
    settings: RawSettings,
    command: &Command,
) -> Result<(Config, Option<generated_key::Shown>), Error> {
    let mut config = settings.load()?;
    let mut generated = None;
    if let Command::Serve { no_worker } = command {
        config.worker = !no_worker;
        if config.api_keys.is_empty() && !config.insecure_no_auth {
            // Secure by default without setup: `serve` on a fresh machine works, but never unauthenticated.
            // The key exists only in this process and its file (or on the terminal of whoever started it).
            generated = Some(generated_key::generate(&mut config)?);
        }
        config.check_serve()?;
    }
    Ok((config, generated))
}

pub(crate) fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

async fn execute(command: Command, config: Config) -> Result<(), Error> {
    match command {
        Command::Serve { .. } => {
            tracing::info!(?config, "starting");
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
            server::run(listener, config, server::shutdown_signal()).await
        }
        Command::Worker => {
            tracing::info!(?config, "starting");
            server::run_worker(config, server::shutdown_signal()).await
        }
        Command::Migrate => {
            server::migrate(&config).await?;
            eprintln!("tables are up to date");
            Ok(())
        }
        Command::Endpoint(command) => endpoint_command(command, &config).await,
        Command::Send(args) => send_command(args, &config).await,
        Command::Event(EventCommand::Send(args)) => event_command(args, &config).await,
        Command::Message(MessageCommand::List(args)) => message_list_command(args, &config).await,
        Command::Attempts { message_id } => {
            let d = client(&config).await?;
            let message = d.message(&message_id).await?;
            let attempts = d.list_attempts(&message_id).await?;
            println!(
                "{} to {} ({}): {} after {} attempt(s)",
                message.id,
                message.endpoint_id,
                message.event_type,
                match message.state {
                    MessageState::Pending => "pending",
                    MessageState::Delivered => "delivered",
                    MessageState::Dead => "dead",
                },
                message.attempts
            );
            print!("{}", attempts_table(&attempts));
            Ok(())
        }
        Command::Keys(command) => keys::keys_command(command, &config).await,
        Command::Verify(_) => unreachable!("handled before configuration"),
    }
}

async fn send_command(args: SendArgs, config: &Config) -> Result<(), Error> {
    let payload = json_arg(&args.data)?;
    let mut input = NewMessage::new(args.endpoint, args.event_type, payload);
    if let Some(key) = args.idempotency_key {
        input = input.idempotency_key(key);
    }
    let sent = client(config).await?.dispatch(input).await?;
    println!("{}", sent.message_id);
    if !sent.created {
        eprintln!("(idempotent replay: a message with this key already existed; nothing new was sent)");
    }
    Ok(())
}

async fn event_command(args: EventArgs, config: &Config) -> Result<(), Error> {
    let payload = json_arg(&args.data)?;
    let mut input = NewEvent::new(args.owner, args.event_type, payload);
    if let Some(key) = args.idempotency_key {
        input = input.idempotency_key(key);
    }
    let sent = client(config).await?.dispatch_event(input).await?;
    println!("{}", sent.event_id);
    for m in &sent.messages {
        println!("message {} to {}", m.message_id, m.endpoint_id);
    }
    for skip in &sent.skipped {
        let why = skip.disabled_reason.map_or("", |r| r.as_str());
        println!("skipped {}: endpoint disabled ({why})", skip.endpoint_id);
    }
    if !sent.created {
        eprintln!("(idempotent replay: an event with this key already existed; nothing new was sent)");
    }
    Ok(())
}

async fn message_list_command(args: MessageListArgs, config: &Config) -> Result<(), Error> {
    let filter = ListMessages {
        endpoint_id: args.endpoint,
        event_id: args.event,
        // clap admits only the three names.
        status: args.status.as_deref().and_then(MessageState::parse),
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let page = client(config).await?.list_messages(filter).await?;
    for m in &page.data {
        println!(
            "{}  {}  {}  {}  {}",
            m.id,
            m.endpoint_id,
            m.state.as_str(),
            m.event_type,
            m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    if let Some(next) = page.next_cursor {
        eprintln!("more: --cursor {next}");
    }
    Ok(())
}

fn json_arg(data: &str) -> Result<Box<RawValue>, Error> {
    serde_json::from_str(data).map_err(|e| Error::Input(format!("--data is not valid JSON ({e})")))
}

/// A dispatcher for the client commands (no migration: they should not create tables as a side effect).
pub(crate) async fn client(config: &Config) -> Result<server::ServiceDispatcher, Error> {
    let config = server::with_key_ring(config)?;
    let db = database::open(&config.database_url, 2).await?;
    server::dispatcher(&config, db.executor, None)
}

/// The attempt log as an aligned text table.
pub fn attempts_table(attempts: &[Attempt]) -> String {
    let mut rows = vec![[
        "#".to_owned(),
        "ATTEMPTED AT (UTC)".to_owned(),
        "OUTCOME".to_owned(),
        "STATUS".to_owned(),
        "LATENCY".to_owned(),
        "NEXT ATTEMPT (UTC)".to_owned(),
        "ERROR".to_owned(),
    ]];
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    for a in attempts {
        rows.push([
            a.attempt_no.to_string(),
            time(a.attempted_at),
            a.outcome.as_str().to_owned(),
            a.status_code.map_or("-".to_owned(), |s| s.to_string()),
            format!("{}ms", a.latency_ms),
            a.next_attempt_at.map_or("-".to_owned(), time),
            a.error.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if attempts.is_empty() {
        out.push_str("(no attempts yet)\n");
    }
    out
}
