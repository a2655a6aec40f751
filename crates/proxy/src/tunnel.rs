//! `CONNECT host:port`: connect first, answer 200 only once the tunnel is up, then relay
//! bytes both ways until each side has closed (half-close passed on).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access_log::LogEntry;
use crate::conn::{ClientConn, Next, RequestInfo};
use crate::errors::SquidError;
use crate::forward::outgoing_addresses;
use crate::http::body::write_all;
use crate::origin::connect;

const RELAY_BUFFER: usize = 32 * 1024;
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

impl ClientConn {
    pub(crate) async fn tunnel(
        &mut self,
        mut info: RequestInfo,
        start: SystemTime,
        t0: Instant,
    ) -> Next {
        let shared = self.shared.clone();
        let config = &shared.config;
        if !self.allowed(&mut info).await {
            let bytes = self
                .send_error(SquidError::AccessDenied, &info.url, true)
                .await;
            self.log_tunnel(&info, start, t0, "TCP_DENIED", 403, bytes, None)
                .await;
            return Next::Close;
        }
        if info.dst_ips.is_empty() {
            match shared.resolver.resolve(&info.host).await {
                Ok(ips) => info.dst_ips = ips,
                Err(e) => {
                    tracing::info!(host = %info.host, error = %e, "DNS failure");
                    let bytes = self.send_error(SquidError::DnsFail, &info.url, true).await;
                    self.log_tunnel(&info, start, t0, "NONE_NONE", 503, bytes, None)
                        .await;
                    return Next::Close;
                }
            }
        }
        let (v4, v6) = outgoing_addresses(&config.tcp_outgoing_address, &info.facts(self.client));
        let local_for = |ip: IpAddr| if ip.is_ipv4() { v4 } else { v6 };
        let (mut origin, ip) =
            match connect(&info.dst_ips, info.port, local_for, config.connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(url = %info.url, error = %e.error, "CONNECT to origin failed");
                    let bytes = self
                        .send_error(SquidError::ConnectFail(e.errno), &info.url, true)
                        .await;
                    self.log_tunnel(&info, start, t0, "NONE_NONE", 503, bytes, e.last_addr)
                        .await;
                    return Next::Close;
                }
            };
        let idle = config.read_timeout;
        if write_all(&mut self.stream, ESTABLISHED, idle)
            .await
            .is_err()
        {
            self.log_tunnel(&info, start, t0, "TCP_TUNNEL", 200, 0, Some(ip))
                .await;
            return Next::Close;
        }
        // Bytes the client sent right behind the CONNECT head (an eager TLS ClientHello).
        let early = std::mem::take(&mut self.buf);
        let mut sent_to_client = ESTABLISHED.len() as u64;
        if early.is_empty() || write_all(&mut origin, &early, idle).await.is_ok() {
            if let Ok(n) = relay(&mut self.stream, &mut origin, idle).await {
                sent_to_client += n;
            }
        }
        self.log_tunnel(
            &info,
            start,
            t0,
            "TCP_TUNNEL",
            200,
            sent_to_client,
            Some(ip),
        )
        .await;
        Next::Close
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_tunnel(
        &self,
        info: &RequestInfo,
        start: SystemTime,
        t0: Instant,
        status: &'static str,
        http_status: u16,
        bytes: u64,
        server: Option<IpAddr>,
    ) {
        let entry = LogEntry {
            start,
            elapsed: t0.elapsed(),
            client: self.client,
            squid_status: status,
            http_status,
            bytes,
            method: info.method.clone(),
            url: info.url.clone(),
            hierarchy: if server.is_some() {
                "HIER_DIRECT"
            } else {
                "HIER_NONE"
            },
            server,
            mime: (status != "TCP_TUNNEL" && bytes > 0).then(|| "text/html".to_string()),
        };
        self.log_transaction(info, entry).await;
    }
}

/// Relays until both directions have ended; returns the bytes sent to the client. The
/// tunnel closes after `idle` with no traffic in either direction.
async fn relay(
    client: &mut TcpStream,
    origin: &mut TcpStream,
    idle: Duration,
) -> std::io::Result<u64> {
    let epoch = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (mut cr, mut cw) = client.split();
    let (mut or, mut ow) = origin.split();
    let up = pump(&mut cr, &mut ow, idle, epoch, &last_activity);
    let down = pump(&mut or, &mut cw, idle, epoch, &last_activity);
    let (_, down) = tokio::try_join!(up, down)?;
    Ok(down)
}

/// One direction: copy until EOF, then shut down the writer's side (half-close).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    idle: Duration,
    epoch: Instant,
    last: &AtomicU64,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Ok(result) => result?,
            Err(_) => {
                // Quiet this way; the tunnel is idle only if the other way is quiet too.
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
                if epoch.elapsed().saturating_sub(since) < idle {
                    continue;
                }
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(total);
        }
        tokio::time::timeout(idle, w.write_all(&buf[..n]))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        total += n as u64;
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
