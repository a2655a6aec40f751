//! `CONNECT host:port`: connect first, answer 200 only once the tunnel is up, then relay
//! bytes both ways until each side has closed (half-close passed on).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use tokio::io::AsyncReadExt;

use crate::conn::{Admission, ClientConn, Denial, Next, RequestInfo};
use crate::errors::SquidError;
use crate::forward::outgoing_addresses;
use crate::http::body::write_all;
use crate::http::head::Head;
use crate::origin::connect;
use crate::peers::{CachePeer, Hop};

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

impl ClientConn {
    pub(crate) async fn tunnel(
        &mut self,
        head: &Head,
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
        if self.rewrite_url(&mut info, (start, t0)).await {
            return Next::Close;
        }
        if self.port_bumps() && !self.bump_steps(&mut info, (start, t0)).await {
            return Next::Close;
        }
        let (v4, v6) = outgoing_addresses(&config.tcp_outgoing_address, &info.facts(self.client));
        let local_for = |ip: IpAddr| if ip.is_ipv4() { v4 } else { v6 };
        // CONNECT is never hierarchical: direct unless never_direct says otherwise. Origin
        // servers (a reverse proxy's backends) do not take tunnels.
        let mut route = config.parents.route(&info.facts(self.client), false, false);
        route.retain(|hop| !matches!(hop, Hop::Parent(peer, _) if peer.origin_server));
        let mut failure = (SquidError::CannotForward, None);
        if route.is_empty() {
            self.log_denial(&info, Denial::NeverDirect);
        }
        for hop in &route {
            match hop {
                Hop::Direct => {
                    if let Err(admission) = self.direct_destination(&mut info).await {
                        let (error, tag) = self.direct_refusal(admission, &info, "NONE_NONE");
                        let entry = self.entry(&info, start, (tag, error.status()), None);
                        self.send_error(error, true, &info, entry, t0).await;
                        return Next::Close;
                    }
                    let tries = info.tries(config.forward_max_tries, config.connect_retries);
                    match connect(&tries, info.port, local_for, config.connect_timeout).await {
                        Ok((origin, ip)) => {
                            return self
                                .relay_tunnel(origin, ip, "HIER_DIRECT", &info, start, t0)
                                .await
                        }
                        Err(e) => {
                            tracing::info!(url = %info.url, error = %e.error, "CONNECT to origin failed");
                            failure = (SquidError::ConnectFail(e.errno), e.last_addr);
                        }
                    }
                }
                Hop::Parent(peer, code) => {
                    let ips = match self.shared.resolver.resolve(&peer.host).await {
                        Ok(ips) if !ips.is_empty() => crate::conn::with_retries(
                            &crate::conn::canonical_addresses(ips),
                            config.connect_retries,
                        ),
                        other => {
                            tracing::info!(parent = %peer.name, result = ?other.err(), "cache_peer has no address: skipped");
                            failure = (SquidError::DnsFail, None);
                            continue;
                        }
                    };
                    let timeout = peer.connect_timeout.unwrap_or(config.connect_timeout);
                    match connect(&ips, peer.port, local_for, timeout).await {
                        Ok((parent, ip)) => {
                            return self
                                .tunnel_through_parent(
                                    parent,
                                    ip,
                                    peer,
                                    code,
                                    head,
                                    &info,
                                    (start, t0),
                                )
                                .await
                        }
                        Err(e) => {
                            tracing::info!(url = %info.url, parent = %peer.name, error = %e.error, "CONNECT to parent failed");
                            failure = (SquidError::ConnectFail(e.errno), e.last_addr);
                        }
                    }
                }
            }
        }
        let (error, server) = failure;
        if info.answered {
            // The client was told the tunnel is up (ssl_bump peeked, or intercepted TLS):
            // there is no page to send, only the connection to close.
            let mut entry = self.entry(&info, start, ("NONE_NONE", 0), server);
            entry.elapsed = t0.elapsed();
            self.log_transaction(&info, &entry);
            return Next::Close;
        }
        let entry = self.entry(&info, start, ("NONE_NONE", error.status()), server);
        // (never_direct with no parent: Squid 5.7's 500 ERR_CANNOT_FORWARD.)
        self.send_error(error, true, &info, entry, t0).await;
        Next::Close
    }

    /// Whether `ssl_bump` rules judge this connection's tunnels.
    fn port_bumps(&self) -> bool {
        self.port_spec().ssl_bump && !self.shared.config.ssl_bump.is_empty()
    }

    /// `ssl_bump`'s steps ([`crate::bump`]): true to splice, false when the tunnel was
    /// terminated (or the client went away), its line logged.
    async fn bump_steps(
        &mut self,
        info: &mut RequestInfo,
        (start, t0): (SystemTime, Instant),
    ) -> bool {
        use crate::bump::Action;
        let shared = self.shared.clone();
        let rules = &shared.config.ssl_bump;
        let idle = shared.config.read_timeout;
        info.bump_step = 1;
        match rules.decide(&info.facts(self.client)) {
            Action::Splice | Action::Bump => {
                info.bump_step = 0;
                return true;
            }
            Action::Terminate => return self.terminate(info, "step 1", (start, t0)),
            Action::Peek | Action::Stare => {}
        }
        if !info.answered {
            if write_all(&mut self.stream, ESTABLISHED, idle)
                .await
                .is_err()
            {
                return false;
            }
            info.answered = true;
        }
        let deadline = tokio::time::Instant::now() + idle;
        let sni = loop {
            match crate::sni::peek(&self.buf) {
                crate::sni::Peek::Hello { sni } => break sni,
                crate::sni::Peek::NotTls(why) => {
                    tracing::info!(client = %self.client, url = %info.url, why, "ssl_bump peek: not a TLS ClientHello");
                    return self.terminate(info, "not TLS", (start, t0));
                }
                crate::sni::Peek::NeedMore => {}
            }
            if self.buf.len() > crate::sni::MAX_HELLO + 64 * 1024 {
                return self.terminate(info, "ClientHello too large", (start, t0));
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return self.terminate(info, "no ClientHello", (start, t0)),
            }
        };
        info.sni = sni;
        info.bump_step = 2;
        let action = match rules.decide(&info.facts(self.client)) {
            Action::Peek | Action::Stare => {
                info.bump_step = 3;
                rules.decide(&info.facts(self.client))
            }
            other => other,
        };
        info.bump_step = 0;
        match action {
            Action::Terminate => self.terminate(info, "after peeking", (start, t0)),
            _ => true,
        }
    }

    /// `ssl_bump terminate`: the connection closes; its line says `TCP_DENIED`.
    fn terminate(
        &self,
        info: &RequestInfo,
        when: &'static str,
        (start, t0): (SystemTime, Instant),
    ) -> bool {
        tracing::info!(client = %self.client, url = %info.url, sni = ?info.sni, when, "ssl_bump terminate: tunnel closed");
        let status = if info.answered && !info.intercepted_tls {
            200
        } else {
            0
        };
        let mut entry = self.entry(info, start, ("TCP_DENIED", status), None);
        entry.elapsed = t0.elapsed();
        self.log_transaction(info, &entry);
        false
    }

    /// Asks a parent for the tunnel (`CONNECT host:port`, with `login=` credentials): a 2xx
    /// answer becomes the client's `200 Connection established` and the relay; any other is
    /// passed to the client as the parent sent it, and the connection closed.
    #[allow(clippy::too_many_arguments)]
    async fn tunnel_through_parent(
        &mut self,
        mut parent: tokio::net::TcpStream,
        ip: IpAddr,
        peer: &CachePeer,
        hierarchy: &'static str,
        head: &Head,
        info: &RequestInfo,
        (start, t0): (SystemTime, Instant),
    ) -> Next {
        let config = &self.shared.config;
        let mut ask = format!("CONNECT {url} HTTP/1.1\r\nHost: {url}\r\n", url = info.url);
        if let Some(credentials) = crate::forward::parent_credentials(peer, head) {
            ask.push_str(&format!("Proxy-Authorization: {credentials}\r\n"));
        }
        if let Some(via) = &self.shared.rewrite.via {
            ask.push_str(&format!("Via: {via}\r\n"));
        }
        ask.push_str("\r\n");
        let idle = config.read_timeout;
        let mut buf = bytes::BytesMut::with_capacity(4096);
        let answer = async {
            write_all(&mut parent, ask.as_bytes(), idle).await.ok()?;
            loop {
                match Head::parse_response(&mut buf, config.reply_header_max_size) {
                    Ok(Some(h)) => return Some(h),
                    Ok(None) => {}
                    Err(_) => return None,
                }
                match tokio::time::timeout(idle, parent.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                }
            }
        }
        .await;
        let Some(answer) = answer else {
            tracing::info!(url = %info.url, parent = %peer.name, "parent gave no answer to CONNECT");
            let mut entry = self.entry(info, start, ("NONE_NONE", 502), Some(ip));
            entry.hierarchy = hierarchy;
            self.send_error(SquidError::ReadError, true, info, entry, t0)
                .await;
            return Next::Close;
        };
        if (200..300).contains(&answer.status) {
            // Bytes the parent sent behind its answer are the origin's, for the client.
            let early = buf.split().freeze();
            if !early.is_empty() && write_all(&mut self.stream, &early, idle).await.is_err() {
                return Next::Close;
            }
            return self
                .relay_tunnel(parent, ip, hierarchy, info, start, t0)
                .await;
        }
        tracing::info!(url = %info.url, parent = %peer.name, status = answer.status, "parent refused the CONNECT");
        let mut out = bytes::BytesMut::new();
        crate::http::rewrite::client_response(
            &answer,
            self.shared.rewrite.via.as_deref(),
            false,
            crate::http::rewrite::ResponseFraming::Close,
            &crate::http::rewrite::Edits::default(),
            &mut out,
        );
        let mut sent = out.len() as u64;
        if write_all(&mut self.stream, &out, idle).await.is_ok()
            && write_all(&mut self.stream, &buf, idle).await.is_ok()
        {
            sent += buf.len() as u64;
            // The rest of the parent's error body, bounded as a whole.
            let (mut from, mut to) = (parent, &mut self.stream);
            if let Ok(Ok(n)) = tokio::time::timeout(idle, tokio::io::copy(&mut from, &mut to)).await
            {
                sent += n;
            }
        }
        let mut entry = self.entry(info, start, ("TCP_TUNNEL", answer.status), Some(ip));
        entry.hierarchy = hierarchy;
        entry.bytes = sent;
        entry.elapsed = t0.elapsed();
        self.log_transaction(info, &entry);
        Next::Close
    }

    /// The tunnel once its far end is connected: `200 Connection established`, then bytes
    /// both ways until each side has closed.
    async fn relay_tunnel(
        &mut self,
        mut origin: tokio::net::TcpStream,
        ip: IpAddr,
        hierarchy: &'static str,
        info: &RequestInfo,
        start: SystemTime,
        t0: Instant,
    ) -> Next {
        let config = &self.shared.config;
        let idle = config.read_timeout;
        if !info.answered
            && write_all(&mut self.stream, ESTABLISHED, idle)
                .await
                .is_err()
        {
            self.log_tunnel(info, (start, t0), 0, (ip, hierarchy));
            return Next::Close;
        }
        // Bytes the client sent right behind the CONNECT head (an eager TLS ClientHello).
        let early = std::mem::take(&mut self.buf);
        let mut sent_to_client = if info.answered {
            0
        } else {
            ESTABLISHED.len() as u64
        };
        let limits = self.delay_limits(info);
        if early.is_empty() || write_all(&mut origin, &early, idle).await.is_ok() {
            sent_to_client += self.relay_both(&mut origin, limits, idle).await;
        }
        self.log_tunnel(info, (start, t0), sent_to_client, (ip, hierarchy));
        Next::Close
    }

    /// The delay pools' limits on a transaction: what the origin sends (`delay_pools`) and
    /// what the client sends (`client_delay_pools`).
    pub(crate) fn delay_limits(&self, info: &RequestInfo) -> DelayLimits {
        let pools = &self.shared.delay;
        if pools.is_empty() && pools.no_client_pools() {
            // The common case, on every request: nothing to judge.
            return DelayLimits::default();
        }
        let facts = info.facts(self.client);
        DelayLimits {
            origin: (!pools.is_empty())
                .then(|| pools.limit_for(&facts))
                .flatten(),
            client: (!pools.no_client_pools())
                .then(|| pools.client_limit_for(&facts))
                .flatten(),
        }
    }

    /// Bytes both ways between the client and `origin` until both sides end; returns the
    /// bytes sent to the client. Without delay pools it is the load balancer's relay
    /// (buffered while small, splice(2) for bulk data); with one, a plain copy each way
    /// whose paced side's reads are throttled (splice would bypass the pacing).
    pub(crate) async fn relay_both(
        &mut self,
        origin: &mut tokio::net::TcpStream,
        limits: DelayLimits,
        idle: std::time::Duration,
    ) -> u64 {
        if limits.origin.is_some() || limits.client.is_some() {
            return paced_relay(&mut self.stream, origin, limits, idle).await;
        }
        let (to_origin, to_client) = (AtomicU64::new(0), AtomicU64::new(0));
        let relayed = proxyfleet_relay::relay(
            &self.stream,
            origin,
            idle,
            (&to_origin, &to_client),
            &proxyfleet_relay::PipeBudget::unlimited(),
        )
        .await;
        if let Err(e) = relayed {
            tracing::debug!(client = %self.client, error = %e, "tunnel ended with an error");
        }
        to_client.load(Ordering::Relaxed)
    }

    /// A tunnel's line, written when both directions have closed: its byte count is known
    /// only then (Squid logs CONNECT the same way).
    fn log_tunnel(
        &self,
        info: &RequestInfo,
        (start, t0): (SystemTime, Instant),
        bytes: u64,
        (server, hierarchy): (IpAddr, &'static str),
    ) {
        let mut entry = self.entry(info, start, ("TCP_TUNNEL", 200), Some(server));
        entry.hierarchy = hierarchy;
        entry.bytes = bytes;
        entry.elapsed = t0.elapsed();
        self.log_transaction(info, &entry);
    }
}

/// A transaction's delay-pool limits, each side's reads.
#[derive(Clone, Default)]
pub(crate) struct DelayLimits {
    pub origin: Option<crate::delay::Limit>,
    pub client: Option<crate::delay::Limit>,
}

/// Both directions of a tunnel under delay pools; returns the bytes sent to the client.
/// Each direction ends at its source's end (half-close passed on) or after `idle` without
/// a byte.
async fn paced_relay(
    client: &mut tokio::net::TcpStream,
    origin: &mut tokio::net::TcpStream,
    limits: DelayLimits,
    idle: std::time::Duration,
) -> u64 {
    use tokio::io::AsyncWriteExt;
    let (cr, mut cw) = client.split();
    let (or, mut ow) = origin.split();
    let mut or = crate::delay::Throttled::new(or, limits.origin);
    let mut cr = crate::delay::Throttled::new(cr, limits.client);
    let up = async {
        let mut buf = bytes::BytesMut::new();
        while let Ok(n) = crate::http::body::read_some(&mut cr, &mut buf, idle).await {
            if n == 0 || write_all(&mut ow, &buf, idle).await.is_err() {
                break;
            }
            buf.clear();
        }
        let _ = ow.shutdown().await;
    };
    let down = async {
        let mut sent = 0u64;
        let mut buf = bytes::BytesMut::new();
        while let Ok(n) = crate::http::body::read_some(&mut or, &mut buf, idle).await {
            if n == 0 || write_all(&mut cw, &buf, idle).await.is_err() {
                break;
            }
            sent += n as u64;
            buf.clear();
        }
        let _ = cw.shutdown().await;
        sent
    };
    let ((), sent) = tokio::join!(up, down);
    sent
}
