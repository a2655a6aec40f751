//! `CONNECT host:port`: connect first, answer 200 only once the tunnel is up, then relay
//! bytes both ways until each side has closed (half-close passed on).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crate::access_log::LogEntry;
use crate::conn::{Admission, ClientConn, Next, RequestInfo};
use crate::errors::SquidError;
use crate::forward::outgoing_addresses;
use crate::http::body::write_all;
use crate::origin::connect;

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
        match self.admit(&mut info).await {
            Admission::Allowed => {}
            Admission::Denied(denial) => {
                self.log_denial(&info, denial);
                let bytes = self
                    .send_error(SquidError::AccessDenied, &info.url, true)
                    .await;
                self.log_tunnel(&info, start, t0, "TCP_DENIED", 403, bytes, None)
                    .await;
                return Next::Close;
            }
            Admission::DnsFailed(e) => {
                tracing::info!(host = %info.host, error = %e, "DNS failure");
                let bytes = self.send_error(SquidError::DnsFail, &info.url, true).await;
                self.log_tunnel(&info, start, t0, "NONE_NONE", 503, bytes, None)
                    .await;
                return Next::Close;
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
            // The load balancer's relay: buffered while small, splice(2) for bulk data.
            let (to_origin, to_client) = (AtomicU64::new(0), AtomicU64::new(0));
            let relayed = proxyfleet_relay::relay(
                &self.stream,
                &origin,
                idle,
                (&to_origin, &to_client),
                &proxyfleet_relay::PipeBudget::unlimited(),
            )
            .await;
            if let Err(e) = relayed {
                tracing::debug!(client = %self.client, error = %e, "tunnel ended with an error");
            }
            sent_to_client += to_client.load(Ordering::Relaxed);
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
