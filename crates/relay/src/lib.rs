//! Moves a TCP flow's bytes both ways until each side has closed, passing half-closes on:
//! the load balancer's flows and the proxy's CONNECT tunnels.
//!
//! Small flows go through a 16 KiB buffer; once a flow shows bulk data, on Linux its bytes
//! stop entering user space: splice(2) moves them socket → pipe → socket. tokio has no
//! splice, and the crates that wrap it are small and unmaintained, so the loop is here, on
//! tokio's readiness API (`readable`/`try_io`) and rustix's `splice`.
//!
//! A spliced direction holds a pipe (two descriptors) for as long as it lasts: [`pipes`] caps
//! how many may be open at once, and a direction that gets none — from the budget or from the
//! kernel (EMFILE) — keeps copying through its buffer rather than failing the flow.
//!
//! The other things both data paths share: [`per_source`], a cap on open connections per
//! client address, and [`throttle`], at most one warning a second about a repeated event.

pub mod per_source;
pub mod pipes;
pub mod throttle;

pub use pipes::PipeBudget;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub client_to_target: u64,
    pub target_to_client: u64,
}

/// Shared by both directions: the flow is idle only when neither moved bytes lately.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Relays until both directions end, one side fails, or the flow idles for `idle`.
/// `counters` are updated as bytes move (client→target, target→client), so live statistics
/// see long flows progress. Bulk directions splice through a pipe when `pipes` has one.
pub async fn relay(
    client: &TcpStream,
    target: &TcpStream,
    idle: Duration,
    counters: (&AtomicU64, &AtomicU64),
    pipes: &PipeBudget,
) -> io::Result<Moved> {
    let activity = Activity {
        epoch: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up = one_way(client, target, idle, &activity, counters.0, pipes);
    let down = one_way(target, client, idle, &activity, counters.1, pipes);
    let (up, down) = tokio::try_join!(up, down)?;
    Ok(Moved {
        client_to_target: up,
        target_to_client: down,
    })
}

/// Waits for `ready` unless the whole flow has been idle for `idle`.
async fn wait_active<F: std::future::Future<Output = io::Result<()>>>(
    mut ready: impl FnMut() -> F,
    idle: Duration,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        match tokio::time::timeout(idle, ready()).await {
            Ok(r) => return r,
            Err(_) if activity.idle_for() < idle => continue,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
        }
    }
}

/// One direction: a buffered copy while the flow is small; on Linux, once a read fills the
/// whole buffer (bulk data), splice(2) for the rest — as HAProxy's `splice-auto` does, so short
/// request/response flows never pay for setting up pipes. Without a pipe (none left in the
/// budget, or the kernel refuses one) the copy simply goes on through the buffer.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    activity: &Activity,
    counter: &AtomicU64,
    pipes: &PipeBudget,
) -> io::Result<u64> {
    let mut total = 0u64;
    let bulk = buffered(from, to, idle, activity, counter, &mut total, true).await?;
    if !bulk {
        return Ok(total);
    }
    #[cfg(target_os = "linux")]
    if let Some(permit) = pipes.take() {
        match pipe() {
            Ok(pipe) => {
                spliced(from, to, idle, activity, counter, &mut total, pipe).await?;
                drop(permit);
                return Ok(total);
            }
            // Out of descriptors or pipe buffers: this process's problem, not the flow's.
            Err(e) if is_local_shortage(&e) => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipes;
    buffered(from, to, idle, activity, counter, &mut total, false).await?;
    Ok(total)
}

/// A pipe for splice(2): (read end, write end), non-blocking.
#[cfg(target_os = "linux")]
fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::pipe::{pipe_with, PipeFlags};
    Ok(pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?)
}

/// EMFILE, ENFILE, ENOMEM: the host is short of something a buffer copy does not need.
#[cfg(target_os = "linux")]
fn is_local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
            || code == rustix::io::Errno::NOMEM.raw_os_error()
    )
}

/// Bytes read per buffered copy; a read this large means bulk data.
const BUFFER: usize = 16 * 1024;

/// Copies until the sender finishes (`Ok(false)`) or, on Linux and with `stop_at_bulk`, until
/// bulk data shows (`Ok(true)`).
async fn buffered(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    activity: &Activity,
    counter: &AtomicU64,
    total: &mut u64,
    stop_at_bulk: bool,
) -> io::Result<bool> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        wait_active(|| from.readable(), idle, activity).await?;
        // Taken only while there is something to move (an idle flow holds none), and never
        // zeroed: the read fills the spare capacity, and only what it filled is used.
        buf.clear();
        buf.reserve_exact(BUFFER);
        let n = match from.try_read_buf(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A readiness event with nothing to read (they happen): stay bufferless.
                buf = Vec::new();
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            // The sender finished: pass the half-close on, keep the other direction going.
            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            return Ok(false);
        }
        let mut done = 0;
        while done < n {
            wait_active(|| to.writable(), idle, activity).await?;
            match to.try_write(&buf[done..n]) {
                Ok(m) => done += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        *total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        if stop_at_bulk && n >= BUFFER && cfg!(target_os = "linux") {
            return Ok(true);
        }
        // Everything read is written: a keep-alive flow waiting for its next request holds
        // no buffer (16 KiB per direction otherwise, for every idle connection).
        buf = Vec::new();
    }
}

#[cfg(target_os = "linux")]
async fn spliced(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    activity: &Activity,
    counter: &AtomicU64,
    total: &mut u64,
    (pipe_r, pipe_w): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
) -> io::Result<()> {
    use rustix::pipe::{splice, SpliceFlags};
    use tokio::io::Interest;

    const CHUNK: usize = 1 << 16;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        wait_active(|| from.readable(), idle, activity).await?;
        let filled = match from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &pipe_w, None, CHUNK, flags)?)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if filled == 0 {
            let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
            return Ok(());
        }
        let mut in_pipe = filled;
        while in_pipe > 0 {
            wait_active(|| to.writable(), idle, activity).await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe_r, None, to, None, in_pipe, flags)?)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    *total += n as u64;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn small_and_bulk_flows_arrive_whole_and_half_closes_pass_on() {
        let (mut client, client_side) = pair().await;
        let (target_side, mut target) = pair().await;
        let counters = (AtomicU64::new(0), AtomicU64::new(0));
        let relaying = tokio::spawn(async move {
            let moved = relay(
                &client_side,
                &target_side,
                Duration::from_secs(5),
                (&counters.0, &counters.1),
                &PipeBudget::unlimited(),
            )
            .await
            .unwrap();
            (moved, counters.0.into_inner(), counters.1.into_inner())
        });
        // Small one way, bulk (spliced on Linux) the other, each closed by its sender.
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "the client's half-close reached the target");
        let bulk: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        target.write_all(&bulk).await.unwrap();
        target.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert!(back == bulk, "3 MB arrived intact");
        let (moved, up, down) = relaying.await.unwrap();
        assert_eq!(
            (moved.client_to_target, moved.target_to_client),
            (5, 3_000_000)
        );
        assert_eq!((up, down), (5, 3_000_000));
    }

    #[tokio::test]
    async fn a_flow_idle_both_ways_ends_after_the_idle_timeout() {
        let (_client, client_side) = pair().await;
        let (target_side, _target) = pair().await;
        let counters = (AtomicU64::new(0), AtomicU64::new(0));
        let started = Instant::now();
        let result = relay(
            &client_side,
            &target_side,
            Duration::from_millis(200),
            (&counters.0, &counters.1),
            &PipeBudget::unlimited(),
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn without_a_pipe_in_the_budget_bulk_data_is_copied_through_the_buffer() {
        for pipes in [0, 1] {
            let (mut client, client_side) = pair().await;
            let (target_side, mut target) = pair().await;
            let budget = PipeBudget::new(pipes);
            let during = budget.clone();
            let relaying = tokio::spawn(async move {
                let counters = (AtomicU64::new(0), AtomicU64::new(0));
                relay(
                    &client_side,
                    &target_side,
                    Duration::from_secs(5),
                    (&counters.0, &counters.1),
                    &during,
                )
                .await
                .unwrap()
            });
            let bulk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
            let sent = bulk.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                client.shutdown().await.unwrap();
                client
            });
            let mut got = Vec::new();
            target.read_to_end(&mut got).await.unwrap();
            assert!(got == bulk, "1 MB arrived intact with {pipes} pipe(s)");
            drop(target);
            drop(writer.await.unwrap());
            relaying.await.unwrap();
            assert_eq!(budget.available(), Some(pipes), "every pipe given back");
        }
    }
}
