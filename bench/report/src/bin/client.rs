//! `proxyfleet-bench-client`: the two loads of `bench/run` that wrk and curl cannot give.
//!
//! - `hold`: opens N client connections to a proxy's front door, sends nothing or the first
//!   part of a request, prints `READY opened=N failed=F` and keeps them open until it is
//!   terminated (SIGTERM's default action; the kernel closes the sockets). The harness measures
//!   the proxies' memory meanwhile.
//! - `churn`: the failover load. C threads, each sending one absolute-form request per new
//!   connection (`Connection: close`) in a loop for D ms; K ms in, it sends SIGKILL to a PID
//!   (one proxy of the side measured). Every request is recorded with its start time, so the
//!   failures split into requests started before the kill (in flight inside the victim: no
//!   Layer-4 balancer can save those) and after it (new connections the tier failed). One JSON
//!   line on stdout.
//!
//! std only, blocking sockets, one thread per connection: at tens of connections that is
//! simpler than an async runtime, and precise enough for millisecond timings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage:
  proxyfleet-bench-client hold  --addr IP:PORT --conns N --mode silent|partial --uri URI --host HOST [--max-seconds S]
  proxyfleet-bench-client churn --addr IP:PORT --conns C --duration-ms D --uri URI --host HOST
                                [--kill-pid PID --kill-at-ms K] [--stall-ms 500] [--timeout-ms 5000]";

fn main() {
    if let Err(e) = run() {
        eprintln!("proxyfleet-bench-client: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let verb = args.next().unwrap_or_default();
    let opts = Opts::parse(args.collect())?;
    match verb.as_str() {
        "hold" => hold(&opts),
        "churn" => churn(&opts),
        _ => bail!("unknown or missing verb '{verb}'\n{USAGE}"),
    }
}

/// `--name value` pairs.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: Vec<String>) -> Result<Opts> {
        let mut pairs = Vec::new();
        let mut it = args.into_iter();
        while let Some(name) = it.next() {
            let Some(key) = name.strip_prefix("--") else {
                bail!("unexpected argument '{name}'\n{USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_string(), value));
        }
        Ok(Opts(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .with_context(|| format!("--{key} is required\n{USAGE}"))
    }

    fn num(&self, key: &str, default: Option<u64>) -> Result<u64> {
        match (self.get(key), default) {
            (Some(v), _) => v
                .parse()
                .with_context(|| format!("--{key}: '{v}' is not a whole number")),
            (None, Some(d)) => Ok(d),
            (None, None) => bail!("--{key} is required\n{USAGE}"),
        }
    }

    fn addr(&self) -> Result<SocketAddr> {
        let v = self.str("addr")?;
        v.parse()
            .with_context(|| format!("--addr: '{v}' is not IP:PORT"))
    }
}

fn epoch_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

// --- hold ------------------------------------------------------------------------------------

fn hold(opts: &Opts) -> Result<()> {
    let addr = opts.addr()?;
    let n = opts.num("conns", None)?;
    let mode = opts.str("mode")?;
    let uri = opts.str("uri")?;
    let host = opts.str("host")?;
    let max = Duration::from_secs(opts.num("max-seconds", Some(300))?);
    let first_part = match mode {
        "silent" => Vec::new(),
        // A request line and one header, but not the blank line that ends the head: the
        // proxy must keep this connection and its parse state until the rest arrives.
        "partial" => format!("GET {uri} HTTP/1.1\r\nHost: {host}\r\n").into_bytes(),
        _ => bail!("--mode must be silent or partial, got '{mode}'"),
    };
    let mut held = Vec::with_capacity(n as usize);
    let mut failed = 0u64;
    let mut first_error = None;
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
            if !first_part.is_empty() {
                s.write_all(&first_part)?;
            }
            Ok(s)
        }) {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    println!(
        "READY opened={} failed={failed} first_error={:?}",
        held.len(),
        first_error.unwrap_or_default()
    );
    std::io::stdout().flush()?;
    // Held until SIGTERM (the harness's) or, as a safety net, `max`.
    std::thread::sleep(max);
    drop(held);
    Ok(())
}

// --- churn -----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The TCP connection to the front door failed (refused or timed out).
    Connect,
    /// The request could not be sent.
    Write,
    /// The connection ended (or was reset) before a complete response.
    Read,
    /// No complete response within the timeout.
    Timeout,
    /// A complete response whose status was not 2xx.
    Status,
}

const KINDS: [(Outcome, &str); 5] = [
    (Outcome::Connect, "connect"),
    (Outcome::Write, "write"),
    (Outcome::Read, "read"),
    (Outcome::Timeout, "timeout"),
    (Outcome::Status, "status"),
];

struct Record {
    /// Since the load started.
    start: Duration,
    latency: Duration,
    outcome: Outcome,
}

fn churn(opts: &Opts) -> Result<()> {
    let addr = opts.addr()?;
    let conns = opts.num("conns", None)?;
    let duration = Duration::from_millis(opts.num("duration-ms", None)?);
    let timeout = Duration::from_millis(opts.num("timeout-ms", Some(5000))?);
    let stall = Duration::from_millis(opts.num("stall-ms", Some(500))?);
    let kill_pid = opts.get("kill-pid").map(str::parse::<i32>).transpose()?;
    let kill_at = Duration::from_millis(opts.num("kill-at-ms", Some(0))?);
    if kill_pid.is_some() && kill_at >= duration {
        bail!("--kill-at-ms must be less than --duration-ms");
    }
    let request = Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: proxyfleet-bench-client\r\nConnection: close\r\n\r\n",
            opts.str("uri")?,
            opts.str("host")?
        )
        .into_bytes(),
    );

    let start = Instant::now();
    let start_epoch = epoch_us();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let request = Arc::clone(&request);
            std::thread::spawn(move || {
                let mut records = Vec::new();
                while start.elapsed() < duration {
                    let t0 = Instant::now();
                    let outcome = one_request(addr, &request, timeout);
                    records.push(Record {
                        start: t0 - start,
                        latency: t0.elapsed(),
                        outcome,
                    });
                }
                records
            })
        })
        .collect();

    let mut kill_offset = None;
    let mut kill_epoch = None;
    let mut kill_error = None;
    let mut dead_offset = None;
    if let Some(pid) = kill_pid {
        let left = kill_at.saturating_sub(start.elapsed());
        std::thread::sleep(left);
        kill_offset = Some(start.elapsed());
        kill_epoch = Some(epoch_us());
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is one the harness
        // started (directly, or through `proxyfleet up`) and looked up just before.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            kill_error = Some(std::io::Error::last_os_error().to_string());
        }
        // The victim is dead once its files are closed: a zombie, or reaped. Until then its
        // listener still accepts, and a request started between the signal and the death can
        // land in it — as lost as one already inside. "After the kill" starts at the death.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_dead(pid) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        dead_offset = Some(start.elapsed());
    }

    let mut records = Vec::new();
    for w in workers {
        records.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        );
    }
    let summary = summarize(&records, dead_offset, stall);
    let mut out = serde_json::Map::new();
    out.insert("start_epoch_us".into(), (start_epoch as u64).into());
    out.insert("kill_epoch_us".into(), kill_epoch.map(|e| e as u64).into());
    out.insert(
        "kill_at_ms".into(),
        kill_offset.map(|d| d.as_secs_f64() * 1e3).into(),
    );
    out.insert("kill_error".into(), kill_error.into());
    out.insert(
        "death_after_signal_ms".into(),
        dead_offset
            .zip(kill_offset)
            .map(|(d, k)| (d - k).as_secs_f64() * 1e3)
            .into(),
    );
    out.insert("conns".into(), conns.into());
    out.insert("duration_ms".into(), (duration.as_millis() as u64).into());
    for (k, v) in summary {
        out.insert(k, v);
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// One request on a new connection; the whole response is read (to EOF: `Connection: close`).
fn one_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return Outcome::Connect;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(request).is_err() {
        return Outcome::Write;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Timeout;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Timeout
            }
            Err(_) => return Outcome::Read,
        }
    }
    classify(&buf)
}

/// A complete response (status line, head, and as many body bytes as Content-Length says)
/// with a 2xx status is a success.
fn classify(response: &[u8]) -> Outcome {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Read;
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let mut lines = head.split("\r\n");
    let status: u16 = match lines.next().and_then(|l| l.split(' ').nth(1)) {
        Some(code) => match code.parse() {
            Ok(c) => c,
            Err(_) => return Outcome::Read,
        },
        None => return Outcome::Read,
    };
    let length = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = response.len() - head_end - 4;
    if length.is_some_and(|n| body < n) {
        return Outcome::Read;
    }
    if (200..300).contains(&status) {
        Outcome::Ok
    } else {
        Outcome::Status
    }
}

fn summarize(
    records: &[Record],
    kill: Option<Duration>,
    stall: Duration,
) -> Vec<(String, serde_json::Value)> {
    let started_before = |r: &Record| kill.is_none_or(|k| r.start < k);
    let failed = |r: &&Record| r.outcome != Outcome::Ok;
    let count_kinds = |before: bool| {
        let mut m = serde_json::Map::new();
        for (kind, name) in KINDS {
            let n = records
                .iter()
                .filter(|r| r.outcome == kind && started_before(r) == before)
                .count();
            m.insert(name.to_string(), n.into());
        }
        serde_json::Value::Object(m)
    };
    let fails_before = records
        .iter()
        .filter(failed)
        .filter(|r| started_before(r))
        .count();
    let fails_after = records
        .iter()
        .filter(failed)
        .filter(|r| !started_before(r))
        .count();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // The last failure after the kill: until when new requests were still failing.
    let last_fail_after = kill.and_then(|k| {
        records
            .iter()
            .filter(failed)
            .filter(|r| r.start >= k)
            .map(|r| r.start - k)
            .max()
    });
    let mut lat: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    lat.sort();
    let pct = |p: f64| {
        if lat.is_empty() {
            serde_json::Value::Null
        } else {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            ms(lat[i]).into()
        }
    };
    vec![
        ("requests".into(), records.len().into()),
        (
            "ok".into(),
            records
                .iter()
                .filter(|r| r.outcome == Outcome::Ok)
                .count()
                .into(),
        ),
        ("failed_before_kill".into(), fails_before.into()),
        ("failed_after_kill".into(), fails_after.into()),
        ("failed_before_kinds".into(), count_kinds(true)),
        ("failed_after_kinds".into(), count_kinds(false)),
        (
            "last_failure_after_kill_ms".into(),
            last_fail_after.map(ms).into(),
        ),
        (
            "stalled".into(),
            records.iter().filter(|r| r.latency >= stall).count().into(),
        ),
        ("stall_ms".into(), (stall.as_millis() as u64).into()),
        ("p50_ms".into(), pct(0.50)),
        ("p99_ms".into(), pct(0.99)),
        ("max_ms".into(), lat.last().map(|d| ms(*d)).into()),
    ]
}

/// Whether `pid` has exited: every one of its threads gone from /proc or a zombie. The
/// process's descriptors (its listener among them) are closed only when its *last* thread
/// exits; the thread-group leader shows `Z` as soon as it alone has exited, while the other
/// threads may still hold the listener open for a fraction of a millisecond, so the leader's
/// state alone would call a still-accepting process dead.
fn is_dead(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_dead_once_a_zombie_or_reaped_not_while_it_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(!is_dead(pid), "a sleeping child is alive");
        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_dead(pid) {
            assert!(
                Instant::now() < deadline,
                "the killed child never turned zombie"
            );
            std::thread::yield_now();
        }
        child.wait().unwrap();
        assert!(is_dead(pid), "a reaped child is dead");
    }

    #[test]
    fn a_complete_2xx_response_is_ok_and_a_short_body_is_not() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(classify(ok), Outcome::Ok);
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc";
        assert_eq!(classify(short), Outcome::Read);
        let err = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(classify(err), Outcome::Status);
        assert_eq!(classify(b""), Outcome::Read);
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n"), Outcome::Read);
    }

    #[test]
    fn failures_split_at_the_kill() {
        let r = |start_ms, outcome| Record {
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(1),
            outcome,
        };
        let records = [
            r(10, Outcome::Ok),
            r(1990, Outcome::Read),
            r(2000, Outcome::Connect),
            r(2300, Outcome::Ok),
            r(2500, Outcome::Status),
        ];
        let s: serde_json::Map<_, _> = summarize(
            &records,
            Some(Duration::from_secs(2)),
            Duration::from_millis(500),
        )
        .into_iter()
        .collect();
        assert_eq!(s["requests"], 5);
        assert_eq!(s["ok"], 2);
        assert_eq!(s["failed_before_kill"], 1);
        assert_eq!(s["failed_after_kill"], 2);
        assert_eq!(s["failed_before_kinds"]["read"], 1);
        assert_eq!(s["failed_after_kinds"]["connect"], 1);
        assert_eq!(s["failed_after_kinds"]["status"], 1);
        assert_eq!(s["last_failure_after_kill_ms"], 500.0);
        assert_eq!(s["stalled"], 0);
    }
}
