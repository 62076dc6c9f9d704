//! CPU time, read from Linux's `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU, per thread): the client's
//! (this process, every live thread) and the server backends' behind a side's connections. Elsewhere it reads as
//! zero.

use std::time::Duration;

/// CPU time consumed so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cpu(pub(crate) Duration);

impl Cpu {
    /// `self - earlier`, zero if the clock went backwards (a thread exited in between).
    pub(crate) fn saturating_sub(self, earlier: Cpu) -> Cpu {
        Cpu(self.0.saturating_sub(earlier.0))
    }
}

/// The first field of a `schedstat` file: nanoseconds spent on a CPU.
fn schedstat(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The CPU time of every thread of process `pid` (one thread for a PostgreSQL backend).
fn process(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .map(|task| {
            schedstat(&format!(
                "/proc/{pid}/task/{}/schedstat",
                task.file_name().to_string_lossy()
            ))
        })
        .sum()
}

/// This process's CPU time (client side: the runtime's workers and every helper thread).
pub(crate) fn own() -> Cpu {
    Cpu(Duration::from_nanos(process("self")))
}

/// The summed CPU time of the processes `pids` (server backends on this machine).
pub(crate) fn processes(pids: &[i32]) -> Cpu {
    Cpu(Duration::from_nanos(
        pids.iter().map(|pid| process(&pid.to_string())).sum(),
    ))
}
