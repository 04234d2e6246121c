//! Test and demo harness for `webhooks-dispatch`.
//!
//! * [`pg`] starts throwaway PostgreSQL servers (one shared per test process,
//!   or owned clusters for demos and benchmarks) and hands out fresh databases.
//! * [`receiver`] runs real HTTPS webhook receivers on loopback, with
//!   certificates from a throwaway CA, scriptable replies and request capture.
//!
//! Everything here is meant for tests: helpers panic with descriptive
//! messages instead of returning errors where a failure means the test
//! environment is broken.

#![warn(missing_docs)]

pub mod pg;
pub mod proxy;
pub mod receiver;
pub mod secret_forms;

pub use pg::{fresh_database, require_loopback, shared_server, ClusterOptions, PgCluster, PgServer};
pub use proxy::TcpProxy;
pub use receiver::{ClosedPort, Received, Receiver, ReceiverOptions, Reply, TestCa};
pub use secret_forms::{PasswordForms, SecretForms};
