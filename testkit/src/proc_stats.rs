//! One process's memory, thread and descriptor figures from `/proc`, for
//! the scale and soak tests' bounds.

/// One process's figures from `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStats {
    /// VmRSS, kB.
    pub rss_kb: u64,
    /// VmHWM (peak RSS), kB.
    pub hwm_kb: u64,
    pub threads: u64,
    /// Open file descriptors.
    pub fds: usize,
}

impl ProcStats {
    /// Reads them now; panics (naming the field) if the process is gone.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
            .count();
        Self {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }
}
