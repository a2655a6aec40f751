//! `CONNECT host:port`: connect first, answer 200 only once the tunnel is up, then relay
//! bytes both ways until each side has closed (half-close passed on).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crate::conn::{Admission, ClientConn, Next, RequestInfo};
use crate::errors::SquidError;
use crate::forward::outgoing_addresses;
use crate::http::body::write_all;
use crate::origin::connect;

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

impl ClientConn {
    pub(crate) async fn tunnel(
        &mut self,
        head: &crate::http::head::Head,
        mut info: RequestInfo,
        start: SystemTime,
        t0: Instant,
    ) -> Next {
        let shared = self.shared.clone();
        let config = &shared.config;
        match self.admit(&mut info, head).await {
            Admission::Allowed => {}
            Admission::Challenge => {
                let entry = self.entry(&info, start, ("TCP_DENIED", 407), None);
                self.send_error(SquidError::CacheAccessDenied, true, &info, entry, t0)
                    .await;
                return Next::Close;
            }
            Admission::Denied(denial) => {
                self.log_denial(&info, denial);
                let error = denial.error();
                let entry = self.entry(&info, start, (denial.tag(), error.status()), None);
                self.send_error(error, true, &info, entry, t0).await;
                return Next::Close;
            }
            Admission::DnsFailed(e) => {
                tracing::info!(host = %info.host, error = %e, "DNS failure");
                let entry = self.entry(&info, start, ("NONE_NONE", 503), None);
                self.send_error(SquidError::DnsFail, true, &info, entry, t0)
                    .await;
                return Next::Close;
            }
        }
        let (v4, v6) = outgoing_addresses(&config.tcp_outgoing_address, &info.facts(self.client));
        let local_for = |ip: IpAddr| if ip.is_ipv4() { v4 } else { v6 };
        let (mut origin, ip) = match connect(
            info.tries(config.forward_max_tries),
            info.port,
            local_for,
            config.connect_timeout,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(url = %info.url, error = %e.error, "CONNECT to origin failed");
                let entry = self.entry(&info, start, ("NONE_NONE", 503), e.last_addr);
                self.send_error(SquidError::ConnectFail(e.errno), true, &info, entry, t0)
                    .await;
                return Next::Close;
            }
        };
        let idle = config.read_timeout;
        if write_all(&mut self.stream, ESTABLISHED, idle)
            .await
            .is_err()
        {
            self.log_tunnel(&info, start, t0, 0, ip);
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
        self.log_tunnel(&info, start, t0, sent_to_client, ip);
        Next::Close
    }

    /// A tunnel's line, written when both directions have closed: its byte count is known
    /// only then (Squid logs CONNECT the same way).
    fn log_tunnel(
        &self,
        info: &RequestInfo,
        start: SystemTime,
        t0: Instant,
        bytes: u64,
        server: IpAddr,
    ) {
        let mut entry = self.entry(info, start, ("TCP_TUNNEL", 200), Some(server));
        entry.bytes = bytes;
        entry.elapsed = t0.elapsed();
        self.log_transaction(info, &entry);
    }
}
