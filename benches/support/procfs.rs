//! What the benches read of a process from `/proc`: CPU split into user and kernel time,
//! resident memory, open descriptors, threads. Each bench uses what it needs.
#![allow(dead_code)]

/// Clock ticks per second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`; 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds a process has used so far, as the kernel accounts them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// User-space seconds.
    pub user: f64,
    /// Kernel seconds.
    pub system: f64,
}

impl Cpu {
    /// Reads `/proc/<pid>/stat` (`pid` may be `self` or `thread-self`).
    pub fn of(pid: &str) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let at = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        Self {
            user: at(11) / TICKS,
            system: at(12) / TICKS,
        }
    }

    /// User + kernel seconds.
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// User + kernel time of this process so far.
    pub fn own() -> std::time::Duration {
        std::time::Duration::from_secs_f64(Self::of("self").total())
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// Major page faults of a process so far (`/proc/<pid>/stat` field 12): each one a thread
/// waited for a page to be read from disk (e.g. code the kernel had dropped from memory).
pub fn major_faults(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    after
        .split_whitespace()
        .nth(9)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// Seconds of CPU the hypervisor took from this machine so far, summed over its CPUs
/// (`steal` of the `cpu` line of `/proc/stat`): time a vCPU wanted to run and did not.
pub fn steal_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|x| x.parse::<f64>().ok())
        .map_or(0.0, |t| t / TICKS)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
pub fn status_mib(pid: &str, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

/// Resident memory of `pid`, in MiB.
pub fn rss_mib(pid: &str) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Open file descriptors of `pid`.
pub fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of `pid`.
pub fn threads(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}
