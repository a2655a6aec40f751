//! Instances as local processes: render the launch template into the instance's directory,
//! start the command in its own process group with its output in files, watch it through a
//! pidfd (which works for processes adopted after a controller restart too), and stop it.
//!
//! Instances are deliberately not tied to the controller's life (no PR_SET_PDEATHSIG, no
//! pipes): if `up` dies, they keep serving, and the next `up` adopts them.
//!
//! Nor do they inherit `up`'s surroundings: the environment is cleared and holds only the
//! minimal set `PATH` ([`BASE_PATH`]), `HOME` (the instance's own directory) and `LANG`
//! ([`BASE_LANG`]), and what the launch (the template, plus what the controller adds such as
//! `PROXYFLEET_ALLOWED_SOURCES`) gives; every descriptor but 0, 1 and 2 is closed at exec,
//! also those `up` itself inherited without close-on-exec. Whatever secret `up` was started
//! with (a cloud credential, a vault token in its environment, an open file) stays in `up`.
//!
//! What an instance writes stays the user's: its directory is created 0700, the rendered
//! files 0600 and its stdout/stderr logs 0640, whatever `up`'s umask.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::fd::OwnedFd;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;

use proxyfleet_stack::Launch;

/// The `PATH` an instance gets unless its template sets one: Debian's default for root,
/// so a template may name `sh`, `squid` (in /usr/sbin) or a tool in /usr/local without a
/// full path.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `LANG` an instance gets unless its template sets one: C.UTF-8 is on every glibc
/// (2.35+) and musl host, so messages are the same on every host (the C locale's) while
/// UTF-8 in file names and arguments is still read as UTF-8. No `LC_*` and no `TZ` are
/// passed (the host's /etc/localtime applies).
pub const BASE_LANG: &str = "C.UTF-8";

/// The variables every instance starts with, before its launch's own (which replace them):
/// `PATH`, `HOME` and `LANG`. `HOME` is the instance's directory, not the user's: programs
/// that write dotfiles or caches under `$HOME` (squid's helpers, a shell's history) then
/// write into the instance's 0700 directory, removed with it, and nothing of `up`'s own home
/// (credentials, ssh keys) is pointed at.
pub fn base_environment(dir: &Path) -> [(&'static str, std::ffi::OsString); 3] {
    [
        ("PATH", BASE_PATH.into()),
        ("HOME", dir.as_os_str().to_owned()),
        ("LANG", BASE_LANG.into()),
    ]
}

/// A running (or adopted) instance process.
pub struct InstanceProcess {
    pub pid: u32,
    pub start_ticks: u64,
    pidfd: AsyncFd<OwnedFd>,
    /// Our own child: reaped here when it exits (adopted processes are reaped by init).
    child: Option<std::process::Child>,
}

impl InstanceProcess {
    /// Writes the rendered files into `dir` and starts the command. `self_exe` replaces an
    /// argv[0] of `proxyfleet`: the template's way of saying "this very binary".
    pub fn launch(launch: &Launch, dir: &Path, self_exe: &Path) -> io::Result<InstanceProcess> {
        crate::files::create_dir(dir)?;
        for (name, text) in &launch.files {
            crate::files::write_file(&dir.join(name), text.as_bytes(), 0o600)?;
        }
        let Some((program, args)) = launch.command.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let program: PathBuf = if program == "proxyfleet" {
            self_exe.to_path_buf()
        } else {
            PathBuf::from(program)
        };
        let stdout = crate::files::open_log(&dir.join("stdout.log"))?;
        let stderr = crate::files::open_log(&dir.join("stderr.log"))?;
        let mut command = std::process::Command::new(&program);
        command
            .args(args)
            .env_clear()
            .envs(base_environment(dir))
            // The template's own PATH, HOME or LANG, if any, replaces the base one.
            .envs(launch.environment.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a Ctrl-C meant for `up` does not reach instances; `up`
            // stops them itself, in order.
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and makes one system
        // call, which is async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(close_inherited_at_exec);
        }
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
        })?;
        let pid = child.id();
        let start_ticks = start_ticks(pid).unwrap_or(0);
        let pidfd = open_pidfd(pid)?;
        Ok(InstanceProcess {
            pid,
            start_ticks,
            pidfd,
            child: Some(child),
        })
    }

    /// Takes over a process a previous controller started, if it is still that process:
    /// same pid and same start time (a reused pid has another start time).
    pub fn adopt(pid: u32, expected_ticks: u64) -> Option<InstanceProcess> {
        if pid == 0 || start_ticks(pid)? != expected_ticks {
            return None;
        }
        let pidfd = open_pidfd(pid).ok()?;
        // Checked again after opening the pidfd: the process could have been replaced between.
        if start_ticks(pid)? != expected_ticks {
            return None;
        }
        Some(InstanceProcess {
            pid,
            start_ticks: expected_ticks,
            pidfd,
            child: None,
        })
    }

    /// Resolves when the process has exited.
    pub async fn exited(&mut self) {
        // A pidfd becomes readable when its process exits (and stays so: readiness is kept).
        match self.pidfd.readable().await {
            Ok(mut guard) => guard.retain_ready(),
            Err(_) => return,
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    /// The exit status, once exited (our own children only).
    pub fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|s| s.to_string())
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let _ = rustix::process::pidfd_send_signal(self.pidfd.get_ref(), signal);
    }

    /// SIGHUP: proxyfleet's proxy and Squid read their configuration again.
    pub fn reload(&self) {
        self.signal(rustix::process::Signal::HUP);
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`.
    pub async fn stop(&mut self, timeout: Duration) {
        self.signal(rustix::process::Signal::TERM);
        // A stopped (SIGSTOP) process cannot act on SIGTERM until continued.
        self.signal(rustix::process::Signal::CONT);
        if tokio::time::timeout(timeout, self.exited()).await.is_err() {
            self.signal(rustix::process::Signal::KILL);
            self.exited().await;
        }
    }
}

/// In the child, between fork and exec: marks every descriptor from 3 up close-on-exec.
/// Descriptors `up` opened itself already are (Rust opens everything so); this catches
/// those it inherited from whoever started it, and any a library opened without the flag.
/// Marking rather than closing keeps the pipe through which std reports a failed exec.
fn close_inherited_at_exec() -> io::Result<()> {
    // SAFETY: close_range(2) takes plain integers and touches no memory.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: mark them one by one, up to the
    // descriptor limit (EBADF for the ones not open is expected).
    // SAFETY: getrlimit writes into the struct it is given; fcntl takes integers.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1 << 16
    };
    for fd in 3..max {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn open_pidfd(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    let pid = Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    let fd = pidfd_open(pid, PidfdFlags::NONBLOCK)?;
    // SAFETY: the pidfd is owned by the AsyncFd and neither replaced nor closed while
    // registered (it closes when the AsyncFd drops).
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Whether some socket listens on `addr` (or on its port at every address), read from
/// /proc/net/tcp{,6}: readiness without sending a packet, so an instance's own security group
/// (which may not admit this host's address) does not hide it.
///
/// The kernel lists listening sockets first, then every other socket (established,
/// TIME_WAIT, ...). Under a load of new connections the latter run to tens of thousands of
/// lines that take the kernel a long time to produce, so the read stops at the first socket
/// that is not listening.
pub fn is_listening(addr: std::net::SocketAddr) -> bool {
    use std::io::BufRead;
    let (file, wanted, any) = match addr.ip() {
        std::net::IpAddr::V4(v4) => (
            "/proc/net/tcp",
            format!("{:08X}", u32::from_ne_bytes(v4.octets())),
            "00000000".to_string(),
        ),
        std::net::IpAddr::V6(v6) => {
            let words: String = v6
                .octets()
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            ("/proc/net/tcp6", words, "0".repeat(32))
        }
    };
    let port = format!("{:04X}", addr.port());
    let Ok(table) = std::fs::File::open(file) else {
        return false;
    };
    for line in std::io::BufReader::new(table).lines().skip(1) {
        let Ok(line) = line else { return false };
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) =
            (fields.nth(1), fields.next(), fields.next())
        else {
            return false;
        };
        // 0A = TCP_LISTEN; the listeners are all listed before anything else.
        if state != "0A" {
            return false;
        }
        let matches = local
            .split_once(':')
            .is_some_and(|(ip, p)| p == port && (ip == wanted || ip == any));
        if matches {
            return true;
        }
    }
    false
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_in_proc() {
        let l = std::net::TcpListener::bind("127.10.9.9:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(is_listening(addr));
        // Connected sockets (listed after the listeners) do not hide it, and are not taken
        // for listeners.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = l.accept().unwrap();
        assert!(is_listening(addr));
        assert!(!is_listening(client.local_addr().unwrap()));
        drop((l, client, server));
        // A process forked by a test running in parallel holds a copy of every descriptor
        // until its exec closes them (they are close-on-exec): poll briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while is_listening(addr) {
            assert!(
                std::time::Instant::now() < deadline,
                "{addr} still listening"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn start_ticks_of_this_process_is_stable() {
        let me = std::process::id();
        let t = start_ticks(me).unwrap();
        assert!(t > 0);
        assert_eq!(start_ticks(me), Some(t));
        assert_eq!(start_ticks(u32::MAX - 1), None);
    }

    /// An instance's environment is PATH, HOME, LANG and its launch's variables (which
    /// replace the base ones), nothing of ours; its descriptors are 0, 1 and 2, even when we
    /// hold one without close-on-exec; its directory and files are private.
    #[tokio::test]
    async fn instances_get_only_their_own_environment_and_descriptors() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        // dup(2) does not copy close-on-exec: like a descriptor `up` inherited.
        let leaky = unsafe { libc::dup(devnull.as_raw_fd()) };
        assert!(leaky > 2);
        let launch = Launch {
            command: vec!["sleep".into(), "30".into()],
            environment: vec![
                ("FROM_TEMPLATE".into(), "yes".into()),
                ("LANG".into(), "de_DE.UTF-8".into()),
            ],
            files: vec![("conf".into(), "x\n".into())],
        };
        let instance_dir = dir.path().join("instance");
        let result = InstanceProcess::launch(&launch, &instance_dir, Path::new("/nonexistent"));
        unsafe { libc::close(leaky) };
        let mut p = result.unwrap();
        // Until exec, the forked child still holds our descriptors: wait for `sleep`.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default()
            != b"sleep\x0030\x00"
        {
            assert!(std::time::Instant::now() < deadline, "sleep never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let environ = std::fs::read(format!("/proc/{}/environ", p.pid)).unwrap();
        let mut vars: Vec<String> = String::from_utf8(environ)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        vars.sort();
        assert_eq!(
            vars,
            [
                "FROM_TEMPLATE=yes".to_string(),
                format!("HOME={}", instance_dir.display()),
                "LANG=de_DE.UTF-8".to_string(),
                format!("PATH={BASE_PATH}")
            ]
        );
        let mode = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            let path = instance_dir.join(name);
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(""), 0o700, "instance directory");
        assert_eq!(mode("conf"), 0o600, "rendered file");
        assert_eq!(mode("stdout.log"), 0o640, "stdout.log");
        // Right after exec the dynamic loader briefly holds a library open (fd 3): wait for
        // the steady state, which must be the standard three alone.
        let fds = || {
            let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", p.pid))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
                .collect();
            fds.sort_unstable();
            fds
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fds() != [0, 1, 2] {
            assert!(
                std::time::Instant::now() < deadline,
                "descriptors of the instance: {:?}",
                fds()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn launch_watch_and_stop_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            command: vec!["sh".into(), "-c".into(), "cat marker; exec sleep 30".into()],
            environment: vec![],
            files: vec![("marker".into(), "rendered\n".into())],
        };
        let mut p =
            InstanceProcess::launch(&launch, dir.path(), Path::new("/nonexistent")).unwrap();
        let adopted = InstanceProcess::adopt(p.pid, p.start_ticks);
        assert!(adopted.is_some(), "same pid and start time: adoptable");
        assert!(
            InstanceProcess::adopt(p.pid, p.start_ticks + 1).is_none(),
            "another start time: not ours"
        );
        let log = dir.path().join("stdout.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the rendered file was never printed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.stop(Duration::from_secs(5)).await;
        assert!(start_ticks(p.pid).is_none(), "reaped");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "rendered\n");
    }
}
