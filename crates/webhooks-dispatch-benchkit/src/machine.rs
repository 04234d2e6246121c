//! What the numbers were measured on, and the process's peak memory. Read from /proc, so Linux only; a
//! missing file yields "unknown" rather than failing the run.

use serde::Serialize;
use sqlx::Row as _;

use crate::env::{Env, Result};

/// The machine and server a run was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, in GiB.
    pub memory_gib: f64,
    /// /proc/loadavg when the run started: the machine is shared, so this says how quiet it was.
    pub load_average_at_start: String,
    /// Kernel release.
    pub kernel: String,
    /// `SELECT version()`.
    pub postgres_version: String,
    /// Durability-relevant server settings as the benchmark's connections see them.
    pub postgres_settings: String,
    /// Whether the server is a throwaway cluster started by this run (else `DATABASE_URL`).
    pub own_cluster: bool,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
}

impl Machine {
    /// Collects the description; the server facts come over a short admin connection.
    pub async fn describe(env: &Env) -> Result<Machine> {
        let mut conn = env.admin_connection().await?;
        let version: String = sqlx::query("SELECT version()")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        let mut settings = Vec::new();
        for name in [
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
        ] {
            let row = sqlx::query("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
            settings.push(format!("{name}={}", row.try_get::<String, _>(0)?));
        }
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok(Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            load_average_at_start: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            postgres_version: version,
            postgres_settings: settings.join(", "),
            own_cluster: env.owns_cluster(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
