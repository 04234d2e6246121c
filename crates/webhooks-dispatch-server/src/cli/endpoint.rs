//! `endpoint …`: register, list, show, update, disable, enable and delete endpoints, and manage their
//! signing keys (rotate, expire the previous ones, list).

use std::time::Duration;

use clap::{Args, Subcommand};
use webhooks_dispatch::signing::SignatureScheme;
use webhooks_dispatch::{
    CustomHeaders, Endpoint, EndpointKey, EndpointStatus, ListEndpoints, NewEndpoint, RotateSecret,
    UpdateEndpoint,
};

use super::client;
use crate::config::{parse_duration_or_zero, Config};
use crate::server::ServiceDispatcher as Client;
use crate::Error;

/// The notice beside every secret printed: it cannot be read back later.
const SHOWN_ONCE: &str =
    "The secret is shown only this once: store it now and give it to the endpoint's owner.";

/// `endpoint …`.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Register an endpoint; prints its id, its key id and its signing secret (shown this once) — or, for
    /// ed25519, its public key.
    #[command(visible_alias = "create")]
    Add {
        /// Your customer's id.
        #[arg(long)]
        owner: String,
        /// https:// URL to deliver to.
        #[arg(long)]
        url: String,
        /// Deliver only this event type (repeatable; none: all types).
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        /// How deliveries are signed: hmac-sha256 (a shared whsec_ secret) or ed25519 (receivers verify with
        /// a public key).
        #[arg(long, default_value = "hmac-sha256", value_parser = scheme)]
        signature: SignatureScheme,
    },
    /// List endpoints in registration order, one per line (id, owner, status, URL); the cursor of the next
    /// page, if any, goes to standard error.
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Only disabled (or active) endpoints.
        #[arg(long, value_parser = ["active", "disabled"])]
        status: Option<String>,
        /// At most this many (1..=250).
        #[arg(long, default_value_t = webhooks_dispatch::DEFAULT_LIST_LIMIT)]
        limit: u32,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show an endpoint (never its secret).
    Show {
        /// The ep_… id.
        endpoint_id: String,
    },
    /// Disable an endpoint: new messages to it are refused, events skip it, its pending messages wait.
    Disable {
        /// The ep_… id.
        endpoint_id: String,
    },
    /// Enable an endpoint again: its waiting messages are due at once.
    Enable {
        /// The ep_… id.
        endpoint_id: String,
    },
    /// Change an endpoint: only what is given changes. A new URL is checked like a registration's.
    Update(UpdateArgs),
    /// Delete an endpoint: it becomes unknown, its pending messages end (dead, endpoint_deleted), its history
    /// stays readable.
    Delete {
        /// The ep_… id.
        endpoint_id: String,
    },
    /// Give an endpoint a new signing key; the previous keys keep signing beside it for the grace period.
    /// Prints the new secret (shown this once) or, for ed25519, the public key.
    RotateSecret {
        /// The ep_… id.
        endpoint_id: String,
        /// How long the previous keys keep signing, e.g. 24h, 7d (the most), or 0s to end them now
        /// [default: 24h].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_zero)]
        grace: Option<Duration>,
        /// Scheme of the new key [default: the endpoint's current one].
        #[arg(long, value_parser = scheme)]
        signature: Option<SignatureScheme>,
    },
    /// End the previous keys' grace period now (after a leak): only the current key signs from now on.
    ExpirePreviousSecrets {
        /// The ep_… id.
        endpoint_id: String,
    },
    /// List an endpoint's unexpired keys, current first: id, algorithm, not before, not after, public key.
    Keys {
        /// The ep_… id.
        endpoint_id: String,
    },
}

fn scheme(name: &str) -> Result<SignatureScheme, String> {
    SignatureScheme::parse(name).ok_or_else(|| "expected hmac-sha256 or ed25519".to_owned())
}

/// `endpoint update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The ep_… id.
    endpoint_id: String,
    /// A new https:// URL.
    #[arg(long)]
    url: Option<String>,
    /// Deliver only these event types from now on (repeatable).
    #[arg(long = "event-type", value_name = "TYPE", conflicts_with = "all_event_types")]
    event_types: Vec<String>,
    /// Deliver every event type from now on.
    #[arg(long)]
    all_event_types: bool,
    /// A new description.
    #[arg(long)]
    description: Option<String>,
    /// Replace the metadata with these pairs (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = pair)]
    metadata: Vec<(String, String)>,
    /// Replace the custom headers with these (repeatable). A value given on a command line may be visible to
    /// other local users in the process list; prefer the API for credentials.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = pair, conflicts_with = "clear_headers")]
    headers: Vec<(String, String)>,
    /// Remove every custom header.
    #[arg(long)]
    clear_headers: bool,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

impl UpdateArgs {
    fn into_update(self) -> (String, UpdateEndpoint) {
        let event_types = match (self.all_event_types, self.event_types.is_empty()) {
            (true, _) => Some(Vec::new()),
            (false, false) => Some(self.event_types),
            (false, true) => None,
        };
        let headers = (self.clear_headers || !self.headers.is_empty()).then(|| {
            self.headers
                .into_iter()
                .fold(CustomHeaders::new(), |h, (k, v)| h.with(k, v))
        });
        let update = UpdateEndpoint {
            url: self.url,
            event_types,
            description: self.description,
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.into_iter().collect()),
            headers,
        };
        (self.endpoint_id, update)
    }
}

pub(super) async fn endpoint_command(command: EndpointCommand, config: &Config) -> Result<(), Error> {
    let d = client(config).await?;
    match command {
        EndpointCommand::Add {
            owner,
            url,
            event_types,
            signature,
        } => {
            let mut input = NewEndpoint::new(owner, url).signature(signature);
            if !event_types.is_empty() {
                input = input.event_types(event_types);
            }
            let ep = d.register_endpoint(input).await?;
            println!("id: {}", ep.id);
            print_new_key(&ep.key, ep.secret.as_ref().map(|s| s.expose()));
        }
        EndpointCommand::List {
            owner,
            status,
            limit,
            cursor,
        } => {
            // clap admits only the two names.
            let status = status.as_deref().and_then(EndpointStatus::parse);
            let filter = ListEndpoints {
                owner_id: owner,
                status,
                limit: Some(limit),
                cursor,
            };
            let page = d.list_endpoints(filter).await?;
            for ep in &page.data {
                println!("{}  {}  {}  {}", ep.id, ep.owner_id, ep.status.as_str(), ep.url);
            }
            if let Some(next) = page.next_cursor {
                eprintln!("more: --cursor {next}");
            }
        }
        EndpointCommand::Show { endpoint_id } => print_endpoint(&d.endpoint(&endpoint_id).await?),
        EndpointCommand::Disable { endpoint_id } => print_endpoint(&d.disable_endpoint(&endpoint_id).await?),
        EndpointCommand::Enable { endpoint_id } => print_endpoint(&d.enable_endpoint(&endpoint_id).await?),
        EndpointCommand::Update(args) => {
            let (id, update) = args.into_update();
            print_endpoint(&d.update_endpoint(&id, update).await?);
        }
        EndpointCommand::Delete { endpoint_id } => {
            let deleted = d.delete_endpoint(&endpoint_id).await?;
            println!("deleted: {}", deleted.id);
            println!("pending messages ended: {}", deleted.messages_ended);
        }
        EndpointCommand::RotateSecret {
            endpoint_id,
            grace,
            signature,
        } => {
            let input = RotateSecret {
                new: None,
                signature,
                grace,
            };
            let rotated = d.rotate_secret(&endpoint_id, input).await?;
            print_new_key(&rotated.key, rotated.secret.as_ref().map(|s| s.expose()));
        }
        EndpointCommand::ExpirePreviousSecrets { endpoint_id } => {
            println!("expired: {}", d.expire_previous_secrets(&endpoint_id).await?);
        }
        EndpointCommand::Keys { endpoint_id } => print_keys(&d, &endpoint_id).await?,
    }
    Ok(())
}

/// A key just made: its id, then its secret (with the shown-once notice) or its public key.
fn print_new_key(key: &EndpointKey, secret: Option<&str>) {
    println!("key: {}", key.id);
    println!("algorithm: {}", key.algorithm.as_str());
    if let Some(secret) = secret {
        println!("secret: {secret}");
        eprintln!("{SHOWN_ONCE}");
    }
    if let Some(public_key) = &key.public_key {
        println!("public key: {public_key}");
        eprintln!("Receivers verify with the public key; it is also in the owner's key set.");
    }
}

async fn print_keys(d: &Client, endpoint_id: &str) -> Result<(), Error> {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for key in d.endpoint_keys(endpoint_id).await? {
        println!(
            "{}  {}  {}  {}  {}",
            key.id,
            key.algorithm.as_str(),
            time(key.not_before),
            key.not_after.map_or_else(|| "-".to_owned(), time),
            key.public_key.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn print_endpoint(ep: &Endpoint) {
    println!("id: {}", ep.id);
    println!("owner: {}", ep.owner_id);
    println!("url: {}", ep.url);
    let types = if ep.event_types.is_empty() {
        "(all)".to_owned()
    } else {
        ep.event_types.join(", ")
    };
    println!("event types: {types}");
    println!("created: {}", ep.created_at.to_rfc3339());
    if !ep.description.is_empty() {
        println!("description: {}", ep.description);
    }
    for (key, value) in &ep.metadata {
        println!("metadata: {key}={value}");
    }
    if !ep.header_names.is_empty() {
        println!("custom headers: {} (values hidden)", ep.header_names.join(", "));
    }
    match (ep.status, ep.disabled_reason, ep.disabled_at) {
        (EndpointStatus::Active, ..) => println!("status: active"),
        (_, reason, at) => println!(
            "status: disabled ({}) since {}",
            reason.map_or("unknown", |r| r.as_str()),
            at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
        ),
    }
}
