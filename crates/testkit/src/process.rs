//! Child processes owned by a test: killed (SIGKILL) and reaped on drop, so nothing outlives
//! a failing test; their stdout and stderr are collected line by line.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wait;

/// Where the `proxyfleet` binary under test is: integration tests pass
/// `env!("CARGO_BIN_EXE_proxyfleet")`.
pub struct Owned {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    name: String,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Owned {
    /// Starts `program args...`.
    pub fn spawn(program: impl AsRef<Path>, args: &[&str]) -> Owned {
        Self::spawn_with_env(program, args, &[])
    }

    /// Starts `program args...` with extra environment variables.
    pub fn spawn_with_env(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Owned {
        let program = program.as_ref();
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("piped"), stdout.clone());
        collect(child.stderr.take().expect("piped"), stderr.clone());
        let name = format!("{} {}", program.display(), args.join(" "));
        Owned {
            child: Some(child),
            stdout,
            stderr,
            name,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stdout line satisfies `pick`; panics (with the output so far) when the
    /// process exits first or `limit` passes.
    pub fn wait_stdout<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let name = self.name.clone();
        wait::until(what, limit, || {
            if let Some(found) = self.stdout().iter().find_map(|l| pick(l)) {
                return Some(found);
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\nstdout: {:?}\nstderr: {:?}",
                    self.stdout(),
                    self.stderr()
                );
            }
            None
        })
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_stderr(&mut self, needle: &str, limit: Duration) {
        wait::until_true(needle, limit, || {
            self.stderr().iter().any(|l| l.contains(needle))
        })
    }

    /// Whether the child has exited (it is reaped if so).
    /// Whether the child has exited (reaped by [`Owned::wait_exit`] counts).
    pub fn has_exited(&mut self) -> bool {
        self.child.is_none() || self.try_status().is_some()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which is not yet reaped (we hold it).
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Waits for the child to exit within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let name = self.name.clone();
        let status = wait::until(&format!("{name} to exit"), limit, || self.try_status());
        self.child = None;
        status
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion with a time limit; returns (status, stdout, stderr).
pub fn run(
    program: impl AsRef<Path>,
    args: &[&str],
    limit: Duration,
) -> (ExitStatus, String, String) {
    let mut owned = Owned::spawn(program, args);
    let status = owned.wait_exit(limit);
    let out = owned.stdout.clone();
    let err = owned.stderr.clone();
    drop(owned);
    // The reader threads finish at EOF, right after exit; they hold the last references.
    wait::until_true("output readers to finish", Duration::from_secs(5), || {
        Arc::strong_count(&out) == 1 && Arc::strong_count(&err) == 1
    });
    let stdout = out.lock().unwrap().join("\n");
    let stderr = err.lock().unwrap().join("\n");
    (status, stdout, stderr)
}

/// A process's resident memory in KiB (`VmRSS` of /proc/PID/status); 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to `wanted` (soft and, when root, hard: the
/// children a test starts inherit both). Returns the soft limit now in force.
pub fn raise_open_files(wanted: u64) -> u64 {
    use rlimit::Resource;
    if let Ok((soft, hard)) = Resource::NOFILE.get() {
        if hard < wanted {
            // Only root may raise the hard limit; others keep theirs.
            let _ = Resource::NOFILE.set(wanted, wanted);
        } else if soft < wanted {
            let _ = Resource::NOFILE.set(wanted, hard);
        }
    }
    Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0)
}
