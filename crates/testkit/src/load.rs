//! Steady client load for the fault drills: worker threads that each make one request per
//! new connection through a forward proxy, from their own app-network address, and record
//! when every failed request started — so a drill can tell requests that were already inside
//! a process when it died (no balancer can save those) from requests that started after.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One failed request: when it started and ended (since the load's start), and why.
#[derive(Debug, Clone)]
pub struct Failed {
    pub started: Duration,
    pub ended: Duration,
    pub error: String,
}

/// What a load saw, once stopped.
#[derive(Debug)]
pub struct Report {
    pub ok: u64,
    pub failed: Vec<Failed>,
}

impl Report {
    /// Failures of requests that started at or after `at`.
    pub fn failed_from(&self, at: Duration) -> Vec<&Failed> {
        self.failed.iter().filter(|f| f.started >= at).collect()
    }

    /// Failures of requests that started before `at`.
    pub fn failed_before(&self, at: Duration) -> Vec<&Failed> {
        self.failed.iter().filter(|f| f.started < at).collect()
    }
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: Mutex<Vec<Failed>>,
    stop: AtomicBool,
}

/// A running load; [`Load::stop`] ends it and reports.
pub struct Load {
    epoch: Instant,
    counters: Arc<Counters>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// One worker per source address, each sending `GET url` (absolute form) to `proxy` on
    /// a new connection, again and again, until stopped.
    pub fn start(proxy: SocketAddr, sources: &[&str], url: &str) -> Load {
        let sources: Vec<IpAddr> = sources
            .iter()
            .map(|s| s.parse().expect("source address"))
            .collect();
        Load::start_to(
            Arc::new(move || Ok(proxy)),
            &sources,
            url,
            Duration::from_secs(5),
        )
    }

    /// Like [`Load::start`], but each new connection goes where `target` says then (a name
    /// resolved again, one of several addresses), and a connect that takes longer than
    /// `connect_timeout` fails.
    pub fn start_to(
        target: Arc<dyn Fn() -> Result<SocketAddr, String> + Send + Sync>,
        sources: &[IpAddr],
        url: &str,
        connect_timeout: Duration,
    ) -> Load {
        let epoch = Instant::now();
        let counters = Arc::new(Counters::default());
        let request = get_request(url, "Connection: close\r\n");
        let workers = sources
            .iter()
            .map(|&source| {
                let (counters, request, target) =
                    (counters.clone(), request.clone(), target.clone());
                std::thread::spawn(move || {
                    while !counters.stop.load(Ordering::Relaxed) {
                        let started = epoch.elapsed();
                        let outcome = target().and_then(|proxy| {
                            one_request(source, proxy, &request, connect_timeout)
                                .map_err(|e| format!("{proxy}: {e}"))
                        });
                        match outcome {
                            Ok(()) => {
                                counters.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => counters.failed.lock().unwrap().push(Failed {
                                started,
                                ended: epoch.elapsed(),
                                error,
                            }),
                        }
                    }
                })
            })
            .collect();
        Load {
            epoch,
            counters,
            workers,
        }
    }

    /// Like [`Load::start`], but each worker keeps one connection open and sends its
    /// requests on it one after another (keep-alive); it opens a new one only after a
    /// response that closes (`Connection: close`) or a failure.
    pub fn start_keep_alive(proxy: SocketAddr, sources: &[&str], url: &str) -> Load {
        let epoch = Instant::now();
        let counters = Arc::new(Counters::default());
        let request = get_request(url, "");
        let workers = sources
            .iter()
            .map(|s| s.parse::<IpAddr>().expect("source address"))
            .map(|source| {
                let (counters, request) = (counters.clone(), request.clone());
                std::thread::spawn(move || {
                    let mut open: Option<TcpStream> = None;
                    while !counters.stop.load(Ordering::Relaxed) {
                        let started = epoch.elapsed();
                        let outcome = match open.take() {
                            Some(stream) => Ok(stream),
                            None => connect(source, proxy, Duration::from_secs(5)),
                        }
                        .and_then(|mut stream| {
                            let keep = kept_request(&mut stream, &request)?;
                            Ok(keep.then_some(stream))
                        });
                        match outcome {
                            Ok(stream) => {
                                open = stream;
                                counters.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => counters.failed.lock().unwrap().push(Failed {
                                started,
                                ended: epoch.elapsed(),
                                error: format!("{proxy} (keep-alive): {error}"),
                            }),
                        }
                    }
                })
            })
            .collect();
        Load {
            epoch,
            counters,
            workers,
        }
    }

    /// Time since the load started (the clock failures are reported on).
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn ok(&self) -> u64 {
        self.counters.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests have succeeded (the load is flowing).
    pub fn wait_for_more(&self, more: u64, limit: Duration) {
        let target = self.ok() + more;
        crate::wait::until_true(&format!("{more} more successful requests"), limit, || {
            self.ok() >= target
        });
    }

    pub fn stop(self) -> Report {
        self.counters.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().expect("load worker panicked");
        }
        let failed = std::mem::take(&mut *self.counters.failed.lock().unwrap());
        Report {
            ok: self.counters.ok.load(Ordering::Relaxed),
            failed,
        }
    }
}

/// `GET url` in absolute form, with `extra` header lines.
fn get_request(url: &str, extra: &str) -> Vec<u8> {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// A connection from `source` to `proxy`, with a 5-second read timeout.
fn connect(source: IpAddr, proxy: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    socket
        .connect_timeout(&proxy.into(), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// One request on a kept connection: whether the connection may carry another (the reply
/// did not say `Connection: close`), or why it failed.
fn kept_request(stream: &mut TcpStream, request: &[u8]) -> Result<bool, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before a whole response head ({} bytes)",
                reply.len()
            ));
        }
        reply.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&reply[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or(0usize);
    while reply.len() < head_end + length {
        let n = stream.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    check_reply(&reply)?;
    Ok(!head.contains("\r\nconnection: close"))
}

/// One request on a new connection: a 200 with its whole Content-Length body, or why not.
fn one_request(
    source: IpAddr,
    proxy: SocketAddr,
    request: &[u8],
    connect_timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(source, proxy, connect_timeout)?;
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    check_reply(&reply)
}

/// A complete `200 OK`: the status line, and exactly Content-Length bytes of body.
fn check_reply(reply: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(reply);
    let Some(end) = text.find("\r\n\r\n") else {
        return Err(format!("incomplete reply: {text:?}"));
    };
    let head = &text[..end];
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "reply: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or("no Content-Length")?;
    let body = reply.len() - end - 4;
    if body != length {
        return Err(format!("body of {body} bytes, expected {length}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_reply;

    #[test]
    fn a_reply_is_complete_only_with_its_whole_body() {
        assert!(check_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").is_ok());
        assert!(check_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi").is_err());
        assert!(check_reply(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(check_reply(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(check_reply(b"").is_err());
    }
}
