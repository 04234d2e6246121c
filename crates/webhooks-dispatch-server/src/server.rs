//! Running the service: [`run`] (HTTP API plus worker), [`run_worker`] (worker only), [`migrate`], and the
//! wiring they share — configuration to [`Dispatcher`], database to [`Worker`], signals to shutdown.
//!
//! Like mini-redis's `server::run`, [`run`] takes an already bound listener and a shutdown future, so tests
//! bind port 0 and stop the service whenever they like.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use webhooks_dispatch::keyring::SecretCipher;
use webhooks_dispatch::rustls::pki_types::pem::PemObject;
use webhooks_dispatch::rustls::pki_types::CertificateDer;
use webhooks_dispatch::rustls::RootCertStore;
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{Dispatcher, Observer, OnGone, Worker, WorkerReport};

use crate::api::{self, AppState};
use crate::auth::Keys;
use crate::config::{Config, GoneSetting};
use crate::database::{self, Database};
use crate::listen;
use crate::metrics::Metrics;
use crate::operational::{self, Inbox, Observers};
use crate::Error;

/// The library's dispatcher over the service's pool.
pub type ServiceDispatcher = Dispatcher<Arc<dyn Executor>>;

/// Serves the HTTP API on `listener` and, unless `config.worker` is false, runs the delivery worker in the
/// same process, until `shutdown` completes. Then it stops accepting connections, lets in-flight requests
/// finish, lets the worker finish or release its in-flight deliveries, and returns.
///
/// Creates the tables first if needed (the migration is idempotent and safe to run concurrently), then seals
/// in the background every endpoint key not yet sealed under the current master key ([`spawn_rekey`]).
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.check_serve()?;
    // Before the database: a missing or unreadable key ring is a configuration error, reported as one.
    config.load_key_ring()?;
    let db = database::open(&config.database_url, config.database_max_connections).await?;
    let metrics = Arc::new(Metrics::with_backlog_refresh(config.metrics_refresh));
    // The API and the worker share this dispatcher: one configuration, one observer, and (on SQLite) the
    // in-memory wake-up from a dispatch to the worker.
    let (observer, inbox) = observer(&config, Some(metrics.clone()));
    let dispatcher = dispatcher(&config, db.executor.clone(), observer)?;
    dispatcher.migrate().await?;
    let rekey = spawn_rekey(dispatcher.clone());
    let operational = inbox.map(|inbox| inbox.spawn(dispatcher.clone()));

    // One shutdown request fans out to the HTTP server and the worker.
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = if config.worker {
        let worker = worker(&config, &db, dispatcher.clone()).await;
        Some(tokio::spawn(worker.run(stopped(stop_rx.clone()))))
    } else {
        None
    };

    let keys = if config.insecure_no_auth {
        tracing::warn!("serving /v1 WITHOUT authentication (--insecure-no-auth)");
        None
    } else {
        Some(Keys::new(&config.api_keys))
    };
    let shed = metrics.connections_shed();
    let state = Arc::new(AppState {
        dispatcher,
        database: db,
        metrics,
    });
    let app = api::router(state, keys, config.body_limit, config.metrics_require_key);
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listen address", e))?;
    tracing::info!(%addr, worker = config.worker, "listening");

    let trigger = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: no new connections; finishing in-flight work");
            let _ = stop_tx.send(true);
        })
    };
    listen::serve(
        listener,
        app,
        config.server_limits,
        shed,
        stopped(stop_rx),
        config.shutdown_grace,
    )
    .await;
    // Whatever ended the HTTP server also ends the worker.
    let _ = stop_tx.send(true);
    trigger.abort();
    if let Some(worker) = worker {
        finish_worker(worker.await);
    }
    // Interrupting it is safe: it is resumable, and the next start carries on where it stopped.
    rekey.abort();
    // Last, so the events of the final deliveries and requests are still dispatched.
    if let Some(operational) = operational {
        operational.shutdown(config.shutdown_grace).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs only the delivery worker until `shutdown` completes (the `worker` command).
pub async fn run_worker(mut config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
    config.load_key_ring()?;
    let db = database::open(&config.database_url, config.database_max_connections).await?;
    // A worker alone still sees dead messages and automatic disabling, so it forwards them too.
    let (observer, inbox) = observer(&config, None);
    let dispatcher = dispatcher(&config, db.executor.clone(), observer)?;
    dispatcher.migrate().await?;
    let rekey = spawn_rekey(dispatcher.clone());
    let operational = inbox.map(|inbox| inbox.spawn(dispatcher.clone()));
    let worker = worker(&config, &db, dispatcher).await;
    tracing::info!("worker started");
    finish_worker(Ok::<_, std::convert::Infallible>(worker.run(shutdown).await));
    rekey.abort();
    if let Some(operational) = operational {
        operational.shutdown(config.shutdown_grace).await;
    }
    Ok(())
}

/// Creates the tables if needed (the `migrate` command).
pub async fn migrate(config: &Config) -> Result<(), Error> {
    let config = with_key_ring(config)?;
    let db = database::open(&config.database_url, 1).await?;
    dispatcher(&config, db.executor, None)?.migrate().await?;
    Ok(())
}

/// `config` with its key ring read, before any database is opened: a missing or unreadable ring is a
/// configuration error and should be reported as one, not hidden behind an unreachable database.
pub(crate) fn with_key_ring(config: &Config) -> Result<Config, Error> {
    let mut config = config.clone();
    config.load_key_ring()?;
    Ok(config)
}

/// Seals, in a background task, every endpoint key not sealed under the current master key: plaintext rows
/// of databases from before encryption at rest, and rows of a master key since moved out of first place.
/// In the background because it reads every key, and readiness must not wait on that; every process may run
/// it at once (each row is replaced only if it still holds what was read). Logs counts, never a key.
pub fn spawn_rekey(dispatcher: ServiceDispatcher) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match dispatcher.rekey(None).await {
            Ok(report) if report.unopened > 0 => tracing::error!(
                examined = report.examined,
                resealed = report.resealed,
                unopened = report.unopened,
                "some endpoint keys did not open: they are sealed under a master key missing from the key \
                 ring, and deliveries to their endpoints fail until it is restored"
            ),
            Ok(report) => tracing::info!(
                examined = report.examined,
                resealed = report.resealed,
                raced = report.raced,
                "endpoint keys sealed under the current master key"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "sealing endpoint keys under the current master key failed; keys sealed under a master key \
                 missing from the key ring cannot sign, so deliveries to their endpoints fail until it is \
                 restored"
            ),
        }
    })
}

/// The service's observer — `metrics`, the operational forwarder when `operational_owner` is set, or both
/// — and the forwarder's inbox, to spawn once the dispatcher it needs exists.
fn observer(config: &Config, metrics: Option<Arc<Metrics>>) -> (Option<Arc<dyn Observer>>, Option<Inbox>) {
    let Some(owner) = &config.operational_owner else {
        return (metrics.map(|m| m as Arc<dyn Observer>), None);
    };
    // Without metrics (a worker process) drops are still counted, for the warning's running total.
    let dropped = metrics
        .as_ref()
        .map(|m| m.operational_dropped())
        .unwrap_or_default();
    let (forwarder, inbox) = operational::channel(owner, dropped);
    let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
    if let Some(metrics) = metrics {
        observers.push(metrics);
    }
    observers.push(Arc::new(forwarder));
    (Some(Arc::new(Observers(observers))), Some(inbox))
}

/// A dispatcher configured from the settings: timeouts, concurrency, the SSRF allowlist, trusted CAs and the
/// key ring that seals endpoint secrets ([`Config::key_ring`]); `observer`, when given, hears of its
/// dispatches, attempts and lifecycle changes.
pub fn dispatcher(
    config: &Config,
    executor: Arc<dyn Executor>,
    observer: Option<Arc<dyn Observer>>,
) -> Result<ServiceDispatcher, Error> {
    // The API's dispatches share the pool and never run in a caller's transaction: group commit applies.
    let mut builder = Dispatcher::builder(executor)
        .secret_cipher(config.key_ring()? as Arc<dyn SecretCipher>)
        .coalesce_dispatches()
        .attempt_timeout(config.attempt_timeout)
        .concurrency(config.concurrency)
        .per_endpoint_concurrency(config.per_endpoint_concurrency)
        .disable_failing_after(config.disable_failing_after)
        .on_gone(match config.on_gone {
            GoneSetting::Disable => OnGone::Disable,
            GoneSetting::Dead => OnGone::Dead,
        });
    builder = config.fairness.apply(builder);
    for net in &config.allow_net {
        builder = builder.allow_net(*net);
    }
    if let Some(resolver) = &config.resolver {
        builder = builder.resolver(resolver.0.clone());
    }
    if let Some(path) = &config.ca_file {
        builder = builder.root_certificates(roots_with(path)?);
    }
    if let Some(observer) = observer {
        builder = builder.observer(observer);
    }
    Ok(builder.build())
}

/// The public (Mozilla) roots plus every certificate in a PEM file.
fn roots_with(path: &Path) -> Result<RootCertStore, Error> {
    let bad = |why: String| Error::Config(format!("ca_file: {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not valid PEM ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("contains no CERTIFICATE block".to_owned()));
    }
    Ok(roots)
}

async fn worker(config: &Config, db: &Database, dispatcher: ServiceDispatcher) -> Worker<Arc<dyn Executor>> {
    let mut worker = Worker::new(dispatcher)
        .poll_interval(config.poll_interval)
        .lease(config.lease)
        .shutdown_grace(config.shutdown_grace);
    if let Some(connect) = &db.listener {
        match connect().await {
            Ok(listener) => worker = worker.listener(listener),
            // Not fatal: the worker still finds every message by polling, only later.
            Err(e) => tracing::warn!(error = %e, "no LISTEN connection; the worker will poll"),
        }
    }
    worker
}

fn finish_worker<J: std::fmt::Display>(
    joined: Result<Result<WorkerReport, webhooks_dispatch::DispatchError>, J>,
) {
    match joined {
        Ok(Ok(report)) => tracing::info!(
            attempted = report.deliveries.attempted,
            delivered = report.deliveries.delivered,
            retried = report.deliveries.retried,
            dead = report.deliveries.dead,
            released = report.released,
            "worker stopped"
        ),
        // The claims it could not release come back by themselves when their lease expires.
        Ok(Err(e)) => tracing::error!(error = %e, "worker could not release its claims at shutdown"),
        Err(e) => tracing::error!(error = %e, "worker task failed"),
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
