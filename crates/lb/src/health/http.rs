//! HTTP health check: `GET path` answered with a status inside the matcher range. Unlike a
//! TCP check it also catches a target whose process is alive in the kernel's eyes (its
//! listening socket still completes handshakes) but hung or stopped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{HealthCheck, ProbeFailure, ProbeFuture};
use crate::connect::connect_from;

pub struct HttpCheck {
    pub path: String,
    /// Inclusive status range that counts as healthy.
    pub matcher: (u16, u16),
    pub proxy_protocol_v2: bool,
}

impl HealthCheck for HttpCheck {
    fn probe(&self, source: IpAddr, target: SocketAddr, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let attempt = async {
                let mut stream = connect_from(source, target, false).await?;
                let mut request = Vec::with_capacity(128);
                if self.proxy_protocol_v2 {
                    request.extend_from_slice(&crate::proxy_header::local());
                }
                request.extend_from_slice(
                    format!(
                        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: proxyfleet-health-check\r\nConnection: close\r\n\r\n",
                        self.path
                    )
                    .as_bytes(),
                );
                stream.write_all(&request).await?;
                // Only the status line matters: read until it is complete.
                let mut buf = [0u8; 256];
                let mut have = 0;
                while !buf[..have].contains(&b'\n') && have < buf.len() {
                    let n = stream.read(&mut buf[have..]).await?;
                    if n == 0 {
                        return Err(ProbeFailure::Target(
                            "closed before a status line".to_string(),
                        ));
                    }
                    have += n;
                }
                let status = parse_status(&buf[..have])
                    .ok_or_else(|| ProbeFailure::Target("not an HTTP status line".to_string()))?;
                if (self.matcher.0..=self.matcher.1).contains(&status) {
                    Ok(())
                } else {
                    Err(ProbeFailure::Target(format!("status {status}")))
                }
            };
            super::within(timeout, attempt).await
        })
    }
}

fn parse_status(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line.get(..12)?).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_line() {
        assert_eq!(super::parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(super::parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(super::parse_status(b"SSH-2.0-OpenSSH"), None);
    }
}
