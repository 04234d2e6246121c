//! Throwaway PostgreSQL servers for tests, demos and benchmarks.
//!
//! Each cluster lives in a fresh temporary directory and is owned by a tiny
//! `sh` supervisor whose stdin is a pipe whose write end only this process
//! holds. When that write end closes — on [`PgCluster`]'s `Drop`, on normal
//! exit, or because the process was killed, even with `SIGKILL` — the
//! supervisor's `read` sees end-of-file, fast-shuts-down postgres and deletes
//! the directory. That is what cleans up after the process-wide
//! [`shared_server`], which lives in a static that is never dropped.
//!
//! Servers listen on 127.0.0.1 only (plus a Unix socket inside their
//! directory) and trust every connection; the superuser is `postgres`. A
//! `DATABASE_URL` server must be on this machine too ([`require_loopback`]).

mod database_url;

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use self::database_url::redacted;
pub use self::database_url::require_loopback;

/// How long a starting server may take to answer a query before we give up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Startup attempts, each on a new port and directory: the port is found by
/// binding port 0 and releasing it, so another process can grab it before
/// postgres binds it.
const START_ATTEMPTS: usize = 3;

/// The supervisor, run as the server's OS user.
///
/// Arguments: `$1` directory, `$2` port, `$3` postgres binary, then extra
/// server arguments. It prints postgres' pid (so the parent can tell a
/// crashed startup from a slow one), then reads stdin until end-of-file.
/// Terminal signals are ignored so that a Ctrl-C reaching its process group
/// cannot skip the cleanup; postgres installs its own handlers, so it is
/// unaffected by the inherited dispositions.
const SUPERVISOR: &str = r#"
dir=$1 port=$2 bin=$3
shift 3
trap '' HUP INT TERM
"$bin" -D "$dir/data" -k "$dir" -h 127.0.0.1 -p "$port" "$@" </dev/null >"$dir/postgres.log" 2>&1 &
pid=$!
echo "$pid"
while read -r line; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

/// Settings for a [`PgCluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `false` sets `fsync`, `synchronous_commit` and `full_page_writes` to
    /// off: a crash loses data, which tests do not care about, and commits
    /// become far cheaper. `true` keeps the server defaults so benchmarks
    /// measure realistic commit costs.
    pub durable: bool,
    /// `max_connections`. The default of 300 leaves room for many concurrent
    /// pools in one test process.
    pub max_connections: u32,
    /// Further server settings (`-c name=value`), applied last so they can
    /// override the ones above.
    pub extra_settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            durable: false,
            max_connections: 300,
            extra_settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    fn server_args(&self) -> Vec<String> {
        let mut settings = vec![("max_connections".to_owned(), self.max_connections.to_string())];
        if !self.durable {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.push((name.to_owned(), "off".to_owned()));
            }
        }
        settings.extend(self.extra_settings.iter().cloned());
        settings
            .into_iter()
            .flat_map(|(name, value)| ["-c".to_owned(), format!("{name}={value}")])
            .collect()
    }
}

/// A PostgreSQL cluster owned by the caller, for demos and benchmarks.
///
/// Dropping it stops the server (fast shutdown) and removes its directory,
/// blocking until both are done. If the process dies first, the supervisor
/// does the same on its own.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    supervisor: Child,
}

impl PgCluster {
    /// Creates, starts and waits for a new cluster (typically 1–3 s).
    ///
    /// Synchronous and blocking so it works from any context: the readiness
    /// probe runs its own tokio runtime on a separate thread, which is safe
    /// even when called from inside another runtime. When running as root the
    /// server runs as the `postgres` OS user, because `initdb` refuses root.
    /// Errors carry `initdb`'s output or the server log.
    pub fn start(opts: ClusterOptions) -> io::Result<PgCluster> {
        let owner = server_owner()?;
        let args = opts.server_args();
        let mut attempt = 1;
        loop {
            // Deterministic failures (initdb) are not retried; startup ones are.
            let dir = init_dir(owner)?;
            match launch(dir, owner, &args) {
                Err(_) if attempt < START_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    /// Superuser URL of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temporary directory (data directory, socket and log
    /// live inside); it no longer exists once the cluster is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> String {
        let path = self.dir.join("postgres.log");
        match fs::read_to_string(&path) {
            Ok(log) => format!("--- {} ---\n{log}", path.display()),
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing our end of the pipe is the stop signal; waiting makes the
        // port and directory be gone when drop returns.
        drop(self.supervisor.stdin.take());
        let _ = self.supervisor.wait();
    }
}

/// The process-wide server behind [`fresh_database`].
#[derive(Debug)]
pub struct PgServer {
    admin_url: String,
    cluster: Option<PgCluster>,
}

impl PgServer {
    /// URL of a connection allowed to run `CREATE DATABASE`: either
    /// `DATABASE_URL` or the superuser on the started cluster's `postgres`
    /// database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Port of the cluster this process started; `None` when `DATABASE_URL`
    /// points at an external server.
    pub fn port(&self) -> Option<u16> {
        self.cluster.as_ref().map(PgCluster::port)
    }
}

/// The shared server for this process, started lazily on first use.
///
/// If `DATABASE_URL` is set, no cluster is started and that server is used;
/// it must be on this machine (see [`require_loopback`]), because every
/// test's traffic goes there and no test may send anything beyond loopback.
/// Synchronous and blocking: concurrent callers all wait for the same start.
/// From async code prefer [`fresh_database`], which calls this on tokio's
/// blocking pool.
///
/// # Panics
///
/// If `DATABASE_URL` is not on loopback (the message names the variable, the
/// URL without its password and what is allowed), or if the server cannot be
/// started (the message includes the server log). The failure is remembered
/// so later callers fail at once instead of retrying.
pub fn shared_server() -> &'static PgServer {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            require_loopback(&url).map_err(|e| {
                format!("DATABASE_URL refused: {e}. Unset it to let the tests start a throwaway server.")
            })?;
            return Ok(PgServer {
                admin_url: url,
                cluster: None,
            });
        }
        let cluster = PgCluster::start(ClusterOptions::default())
            .map_err(|e| format!("cannot start a throwaway PostgreSQL server: {e}"))?;
        Ok(PgServer {
            admin_url: cluster.admin_url(),
            cluster: Some(cluster),
        })
    });
    match server {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// Connection URL of a fresh, empty database for one test, e.g.
/// `postgres://postgres@127.0.0.1:PORT/wdt_<pid>_<n>`.
///
/// The database is created on [`shared_server`]. Nothing drops it: with the
/// built-in server it disappears with the cluster; on a `DATABASE_URL` server
/// it stays behind. Opens a short-lived admin connection per call because each
/// `#[tokio::test]` has its own runtime, and a client kept in a static would be
/// tied to the runtime that created it.
///
/// # Panics
///
/// If the server cannot be started or the database cannot be created.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = tokio::task::spawn_blocking(shared_server)
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("starting PostgreSQL was cancelled: {e}"),
        });
    let admin = server.admin_url();
    let shown = redacted(admin);
    // The admin URL names the `postgres` database, never template1: CREATE
    // DATABASE fails while anyone is connected to its template.
    let (client, connection) = tokio_postgres::connect(admin, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {shown} to create a test database: {e}"));
    let driver = tokio::spawn(connection);
    let name = loop {
        let name = format!(
            "wdt_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
            Ok(()) => break name,
            // Left behind on a DATABASE_URL server by an earlier process that had our pid.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => continue,
            Err(e) => panic!("cannot create database {name} on {shown}: {e}"),
        }
    };
    drop(client);
    let _ = driver.await;
    with_database(admin, &name)
}

/// `url` with its path replaced by `/name`.
fn with_database(url: &str, name: &str) -> String {
    let mut url =
        url::Url::parse(url).unwrap_or_else(|e| panic!("{} is not a postgres:// URL: {e}", redacted(url)));
    url.set_path(&format!("/{name}"));
    url.into()
}

/// The OS user the server runs as: `None` means the current user.
#[derive(Clone, Copy, Debug)]
struct Owner {
    uid: u32,
    gid: u32,
}

fn server_owner() -> io::Result<Option<Owner>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: passwd is plain old data; zeroed is a valid initial value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found = std::ptr::null_mut();
    // The reentrant variant: tests call this from many threads at once, and
    // getpwnam returns a pointer into shared static storage.
    // SAFETY: every pointer is valid for the duration of the call, and `buf`
    // outlives our reads of `pwd`'s numeric fields.
    let rc = unsafe {
        libc::getpwnam_r(
            c"postgres".as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(io::Error::other(
            "running as root, and initdb refuses root, but there is no `postgres` OS user to run it as",
        ));
    }
    Ok(Some(Owner {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

fn run_as(cmd: &mut Command, owner: Option<Owner>) -> &mut Command {
    // When root, std also clears supplementary groups before switching uid.
    if let Some(owner) = owner {
        cmd.uid(owner.uid).gid(owner.gid);
    }
    cmd
}

/// Path of a PostgreSQL server program: from `pg_config --bindir`, then the
/// newest Debian-style `/usr/lib/postgresql/*/bin` (not on PATH there), then
/// a bare name resolved through PATH.
fn pg_bin(name: &str) -> PathBuf {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let dirs = DIRS.get_or_init(|| {
        let mut dirs = Vec::new();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            let mut versioned: Vec<(u32, PathBuf)> = entries
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let version = entry.file_name().to_str()?.parse().ok()?;
                    Some((version, entry.path().join("bin")))
                })
                .collect();
            versioned.sort();
            dirs.extend(versioned.into_iter().rev().map(|(_, dir)| dir));
        }
        dirs
    });
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A new temporary directory with an initialised cluster in `data/`.
fn init_dir(owner: Option<Owner>) -> io::Result<PathBuf> {
    let tmp = tempfile::Builder::new().prefix("wdt-pg-").tempdir()?;
    if let Some(owner) = owner {
        // The server user must own the directory: it creates data/, the
        // socket and the log there, and the supervisor removes it.
        std::os::unix::fs::chown(tmp.path(), Some(owner.uid), Some(owner.gid))?;
    }
    let initdb = pg_bin("initdb");
    let out = run_as(&mut Command::new(&initdb), owner)
        .arg("-D")
        .arg(tmp.path().join("data"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        // A cwd the server user can enter; root's may not be.
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", initdb.display())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed ({}):\n{}{}",
            initdb.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // From here on the supervisor (or launch's error path) removes it.
    Ok(tmp.keep())
}

/// Starts the supervisor for an initialised `dir` and waits for readiness.
fn launch(dir: PathBuf, owner: Option<Owner>, args: &[String]) -> io::Result<PgCluster> {
    let port = match free_port() {
        Ok(port) => port,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let spawned = run_as(&mut Command::new("/bin/sh"), owner)
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("wdt-pg-supervisor")
        .arg(&dir)
        .arg(port.to_string())
        .arg(pg_bin("postgres"))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Keeps terminal-generated signals for the test process away from it.
        .process_group(0)
        .spawn();
    let supervisor = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    // From here on, dropping `cluster` stops the server and removes `dir`.
    let mut cluster = PgCluster {
        dir,
        port,
        supervisor,
    };
    let pid = read_pid(&mut cluster.supervisor)?;
    let data = cluster.dir.join("data");
    let url = cluster.admin_url();
    // A separate thread, because block_on panics inside a caller's runtime.
    let ready = std::thread::scope(|s| {
        s.spawn(|| probe_until_ready(&url, &data, pid))
            .join()
            .unwrap_or_else(|_| Err("readiness probe panicked".to_owned()))
    });
    match ready {
        Ok(()) => Ok(cluster),
        Err(e) => Err(io::Error::other(format!("{e}\n{}", cluster.log()))),
    }
}

fn read_pid(supervisor: &mut Child) -> io::Result<i32> {
    let stdout = supervisor.stdout.take().expect("supervisor stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("supervisor printed {line:?} instead of a pid")))
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn probe_until_ready(url: &str, data: &Path, pid: i32) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime for the readiness probe: {e}"))?;
    runtime.block_on(async {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let err = match probe(url, data).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !process_alive(pid) {
                return Err(format!("postgres exited during startup (last probe: {err})"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postgres not ready after {READY_TIMEOUT:?} (last probe: {err})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Connects over TCP and runs a real query; checking `data_directory` also
/// catches a different server that grabbed our port first.
async fn probe(url: &str, data: &Path) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let row = client.query_one("SHOW data_directory", &[]).await;
    drop(client);
    let _ = driver.await;
    let reported: String = row.map_err(|e| e.to_string())?.get(0);
    if Path::new(&reported) != data {
        return Err(format!(
            "port answered by another server (data_directory {reported})"
        ));
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // The supervisor reaps postgres only after its stdin closes, so a crashed
    // postgres lingers as a zombie, which kill(pid, 0) would call alive.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        // SAFETY: signal 0 only checks for existence and permission.
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}
