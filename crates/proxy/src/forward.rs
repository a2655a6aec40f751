//! Forwarding one absolute-form request: access control, resolution, an origin connection
//! (pooled or new, from the configured source address), the exchange, the log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;

use crate::acl::Facts;
use crate::config::OutgoingAddress;
use crate::conn::{Admission, ClientConn, Denial, Next, RequestInfo};
use crate::errors::SquidError;
use crate::exchange::ReplyRules;
use crate::exchange::{exchange, Delivered, ExchangeRequest, Failure, Outcome};
use crate::http::body::write_all;
use crate::http::head::{closes_after, Framing, Head};
use crate::http::rewrite::{origin_request, Edits, FieldAction, Outgoing};
use crate::http::target::Target;
use crate::origin::{connect, ConnectError, PoolKey};
use crate::peers::{CachePeer, Hop, PeerLogin};

/// The source addresses for IPv4 and IPv6 destinations: the first `tcp_outgoing_address`
/// line of each family whose ACLs match.
pub fn outgoing_addresses(
    lines: &[OutgoingAddress],
    facts: &Facts,
) -> (Option<IpAddr>, Option<IpAddr>) {
    let pick = |v4: bool| {
        lines
            .iter()
            .find(|l| l.addr.is_ipv4() == v4 && l.acls.matches(facts))
            .map(|l| l.addr)
    };
    (pick(true), pick(false))
}

impl ClientConn {
    pub(crate) async fn forward(
        &mut self,
        head: Head,
        mut info: RequestInfo,
        framing: Framing,
        start: SystemTime,
        t0: Instant,
    ) -> Next {
        let shared = self.shared.clone();
        let config = &shared.config;
        // An unread request body would be taken for the next request: close instead.
        let may_keep = framing == Framing::Length(0)
            && head.wants_keep_alive()
            && config.client_persistent_connections
            && !self.draining();
        let next = if may_keep {
            Next::KeepAlive
        } else {
            Next::Close
        };

        let admission = if via_names(&head, &config.visible_hostname) {
            Admission::Denied(Denial::Loop)
        } else {
            self.admit(&mut info, &head).await
        };
        match admission {
            Admission::Allowed => {}
            Admission::Challenge => {
                let refusal = (SquidError::CacheAccessDenied, "TCP_DENIED");
                self.reply_failure(refusal, !may_keep, None, &info, (start, t0))
                    .await;
                return next;
            }
            Admission::Denied(denial) => {
                self.log_denial(&info, denial);
                let refusal = (denial.error(), denial.tag());
                self.reply_failure(refusal, !may_keep, None, &info, (start, t0))
                    .await;
                return next;
            }
            Admission::DnsFailed(e) => {
                tracing::info!(host = %info.host, error = %e, "DNS failure");
                let refusal = (SquidError::DnsFail, "TCP_MISS");
                self.reply_failure(refusal, !may_keep, None, &info, (start, t0))
                    .await;
                return next;
            }
        }
        if self.rewrite_url(&mut info, (start, t0)).await {
            return Next::Close;
        }
        // Only now, as Squid judges access first: other schemes (ftp://) are not served.
        if info.scheme != "http" {
            let refusal = (SquidError::UnsupportedRequest, "NONE_NONE");
            self.reply_failure(refusal, true, None, &info, (start, t0))
                .await;
            return Next::Close;
        }
        let hierarchical =
            crate::peers::is_hierarchical(&info.method, head.value("authorization").is_some());
        // Squid: a request on an accel port goes only through cache_peers unless the port
        // says `allow-direct` (or always_direct allows it).
        let no_direct = self
            .port_spec()
            .accel
            .as_ref()
            .is_some_and(|a| !a.allow_direct);
        let route = config
            .parents
            .route(&info.facts(self.client), hierarchical, no_direct);
        if route.is_empty() {
            // Squid 5.7's answer when never_direct leaves no parent: 502 ERR_READ_ERROR.
            self.log_denial(&info, Denial::NeverDirect);
            let refusal = (SquidError::ReadError, "TCP_MISS");
            self.reply_failure(refusal, !may_keep, None, &info, (start, t0))
                .await;
            return next;
        }
        // The failure to answer with if no hop can be connected to.
        let mut failure = (SquidError::CannotForward, None);
        for hop in &route {
            let target = match hop {
                Hop::Direct => {
                    if let Err(admission) = self.direct_destination(&mut info).await {
                        let (error, tag) = self.direct_refusal(admission, &info, "TCP_MISS");
                        self.reply_failure((error, tag), !may_keep, None, &info, (start, t0))
                            .await;
                        return next;
                    }
                    HopTarget {
                        ips: info.tries(config.forward_max_tries, config.connect_retries),
                        port: info.port,
                        connect_timeout: config.connect_timeout,
                        hierarchy: "HIER_DIRECT",
                        parent: None,
                    }
                }
                Hop::Parent(peer, code) => match self.shared.resolver.resolve(&peer.host).await {
                    Ok(ips) if !ips.is_empty() => HopTarget {
                        ips: crate::conn::with_retries(
                            &crate::conn::canonical_addresses(ips),
                            config.connect_retries,
                        ),
                        port: peer.port,
                        connect_timeout: peer.connect_timeout.unwrap_or(config.connect_timeout),
                        hierarchy: code,
                        parent: Some(peer),
                    },
                    other => {
                        tracing::info!(parent = %peer.name, result = ?other.err(), "cache_peer has no address: skipped");
                        failure = (SquidError::DnsFail, None);
                        continue;
                    }
                },
            };
            match self
                .forward_to(&head, &info, framing, &target, (start, t0))
                .await
            {
                Attempt::Done(next) => return next,
                Attempt::ConnectFailed(e) => {
                    let to = target.parent.map_or("origin", |p| p.name.as_str());
                    tracing::info!(url = %info.url, to, error = %e.error, "connect failed");
                    failure = (SquidError::ConnectFail(e.errno), e.last_addr);
                }
            }
        }
        let (error, server) = failure;
        self.reply_failure((error, "TCP_MISS"), !may_keep, server, &info, (start, t0))
            .await;
        next
    }

    /// One hop's attempt: the request to an origin (direct) or to a parent, on a pooled
    /// connection or a new one, and the exchange. A hop that cannot be connected to is the
    /// caller's to skip; anything after that is answered here.
    async fn forward_to(
        &mut self,
        head: &Head,
        info: &RequestInfo,
        framing: Framing,
        target: &HopTarget<'_>,
        (start, t0): (SystemTime, Instant),
    ) -> Attempt {
        let shared = self.shared.clone();
        let config = &shared.config;
        let (local_v4, local_v6) =
            outgoing_addresses(&config.tcp_outgoing_address, &info.facts(self.client));
        let local_for = |ip: IpAddr| if ip.is_ipv4() { local_v4 } else { local_v6 };

        let mut request_head = BytesMut::with_capacity(head.wire_len() + 256);
        let origin_server = target.parent.filter(|p| p.origin_server);
        let host_header = match origin_server.and_then(|p| p.forced_domain.as_ref()) {
            Some(forced) => forced.clone(),
            None => info
                .kept_host
                .clone()
                .unwrap_or_else(|| Target::host_header(&info.host, info.port, "http")),
        };
        // A parent proxy gets the absolute form, as any proxy does; an origin server (and
        // the origin, direct) the origin form.
        let request_target = if target.parent.is_some() && origin_server.is_none() {
            &info.url
        } else {
            &info.path
        };
        let facts = info.facts(self.client);
        let header_rules = &config.request_headers;
        let decide = |name: &[u8]| header_rules.action(name, &facts);
        let mut edits = if header_rules.is_empty() {
            Edits::default()
        } else {
            let so_far = self.entry(info, start, ("TCP_MISS", 0), None);
            Edits {
                decide: Some(&decide),
                add: header_rules.additions(&facts, &so_far),
            }
        };
        if let Some(peer) = origin_server {
            // Squid: an origin server is shown `login=user:password` as `Authorization`,
            // unless the client sent its own (passed on, end to end, like any request's).
            if let (Some(PeerLogin::Basic(value)), None) =
                (&peer.login, head.value("authorization"))
            {
                edits.add.push(("Authorization".into(), value.clone()));
            }
        } else if let Some(credentials) = target.parent.and_then(|p| parent_credentials(p, head)) {
            edits.add.push(("Proxy-Authorization".into(), credentials));
        }
        if self.port_spec().accel.is_some() {
            // What Squid tells the servers behind an accelerator (ESI surrogates).
            edits.add.push((
                "Surrogate-Capability".into(),
                format!("{}=\"Surrogate/1.0\"", config.visible_hostname),
            ));
        }
        let upgrades = config.upgrades.allowed(head, &facts);
        let limits = self.delay_limits(info);
        if !upgrades.is_empty() {
            edits.add.push(("Upgrade".into(), upgrades.join(", ")));
            edits.add.push(("Connection".into(), "upgrade".into()));
        }
        origin_request(
            head,
            framing,
            &Outgoing {
                path_and_query: request_target,
                host_header: &host_header,
                client: self.client,
            },
            &shared.rewrite,
            &edits,
            &mut request_head,
        );
        let req = ExchangeRequest {
            method: head.method(),
            framing,
            client_keep_alive: head.wants_keep_alive()
                && !closes_after(head)
                && config.client_persistent_connections,
            client_http10: head.minor_version == 0,
            draining: &shared.draining,
            port_closing: self.port_closing.clone(),
            via: shared.rewrite.via.as_deref(),
            idle: config.read_timeout,
            max_reply_header: config.reply_header_max_size,
            reply_rules: None,
            keep_reply_head: shared.log.wants.reply,
            upgrade: !upgrades.is_empty(),
            throttle: limits.origin.clone(),
            client_throttle: limits.client.clone(),
        };

        let mut may_reuse = true;
        loop {
            let pooled = if may_reuse {
                target.ips.iter().find_map(|&ip| {
                    let key = PoolKey {
                        origin: SocketAddr::new(ip, target.port),
                        local: local_for(ip),
                    };
                    shared.pool.take(&key).map(|s| (s, ip, key))
                })
            } else {
                None
            };
            let reused = pooled.is_some();
            let (mut origin, ip, key) = match pooled {
                Some(p) => p,
                None => match connect(&target.ips, target.port, local_for, target.connect_timeout)
                    .await
                {
                    Ok((stream, ip)) => {
                        let key = PoolKey {
                            origin: SocketAddr::new(ip, target.port),
                            local: local_for(ip),
                        };
                        (stream, ip, key)
                    }
                    Err(e) => return Attempt::ConnectFailed(e),
                },
            };
            if write_all(&mut origin, &request_head, config.read_timeout)
                .await
                .is_err()
            {
                if reused {
                    may_reuse = false;
                    continue;
                }
                let failure = (SquidError::ReadError, "TCP_MISS");
                self.reply_failure(failure, true, Some(ip), info, (start, t0))
                    .await;
                return Attempt::Done(Next::Close);
            }
            let mut line = self.entry(info, start, ("TCP_MISS", 0), Some(ip));
            line.hierarchy = target.hierarchy;
            line.server_port = target.port;
            let client = self.client;
            let policy = ReplyPolicy {
                config,
                info,
                client,
                line: &line,
            };
            let req = ExchangeRequest {
                reply_rules: (!config.reply_headers.is_empty()
                    || !config.http_reply_access.is_empty())
                .then_some(&policy as _),
                port_closing: req.port_closing.clone(),
                throttle: req.throttle.clone(),
                client_throttle: req.client_throttle.clone(),
                ..req
            };
            let record = |tag: &'static str, d: &Delivered| {
                let mut entry = line.clone();
                entry.squid_status = tag;
                entry.http_status = d.status;
                entry.bytes = d.bytes;
                entry.mime = d.mime.clone();
                entry.reply = d.reply.clone();
                entry.elapsed = t0.elapsed();
                shared.log.log(&info.facts(client), &entry)
            };
            let outcome = exchange(&mut self.stream, &mut self.buf, &mut origin, &req, &|d| {
                record("TCP_MISS", d)
            })
            .await;
            return Attempt::Done(match outcome {
                Outcome::Done(d) => {
                    if d.origin_reusable && config.server_persistent_connections {
                        shared.pool.put(key, origin);
                    }
                    if !d.logged {
                        record("TCP_MISS", &d);
                    }
                    if d.client_reusable {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    }
                }
                Outcome::Aborted(d) => {
                    if d.unrecorded {
                        // Reset rather than close: a body that ends at close must not look
                        // whole to the client.
                        tracing::warn!(client = %self.client, url = %info.url, "response cut before its end: its access log line could not be written (logfile_error_policy refuse)");
                        let _ = socket2::SockRef::from(&self.stream)
                            .set_linger(Some(std::time::Duration::ZERO));
                    } else if !d.logged {
                        record("TCP_MISS_ABORTED", &d);
                    }
                    Next::Close
                }
                // A pooled connection the origin had closed: the request never reached it,
                // so a fresh connection may safely carry it (no body was consumed).
                Outcome::NoResponse(Failure::ClosedEarly)
                    if reused && framing == Framing::Length(0) =>
                {
                    may_reuse = false;
                    continue;
                }
                Outcome::NoResponse(Failure::MalformedBody(why)) => {
                    tracing::info!(client = %self.client, url = %info.url, why, "malformed request body");
                    let failure = (SquidError::InvalidReq, "NONE_NONE");
                    self.reply_failure(failure, true, Some(ip), info, (start, t0))
                        .await;
                    Next::Close
                }
                Outcome::Upgraded(reply, rest) => {
                    self.switch_protocols(origin, (reply, rest), info, &line, t0)
                        .await;
                    Next::Close
                }
                Outcome::NoResponse(Failure::ReplyDenied) => {
                    tracing::debug!(client = %self.client, url = %info.url, "reply denied by http_reply_access");
                    let refusal = (SquidError::AccessDenied, "TCP_DENIED_REPLY");
                    self.reply_failure(refusal, true, Some(ip), info, (start, t0))
                        .await;
                    Next::Close
                }
                Outcome::NoResponse(Failure::ClientGone) => {
                    record("TCP_MISS_ABORTED", &Delivered::default());
                    Next::Close
                }
                Outcome::NoResponse(failure) => {
                    let error = match failure {
                        Failure::Timeout => SquidError::ReadTimeout,
                        Failure::InvalidResponse => SquidError::InvalidResp,
                        _ => SquidError::ReadError,
                    };
                    tracing::info!(url = %info.url, ?failure, "no response from origin");
                    self.reply_failure((error, "TCP_MISS"), true, Some(ip), info, (start, t0))
                        .await;
                    Next::Close
                }
            });
        }
    }

    /// The origin's `101`: passed to the client (its `Upgrade` and `Connection` kept), then
    /// bytes both ways until each side has closed, as a CONNECT tunnel; logged at the end
    /// with the bytes sent to the client (`TCP_MISS/101`).
    async fn switch_protocols(
        &mut self,
        origin: tokio::net::TcpStream,
        (reply, rest): (Head, bytes::Bytes),
        info: &RequestInfo,
        line: &crate::access_log::LogEntry,
        t0: Instant,
    ) {
        let idle = self.shared.config.read_timeout;
        let mut out = BytesMut::with_capacity(reply.wire_len() + 64);
        out.extend_from_slice(b"HTTP/1.1 101 ");
        out.extend_from_slice(reply.reason());
        out.extend_from_slice(b"\r\n");
        for (name, value) in reply.fields() {
            let framing = [
                b"content-length".as_slice(),
                b"transfer-encoding",
                b"keep-alive",
                b"proxy-connection",
            ]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
            if !framing {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(via) = &self.shared.rewrite.via {
            out.extend_from_slice(format!("Via: {via}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest);
        let mut sent = out.len() as u64;
        let mut origin = origin;
        let early = std::mem::take(&mut self.buf);
        let ready = write_all(&mut self.stream, &out, idle).await.is_ok()
            && (early.is_empty() || write_all(&mut origin, &early, idle).await.is_ok());
        if ready {
            let limits = self.delay_limits(info);
            sent += self.relay_both(&mut origin, limits, idle).await;
        }
        let mut entry = line.clone();
        entry.http_status = 101;
        entry.bytes = sent;
        entry.elapsed = t0.elapsed();
        self.log_transaction(info, &entry);
    }

    /// Answers with `error`'s page (closing after it when `close`) and logs it as `tag`, with
    /// the origin address it concerns if one was dialed.
    async fn reply_failure(
        &mut self,
        (error, tag): (SquidError, &'static str),
        close: bool,
        server: Option<IpAddr>,
        info: &RequestInfo,
        (start, t0): (SystemTime, Instant),
    ) {
        let entry = self.entry(info, start, (tag, error.status()), server);
        self.send_error(error, close, info, entry, t0).await;
    }
}

/// Whether a `Via` entry of the request was added by a proxy called `name` (Squid's
/// forwarding-loop check): `1.1 name`, `1.1 name:port`, with or without a comment.
fn via_names(head: &Head, name: &str) -> bool {
    head.values("via").any(|value| {
        value.split(|&b| b == b',').any(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let mut words = entry.split_ascii_whitespace();
            let _protocol = words.next();
            words.next().is_some_and(|received_by| {
                let host = received_by.rsplit_once(':').map_or(received_by, |(h, _)| h);
                received_by.eq_ignore_ascii_case(name) || host.eq_ignore_ascii_case(name)
            })
        })
    })
}

/// Where one hop connects.
pub(crate) struct HopTarget<'a> {
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub connect_timeout: std::time::Duration,
    /// `%Sh`: `HIER_DIRECT`, `FIRSTUP_PARENT`, ...
    pub hierarchy: &'static str,
    pub parent: Option<&'a Arc<CachePeer>>,
}

/// How one hop went.
enum Attempt {
    /// Answered (or failed after connecting, answered with an error page).
    Done(Next),
    /// Not connected to: the next hop may be tried.
    ConnectFailed(ConnectError),
}

/// The `Proxy-Authorization` a parent is shown (`login=`).
pub(crate) fn parent_credentials(peer: &CachePeer, head: &Head) -> Option<String> {
    match peer.login.as_ref()? {
        PeerLogin::Basic(value) => Some(value.clone()),
        PeerLogin::PassThru => head
            .value("proxy-authorization")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    }
}

/// The reply-side rules of one transaction (`http_reply_access`, `reply_header_*`), judged
/// with the request's facts and the reply head.
struct ReplyPolicy<'a> {
    config: &'a crate::config::Config,
    info: &'a RequestInfo,
    client: IpAddr,
    /// The transaction's log entry so far, for `reply_header_add` values.
    line: &'a crate::access_log::LogEntry,
}

impl ReplyPolicy<'_> {
    fn facts<'r>(&'r self, reply: &'r Head) -> Facts<'r> {
        Facts {
            reply: Some(reply),
            ..self.info.facts(self.client)
        }
    }
}

impl ReplyRules for ReplyPolicy<'_> {
    fn allows(&self, reply: &Head) -> bool {
        let rules = &self.config.http_reply_access;
        rules.is_empty() || rules.allows(&self.facts(reply))
    }

    fn action(&self, reply: &Head, name: &[u8]) -> FieldAction<'_> {
        self.config.reply_headers.action(name, &self.facts(reply))
    }

    fn additions(&self, reply: &Head) -> Vec<(String, String)> {
        self.config
            .reply_headers
            .additions(&self.facts(reply), self.line)
    }
}
