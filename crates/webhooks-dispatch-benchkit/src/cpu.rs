//! Where the CPU went during a measurement: this process (workers, receivers, clients), our PostgreSQL
//! server, and everything else on the machine. The machine is shared and has two cores, so this is what tells
//! a reader whether a figure was bounded by our own work, by the database, or by a neighbour — and it is what
//! the "what bounds throughput" question is answered from. Linux /proc only; elsewhere every figure is zero.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// CPU counters at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    machine_busy: u64,
    bench: u64,
    postgres: Option<u64>,
}

/// Average cores used over an interval, by whom.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    /// This process.
    pub bench: f64,
    /// Our PostgreSQL server (postmaster, its live children, and the children it reaped); `None` with an
    /// external `DATABASE_URL` server.
    pub postgres: Option<f64>,
    /// The rest of the machine: other users of this shared machine (and, with an external server, PostgreSQL).
    pub others: f64,
    /// Cores on the machine.
    pub cores: usize,
}

impl Usage {
    /// One line for a figure's note.
    pub fn describe(&self) -> String {
        match self.postgres {
            Some(pg) => format!(
                "CPU cores used: bench process {:.2}, postgres {:.2}, others {:.2} (of {})",
                self.bench, pg, self.others, self.cores
            ),
            None => format!(
                "CPU cores used: bench process {:.2}, rest of machine {:.2} (of {})",
                self.bench, self.others, self.cores
            ),
        }
    }
}

/// Finds and reads our server's processes; `cluster_dir` is the throwaway cluster's directory, if we own one.
#[derive(Clone, Debug)]
pub struct Meter {
    postmaster: Option<u32>,
}

impl Meter {
    /// Locates the postmaster of the cluster in `cluster_dir` by its `-D <dir>/data` argument.
    pub fn new(cluster_dir: Option<&Path>) -> Meter {
        let postmaster = cluster_dir.and_then(|dir| find_postmaster(&dir.join("data")));
        Meter { postmaster }
    }

    /// Reads all counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            machine_busy: machine_busy(),
            bench: stat("/proc/self/stat").map_or(0, |s| s.own),
            postgres: self.postmaster.map(postgres_total),
        }
    }

    /// Average usage from `start` until now.
    pub fn since(&self, start: &Snapshot) -> Usage {
        let end = self.snapshot();
        let secs = end.at.duration_since(start.at).as_secs_f64();
        let hz = clock_ticks() as f64;
        if secs <= 0.0 || hz <= 0.0 {
            return Usage::default();
        }
        let cores = |ticks: u64| ticks as f64 / hz / secs;
        let machine = cores(end.machine_busy.saturating_sub(start.machine_busy));
        let bench = cores(end.bench.saturating_sub(start.bench));
        let postgres = match (start.postgres, end.postgres) {
            (Some(a), Some(b)) => Some(cores(b.saturating_sub(a))),
            _ => None,
        };
        Usage {
            bench,
            postgres,
            others: (machine - bench - postgres.unwrap_or(0.0)).max(0.0),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

/// The CPU time of some of this process's threads, picked by name: the HTTP scenario's load generator runs
/// on a runtime of its own with named threads, so its share can be told apart from the service's.
#[derive(Clone, Debug)]
pub struct ThreadGroup {
    name: String,
}

/// A thread group's CPU counter at one instant.
#[derive(Clone, Copy, Debug)]
pub struct ThreadSnapshot {
    at: Instant,
    ticks: u64,
}

impl ThreadGroup {
    /// Threads whose name (`/proc/self/task/*/comm`, at most 15 bytes) is exactly `name`.
    pub fn new(name: &str) -> ThreadGroup {
        ThreadGroup {
            name: name.to_owned(),
        }
    }

    /// Reads the group's counter now. Only threads alive now count, so take both snapshots while the group's
    /// threads run.
    pub fn snapshot(&self) -> ThreadSnapshot {
        let mut ticks = 0;
        for tid in tasks() {
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            if comm.trim_end() == self.name {
                ticks += stat(&format!("/proc/self/task/{tid}/stat")).map_or(0, |s| s.own);
            }
        }
        ThreadSnapshot {
            at: Instant::now(),
            ticks,
        }
    }

    /// Average cores the group used from `start` until now.
    pub fn cores_since(&self, start: &ThreadSnapshot) -> f64 {
        let end = self.snapshot();
        let secs = end.at.duration_since(start.at).as_secs_f64();
        let hz = clock_ticks() as f64;
        if secs <= 0.0 || hz <= 0.0 {
            return 0.0;
        }
        end.ticks.saturating_sub(start.ticks) as f64 / hz / secs
    }
}

fn tasks() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// USER_HZ, the unit of /proc's CPU times.
fn clock_ticks() -> i64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz
    } else {
        100
    }
}

/// Busy ticks of all CPUs since boot: everything but idle and iowait.
fn machine_busy() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let total: u64 = fields.iter().take(8).sum();
    total.saturating_sub(fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}

/// The parts of /proc/PID/stat we need, in ticks.
struct Stat {
    ppid: u32,
    own: u64,
    reaped_children: u64,
}

fn stat(path: &str) -> Option<Stat> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces, so count fields after its closing parenthesis.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Stat {
        ppid: u32::try_from(num(1)).ok()?,
        own: num(11) + num(12),
        reaped_children: num(13) + num(14),
    })
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn find_postmaster(data_dir: &Path) -> Option<u32> {
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    pids().into_iter().find(|pid| {
        let cmdline = std::fs::read(PathBuf::from(format!("/proc/{pid}/cmdline"))).unwrap_or_default();
        cmdline.split(|&b| b == 0).any(|arg| arg == wanted)
    })
}

/// The postmaster's own and reaped children's time plus that of its live children (backends, walwriter,
/// checkpointer, autovacuum…).
fn postgres_total(postmaster: u32) -> u64 {
    let mut total = stat(&format!("/proc/{postmaster}/stat")).map_or(0, |s| s.own + s.reaped_children);
    for pid in pids() {
        if let Some(s) = stat(&format!("/proc/{pid}/stat")) {
            if s.ppid == postmaster {
                total += s.own;
            }
        }
    }
    total
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::ThreadGroup;

    #[test]
    fn a_thread_group_counts_its_named_threads_only() {
        let (group, other) = (ThreadGroup::new("wdb-cpu-test"), ThreadGroup::new("wdb-nobody"));
        let (start, other_start) = (group.snapshot(), other.snapshot());
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = std::thread::Builder::new()
            .name("wdb-cpu-test".to_owned())
            .spawn(move || {
                let mut x = 0u64;
                while !spinning.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        // Read while the spinner still runs: a thread's ticks vanish from /proc/self/task when it ends.
        let (cores, nobody) = (group.cores_since(&start), other.cores_since(&other_start));
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(cores > 0.05, "a spinning thread used {cores} cores");
        assert_eq!(nobody, 0.0);
    }
}
