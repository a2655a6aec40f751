//! Connections to origins: connecting from the configured source address, and a pool of idle
//! keep-alive connections for reuse.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

/// Idle connections kept per (origin, source address).
const MAX_IDLE_PER_KEY: usize = 256;

/// Which idle connections can serve a request: same origin, same source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub origin: SocketAddr,
    pub local: Option<IpAddr>,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle keep-alive connections to origins.
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// `server_idle_pconn_timeout`, in milliseconds (a reload may change it).
    idle_timeout_ms: AtomicU64,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            idle: Mutex::default(),
            // Squid's server_idle_pconn_timeout default.
            idle_timeout_ms: AtomicU64::new(60_000),
        }
    }
}

impl Pool {
    pub fn set_idle_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.idle_timeout_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// The most recently used idle connection for `key` that is still open.
    pub fn take(&self, key: &PoolKey) -> Option<TcpStream> {
        let timeout = self.idle_timeout();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < timeout && is_open_and_quiet(&entry.stream) {
                return Some(entry.stream);
            }
        }
        None
    }

    pub fn put(&self, key: PoolKey, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    }

    /// Closes connections idle longer than `server_idle_pconn_timeout` or closed by the
    /// origin.
    pub fn sweep(&self) {
        let timeout = self.idle_timeout();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|e| e.since.elapsed() < timeout && is_open_and_quiet(&e.stream));
            !list.is_empty()
        });
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// An idle connection must have nothing to read: EOF means the origin closed it, and data
/// would be a stray response that would corrupt the next exchange.
fn is_open_and_quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A failed connect: the errno for the error page, and what happened for the log.
#[derive(Debug)]
pub struct ConnectError {
    pub errno: i32,
    pub last_addr: Option<IpAddr>,
    pub error: io::Error,
}

/// Connects to the first address of `addrs` that answers, from `local` if given (the
/// matching address family only), within `limit` overall (Squid's connect_timeout).
pub async fn connect(
    addrs: &[IpAddr],
    port: u16,
    local: impl Fn(IpAddr) -> Option<IpAddr>,
    limit: Duration,
) -> Result<(TcpStream, IpAddr), ConnectError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = ConnectError {
        errno: libc::EHOSTUNREACH,
        last_addr: None,
        error: io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
    };
    for &ip in addrs {
        let attempt = connect_one(SocketAddr::new(ip, port), local(ip));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(stream)) => return Ok((stream, ip)),
            Ok(Err(error)) => {
                let errno = error.raw_os_error().unwrap_or(libc::ECONNREFUSED);
                last = ConnectError {
                    errno,
                    last_addr: Some(ip),
                    error,
                };
            }
            Err(_) => {
                return Err(ConnectError {
                    errno: libc::ETIMEDOUT,
                    last_addr: Some(ip),
                    error: io::ErrorKind::TimedOut.into(),
                })
            }
        }
    }
    Err(last)
}

async fn connect_one(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}
