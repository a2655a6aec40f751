//! One client connection: the optional PROXY header, then requests one after another
//! (keep-alive), each dispatched to forwarding, a CONNECT tunnel, the health answer, or an
//! error page.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_log::{LogEntry, LoggedRequest};
use crate::acl::{Check, Facts, Login};
use crate::errors::SquidError;
use crate::http::body::{write_all, CopyError};
use crate::http::head::{request_framing, Head, HeadError};
use crate::http::target::Target;
use crate::listeners::OpenPort;
use crate::proxy_protocol::{self, peer_ip};
use crate::server::Shared;

/// A transaction's identity for ACLs and the access log.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    /// `%ru`: the URL as logged.
    pub url: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub dst_ips: Vec<IpAddr>,
    /// Who the client proved to be (`proxy_auth`), once asked.
    pub login: LoginState,
    /// The request head as the client sent it (header ACLs, `%>h`).
    pub head: Option<Head>,
    /// The proxy address the client reached, and its port's name (`localip`, `myport`,
    /// `myportname`).
    pub local: Option<SocketAddr>,
    pub port_name: Arc<str>,
    /// `deny_info` of the ACL whose line denied the request, if any.
    pub deny_info: Option<Arc<crate::config::DenyInfo>>,
    /// `external` ACLs' answers, by ACL name, as they are asked.
    pub external: Vec<(String, bool)>,
    /// The last `tag=` an external ACL's helper answered.
    pub tag: Option<String>,
    /// `url_rewrite_host_header off`: the `Host` the client sent, kept for the origin
    /// although the URL was rewritten.
    pub kept_host: Option<String>,
    /// The client `follow_x_forwarded_for` believes, for ACLs
    /// (`acl_uses_indirect_client`) and the log (`log_uses_indirect_client`).
    pub acl_client: Option<IpAddr>,
    pub log_client: Option<IpAddr>,
    /// The server name the TLS client asked for (`ssl_bump peek`).
    pub sni: Option<String>,
    /// The `ssl_bump` step being judged (0 outside it).
    pub bump_step: u8,
    /// An intercepted TLS connection (`https_port`): no CONNECT to answer.
    pub intercepted_tls: bool,
    /// The tunnel's `200 Connection established` has gone out (or none is due).
    pub answered: bool,
    /// The client's open connections, this one included (`maxconn`).
    pub client_connections: usize,
}

/// The owned form of [`crate::acl::Login`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoginState {
    #[default]
    Unchecked,
    /// With the user name that was tried, if any (`%un` logs it, as Squid does).
    Failed(Option<String>),
    User(String),
}

impl RequestInfo {
    pub fn facts(&self, client: IpAddr) -> Facts<'_> {
        Facts {
            client: self.acl_client.unwrap_or(client),
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            dst_ips: &self.dst_ips,
            url: &self.url,
            login: match &self.login {
                LoginState::Unchecked => Login::Unchecked,
                LoginState::Failed(_) => Login::Failed,
                LoginState::User(user) => Login::User(user),
            },
            request: self.head.as_ref(),
            local: self.local,
            port_name: &self.port_name,
            external: &self.external,
            sni: self.sni.as_deref(),
            bump_step: self.bump_step,
            client_connections: self.client_connections,
            tag: self.tag.as_deref(),
            ..Facts::connection(client)
        }
    }

    /// The addresses a connection is tried to, in order: `forward_max_tries` of them at
    /// most, each `1 + connect_retries` times.
    pub fn tries(&self, max: usize, retries: usize) -> Vec<IpAddr> {
        with_retries(&self.dst_ips[..self.dst_ips.len().min(max)], retries)
    }

    /// `%un`: the user name the client logged in as, or tried to (Squid logs both).
    pub fn user(&self) -> Option<&str> {
        match &self.login {
            LoginState::User(user) | LoginState::Failed(Some(user)) => Some(user),
            _ => None,
        }
    }
}

/// Whether the client connection may carry another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

pub struct ClientConn {
    /// The configuration this request is judged by: the one in force when it arrived.
    pub(crate) shared: Arc<Shared>,
    /// The one in force now (a reload replaces it).
    current: Arc<arc_swap::ArcSwap<Shared>>,
    pub(crate) stream: TcpStream,
    /// Bytes read from the client and not yet used.
    pub(crate) buf: BytesMut,
    /// The client as ACLs and logs see it (the PROXY header's source, if any).
    pub(crate) client: IpAddr,
    peer: SocketAddr,
    /// The proxy's address this connection reached (`%la`, `myip`, `myport`).
    pub(crate) local: Option<SocketAddr>,
    /// On an `intercept` port: where the client sent the connection before the firewall
    /// redirected it.
    original_dst: Option<SocketAddr>,
    port: Arc<OpenPort>,
    shutdown: watch::Receiver<bool>,
    /// Set when a reload removes this connection's port: it finishes like a stopping proxy's.
    pub(crate) port_closing: watch::Receiver<bool>,
}

/// The Prometheus text exposition format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Room reserved for reading a request head; it grows (doubling) only as a head needs it, up
/// to `request_header_max_size`, so a slow or idle client costs little memory.
const HEAD_READ: usize = 1024;

impl ClientConn {
    pub fn new(
        current: Arc<arc_swap::ArcSwap<Shared>>,
        stream: TcpStream,
        peer: SocketAddr,
        port: Arc<OpenPort>,
        shutdown: watch::Receiver<bool>,
    ) -> ClientConn {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let original_dst = if port.spec.intercept {
            crate::intercept::original_destination(&stream)
        } else {
            None
        };
        ClientConn {
            shared: current.load_full(),
            current,
            stream,
            buf: BytesMut::new(),
            client: peer_ip(peer),
            peer,
            local,
            original_dst,
            port_closing: port.closing(),
            port,
            shutdown,
        }
    }

    /// Serves the connection until it closes, bounded by `client_lifetime`.
    pub async fn serve(mut self) {
        let lifetime = self.shared.config.client_lifetime;
        if tokio::time::timeout(lifetime, self.serve_inner())
            .await
            .is_err()
        {
            tracing::debug!(client = %self.client, "client_lifetime reached: connection closed");
        }
    }

    async fn serve_inner(&mut self) {
        let config = &self.shared.config;
        if self.port.spec.require_proxy_header {
            match proxy_protocol::read_header(
                &mut self.stream,
                &mut self.buf,
                peer_ip(self.peer),
                &config.proxy_protocol_access,
                config.request_timeout,
            )
            .await
            {
                Ok(client) => {
                    self.client = client;
                    if self.buf.is_empty() {
                        // The header came alone (as from a balancer, before the client has
                        // sent anything): an idle connection keeps no read buffer.
                        self.buf = BytesMut::new();
                    }
                }
                Err(e) => {
                    tracing::info!(peer = %self.peer, port = %self.port.spec.addr, error = %e, "connection refused: PROXY protocol");
                    return;
                }
            }
        }
        // Held for the connection's life: `client_ip_max_connections` counts the client as
        // ACLs see it (behind a balancer's PROXY header, the real client, not the node).
        let _slot = match &self.shared.per_client {
            Some(limit) => match limit.admit(self.client) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(client = %self.client, max = limit.max(), "connection refused: client_ip_max_connections reached");
                    return;
                }
            },
            None => None,
        };
        if self.port.spec.tls {
            // Boxed, as every large state below: an await's state is part of this function's
            // for the whole connection, idle keep-alive time included.
            Box::pin(self.intercepted_tls()).await;
            return;
        }
        let mut first = true;
        loop {
            let Some(head) = self.read_request_head(first).await else {
                return;
            };
            // Judged by the configuration in force now that it has arrived (a reload while
            // the connection was idle applies to it); the reference is replaced only when a
            // reload has happened.
            let now = self.current.load();
            if !Arc::ptr_eq(&self.shared, &now) {
                self.shared = arc_swap::Guard::into_inner(now);
            }
            self.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            // While draining, a request already sent on this connection is still answered
            // (with `Connection: close`); an idle connection closes in read_request_head.
            // Boxed: the transaction's (large) state exists only while a request is in
            // progress, so an idle connection's task stays small.
            if Box::pin(self.transaction(head)).await == Next::Close {
                return;
            }
            first = false;
            if self.buf.is_empty() {
                // An idle keep-alive connection holds no buffer at all.
                self.buf = BytesMut::new();
            }
        }
    }

    /// What every request's [`RequestInfo`] starts from: its head, and what the connection
    /// says (the proxy address and port name it reached, the client's open connections).
    fn request_info(&self, head: &Head) -> RequestInfo {
        RequestInfo {
            head: Some(head.clone()),
            local: self.local,
            port_name: self.port.spec.name.clone(),
            client_connections: self.connections_now(),
            ..Default::default()
        }
    }

    /// The client's open connections now, this one included (counted when `maxconn` ACLs
    /// or `client_ip_max_connections` need it; else 0).
    fn connections_now(&self) -> usize {
        self.shared
            .per_client
            .as_ref()
            .map_or(0, |limit| limit.open(self.client))
    }

    pub(crate) fn port_spec(&self) -> &crate::config::HttpPort {
        &self.port.spec
    }

    pub(crate) fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed) || *self.port_closing.borrow()
    }

    /// The next request head; `None` when the connection is done (closed, timed out,
    /// shutting down, or answered with an error).
    ///
    /// The deadlines are absolute, so a client that trickles bytes cannot stretch them: the
    /// first head must be complete `request_timeout` after the connection began (Squid's
    /// meaning); a later one may wait `client_idle_pconn_timeout` for its first byte, and then
    /// must be complete `request_timeout` after that byte.
    async fn read_request_head(&mut self, first: bool) -> Option<Head> {
        let start = SystemTime::now();
        let t0 = Instant::now();
        let config = &self.shared.config;
        let max = config.request_header_max_size;
        let request_timeout = config.request_timeout;
        let now = tokio::time::Instant::now();
        let mut deadline = now
            + if first {
                request_timeout
            } else if self.buf.is_empty() {
                config.client_idle_pconn_timeout
            } else {
                request_timeout
            };
        let mut head_started = first || !self.buf.is_empty();
        loop {
            match Head::parse_request(&mut self.buf, max) {
                Ok(Some(head)) => return Some(head),
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    let reply = self.reply_error(
                        SquidError::TooBig,
                        "error:request-too-large",
                        "",
                        start,
                        t0,
                    );
                    Box::pin(reply).await;
                    return None;
                }
                Err(HeadError::Invalid(why)) => {
                    if let Some(dst) = self.unsupported_protocol_tunnel().filter(|_| first) {
                        tracing::info!(client = %self.client, %dst, why, "not HTTP on an intercept port: tunnelled to its original destination (on_unsupported_protocol tunnel)");
                        Box::pin(self.tunnel_to_original(dst, false)).await;
                        return None;
                    }
                    tracing::debug!(client = %self.client, why, "invalid request");
                    let reply = self.reply_error(
                        SquidError::InvalidReq,
                        "error:invalid-request",
                        "",
                        start,
                        t0,
                    );
                    Box::pin(reply).await;
                    return None;
                }
            }
            let idle = self.buf.is_empty();
            if idle && (*self.shutdown.borrow() || *self.port_closing.borrow()) {
                // Draining: answer what the client already sent, close if it sent nothing.
                self.buf.reserve(4096);
                match self.stream.try_read_buf(&mut self.buf) {
                    Ok(n) if n > 0 => continue,
                    _ => return None,
                }
            }
            let read = read_head_bytes(&self.stream, &mut self.buf, deadline);
            let result = if idle {
                let mut shutdown = self.shutdown.clone();
                let mut port_closing = self.port_closing.clone();
                // Stopping, or the port removed: back to the check above, which answers a
                // request the client has already sent (its bytes may have arrived with the
                // signal) and closes otherwise, never leaving sent bytes unread (a reset).
                tokio::select! {
                    biased;
                    r = read => r,
                    r = shutdown.changed() => if r.is_err() { return None } else { continue },
                    r = port_closing.changed() => if r.is_err() { return None } else { continue },
                }
            } else {
                read.await
            };
            match result {
                Ok(0) | Err(_) => {
                    if !self.buf.is_empty() {
                        let info = RequestInfo {
                            url: "error:transaction-end-before-headers".into(),
                            ..Default::default()
                        };
                        let mut entry = self.entry(&info, start, ("NONE_NONE", 0), None);
                        entry.elapsed = t0.elapsed();
                        self.log_transaction(&info, &entry);
                    }
                    return None;
                }
                Ok(_) => {}
            }
            if !head_started && !self.buf.is_empty() {
                head_started = true;
                deadline = tokio::time::Instant::now() + request_timeout;
            }
        }
    }

    async fn transaction(&mut self, head: Head) -> Next {
        let start = SystemTime::now();
        let t0 = Instant::now();
        let method = head.method().to_string();
        let target = match Target::parse(&method, head.target()) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(client = %self.client, why = e.0, "invalid URL");
                let url = head.target().to_string();
                self.reply_error(SquidError::InvalidUrl, &url, &method, start, t0)
                    .await;
                return Next::Close;
            }
        };
        let framing = match request_framing(&head) {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(client = %self.client, error = ?e, "request framing rejected");
                let url = head.target().to_string();
                self.reply_error(SquidError::for_framing(&e), &url, &method, start, t0)
                    .await;
                return Next::Close;
            }
        };
        let is_proxy_request = !matches!(target, Target::Origin { .. })
            || self.port.spec.accel.is_some()
            || self.port.spec.intercept;
        if is_proxy_request && self.shared.log.refuses() {
            // Its own line (NONE_NONE/503) is the probe: once it is written, the log works
            // again and the next request is served.
            let url = head.target().to_string();
            self.reply_error(SquidError::LogUnwritable, &url, &method, start, t0)
                .await;
            return Next::Close;
        }
        match target {
            Target::Authority { .. } if self.port.spec.accel.is_some() => {
                // An accelerator takes no tunnels (Squid: NONE_NONE/405).
                self.reply_error(
                    SquidError::MethodNotAllowed,
                    "error:method-not-allowed",
                    &method,
                    start,
                    t0,
                )
                .await;
                Next::Close
            }
            Target::Origin { path } if self.port.spec.accel.is_some() => {
                self.accelerated(head, path, method, framing, (start, t0))
                    .await
            }
            Target::Origin { path } if self.port.spec.intercept => {
                self.intercepted(head, path, method, framing, (start, t0))
                    .await
            }
            Target::Origin { path } => self.answer_origin_form(&head, &path, start, t0).await,
            Target::Authority { host, port } => {
                let mut info = RequestInfo {
                    url: format!("{}:{port}", bracket(&host)),
                    method,
                    host,
                    port,
                    ..self.request_info(&head)
                };
                self.believe_forwarded_for(&mut info, &head);
                self.tunnel(&head, info, start, t0).await
            }
            Target::Absolute {
                scheme,
                host,
                port,
                path_and_query,
            } => {
                let mut info = RequestInfo {
                    url: head.target().to_string(),
                    method,
                    scheme,
                    host,
                    port,
                    path: path_and_query,
                    ..self.request_info(&head)
                };
                self.believe_forwarded_for(&mut info, &head);
                self.forward(head, info, framing, start, t0).await
            }
        }
    }

    /// A connection on an `https_port ... intercept ssl-bump`: TLS the firewall redirected
    /// here. It is judged as Squid judges it, as a CONNECT to its original destination
    /// (`http_access`, then `ssl_bump`'s steps on its ClientHello), and spliced there.
    async fn intercepted_tls(&mut self) {
        let Some(dst) = self.original_dst.filter(|d| Some(*d) != self.local) else {
            tracing::info!(client = %self.client, "TLS on an intercept port that was not redirected: closed");
            return;
        };
        self.tunnel_to_original(dst, true).await;
    }

    /// `on_unsupported_protocol tunnel`: where the first bytes of a redirected connection
    /// are not HTTP and a line's ACLs match (judged with what is known of a connection:
    /// the client, the port), the original destination to tunnel them to.
    fn unsupported_protocol_tunnel(&self) -> Option<SocketAddr> {
        let rules = &self.shared.config.on_unsupported_protocol;
        let dst = self.original_dst.filter(|d| Some(*d) != self.local)?;
        let facts = Facts {
            local: self.local,
            port_name: &self.port.spec.name,
            ..Facts::connection(self.client)
        };
        (self.port.spec.intercept && !rules.is_empty() && rules.allows(&facts)).then_some(dst)
    }

    /// A redirected connection judged as a CONNECT to its original destination, as Squid
    /// judges it (`http_access`; for TLS then `ssl_bump`'s steps on its ClientHello), and
    /// tunnelled there with the bytes already read.
    async fn tunnel_to_original(&mut self, dst: SocketAddr, tls: bool) {
        let start = SystemTime::now();
        let t0 = Instant::now();
        let authority = format!("{}:{}", bracket(&dst.ip().to_string()), dst.port());
        let text = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let mut raw = BytesMut::from(text.as_bytes());
        let Ok(Some(head)) = Head::parse_request(&mut raw, usize::MAX) else {
            return;
        };
        let info = RequestInfo {
            url: authority,
            method: "CONNECT".into(),
            host: dst.ip().to_string(),
            port: dst.port(),
            dst_ips: canonical_addresses(vec![dst.ip()]),
            intercepted_tls: tls,
            answered: true,
            ..self.request_info(&head)
        };
        let _ = self.tunnel(&head, info, start, t0).await;
    }

    /// An origin-form request on an `intercept` port: it goes to the connection's original
    /// destination, named by its `Host` for ACLs and the log ([`crate::intercept`]).
    async fn intercepted(
        &mut self,
        head: Head,
        path: String,
        method: String,
        framing: crate::http::head::Framing,
        (start, t0): (SystemTime, Instant),
    ) -> Next {
        let url_of = |host: &str| format!("http://{host}{path}");
        let Some(dst) = self.original_dst.filter(|d| Some(*d) != self.local) else {
            // Sent to the port itself, not redirected: there is nowhere to forward it (and
            // forwarding it to ourselves would loop).
            tracing::info!(client = %self.client, "request on an intercept port that was not redirected: refused");
            let url = url_of(
                &head
                    .value("host")
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
            );
            self.reply_error(SquidError::InvalidUrl, &url, &method, start, t0)
                .await;
            return Next::Close;
        };
        let host_value = head
            .value("host")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| crate::intercept::host_of(v).is_some())
            .unwrap_or_else(|| bracket(&dst.ip().to_string()) + &format!(":{}", dst.port()));
        let host = crate::intercept::host_of(&host_value)
            .map(|(name, _)| name)
            .unwrap_or_default();
        let mut info = RequestInfo {
            url: url_of(&host_value),
            method,
            scheme: "http".into(),
            host,
            port: dst.port(),
            path,
            dst_ips: canonical_addresses(vec![dst.ip()]),
            ..self.request_info(&head)
        };
        self.believe_forwarded_for(&mut info, &head);
        self.forward(head, info, framing, start, t0).await
    }

    /// An origin-form request on an `accel` port: its URL rebuilt from `Host`,
    /// `defaultsite=` or `vport` ([`crate::accel`]), then forwarded as any request is.
    async fn accelerated(
        &mut self,
        head: Head,
        path: String,
        method: String,
        framing: crate::http::head::Framing,
        (start, t0): (SystemTime, Instant),
    ) -> Next {
        let accel = self.port.spec.accel.as_ref().expect("an accel port");
        let host_value = head.value("host").map(String::from_utf8_lossy);
        let Some(site) = crate::accel::site(accel, host_value.as_deref(), self.local) else {
            // Squid 5.7 logs the path as the URL then.
            tracing::info!(client = %self.client, "request on an accel port names no site (no Host, no defaultsite=, no vport): refused");
            self.reply_error(SquidError::InvalidUrl, &path, &method, start, t0)
                .await;
            return Next::Close;
        };
        let mut info = RequestInfo {
            url: site.url(&path),
            method,
            scheme: "http".into(),
            host: site.host,
            port: site.port,
            path,
            ..self.request_info(&head)
        };
        self.believe_forwarded_for(&mut info, &head);
        self.forward(head, info, framing, start, t0).await
    }

    /// `GET /healthz` is the load balancer's HTTP health check; any other origin-form request
    /// is not for a forward proxy (Squid: ERR_INVALID_URL).
    async fn answer_origin_form(
        &mut self,
        head: &Head,
        path: &str,
        start: SystemTime,
        t0: Instant,
    ) -> Next {
        let route = path.split('?').next().unwrap_or("");
        let metrics = route == "/metrics" && self.may_read_metrics();
        if (route == "/healthz" || metrics) && matches!(head.method(), "GET" | "HEAD") {
            let (status, content_type, body) = if metrics {
                ("200 OK", METRICS_TYPE, self.shared.metrics())
            } else if self.draining() {
                ("503 Service Unavailable", "text/plain", "draining\n".into())
            } else if self.shared.log.refuses() {
                // An instance that may not serve (it cannot log) is taken out by its
                // balancer's health check, and replaced by its group.
                let why = "access log not writable\n";
                ("503 Service Unavailable", "text/plain", why.into())
            } else {
                ("200 OK", "text/plain", "ok\n".into())
            };
            let keep = head.wants_keep_alive() && !self.draining();
            let text = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n\r\n{}",
                body.len(),
                if keep { "keep-alive" } else { "close" },
                if head.method() == "HEAD" { "" } else { &body },
            );
            let ok = write_all(
                &mut self.stream,
                text.as_bytes(),
                self.shared.config.read_timeout,
            )
            .await
            .is_ok();
            return if ok && keep {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        self.reply_error(SquidError::InvalidUrl, path, head.method(), start, t0)
            .await;
        Next::Close
    }

    /// `GET /metrics` is answered only on a direct connection from this host: not through a
    /// balancer's PROXY header (an application client's request would arrive that way), not
    /// from another host.
    fn may_read_metrics(&self) -> bool {
        !self.port.spec.require_proxy_header && self.peer.ip().is_loopback()
    }

    /// Sends an error page, logs `NONE_NONE/status`, and leaves the connection to be closed.
    pub(crate) async fn reply_error(
        &mut self,
        error: SquidError,
        url: &str,
        method: &str,
        start: SystemTime,
        t0: Instant,
    ) {
        let info = RequestInfo {
            method: method.to_string(),
            url: url.to_string(),
            ..Default::default()
        };
        let entry = self.entry(&info, start, ("NONE_NONE", error.status()), None);
        self.send_error(error, true, &info, entry, t0).await;
    }

    /// Writes an error page and its log line: all of the page but its last byte, the line,
    /// then the last byte, so no client holds a whole answer whose line was not written.
    /// `entry` gets the bytes sent (0 when the client is gone) and the time taken. Returns
    /// the bytes sent.
    pub(crate) async fn send_error(
        &mut self,
        error: SquidError,
        close: bool,
        info: &RequestInfo,
        mut entry: LogEntry,
        t0: Instant,
    ) -> u64 {
        let config = &self.shared.config;
        let challenges = match (error, &self.shared.auth) {
            (SquidError::CacheAccessDenied, Some(auth)) => auth.challenges(),
            _ => String::new(),
        };
        let custom = match (&info.deny_info, error) {
            (Some(custom), SquidError::AccessDenied) => Some(&**custom),
            _ => None,
        };
        let mut page = crate::errors::Page {
            url: &info.url,
            hostname: &config.visible_hostname,
            product: &self.shared.product,
            close,
            extra_headers: &challenges,
            custom: None,
        };
        let location;
        match custom {
            Some(crate::config::DenyInfo::Reset) => {
                // Nothing is sent: the connection is reset.
                let _ = socket2::SockRef::from(&self.stream)
                    .set_linger(Some(std::time::Duration::ZERO));
                entry.http_status = 0;
                entry.elapsed = t0.elapsed();
                self.log_transaction(info, &entry);
                return 0;
            }
            Some(crate::config::DenyInfo::Page { status, name }) => {
                entry.http_status = *status;
                page.custom = Some(crate::errors::Custom::Page {
                    status: *status,
                    code: name,
                });
            }
            Some(crate::config::DenyInfo::Redirect { status, url }) => {
                entry.http_status = *status;
                location = crate::config::DenyInfo::location(url, &info.url, &info.host);
                page.custom = Some(crate::errors::Custom::Redirect {
                    status: *status,
                    location: &location,
                });
            }
            None => {}
        }
        let page = error.response(&page);
        if self.shared.log.wants.reply {
            // `%<h` of an error page is the page's own head, as in Squid.
            let mut bytes = BytesMut::from(&page[..]);
            entry.reply = Head::parse_response(&mut bytes, usize::MAX).ok().flatten();
        }
        let (most, last) = page.split_at(page.len() - 1);
        let sent = write_all(&mut self.stream, most, config.read_timeout)
            .await
            .is_ok();
        entry.bytes = if sent { page.len() as u64 } else { 0 };
        entry.mime = sent.then(|| "text/html".to_string());
        entry.elapsed = t0.elapsed();
        // The page goes out whatever the log says: an error page carries no traffic.
        self.log_transaction(info, &entry);
        if sent
            && write_all(&mut self.stream, last, config.read_timeout)
                .await
                .is_ok()
        {
            page.len() as u64
        } else {
            0
        }
    }

    /// `follow_x_forwarded_for`: from the connecting client, while the rules believe the
    /// address at hand, the next one from the right of `X-Forwarded-For` is the client
    /// (Squid's walk). Sets the request's ACL and log clients when it moved.
    pub(crate) fn believe_forwarded_for(&self, info: &mut RequestInfo, head: &Head) {
        let config = &self.shared.config;
        if config.follow_x_forwarded_for.is_empty() {
            return;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in head.values("x-forwarded-for") {
            for item in String::from_utf8_lossy(value).split(',') {
                match item.trim().parse::<IpAddr>() {
                    Ok(ip) => hops.push(crate::proxy_protocol::normalize(ip)),
                    // An entry that is no address ends the walk there (Squid's too).
                    Err(_) => hops.clear(),
                }
            }
        }
        let mut client = self.client;
        while let Some(&next) = hops.last() {
            let facts = Facts {
                client,
                ..info.facts(client)
            };
            if !config.follow_x_forwarded_for.allows(&facts) {
                break;
            }
            client = next;
            hops.pop();
        }
        if client != self.client {
            info.acl_client = config.acl_uses_indirect_client.then_some(client);
            info.log_client = config.log_uses_indirect_client.then_some(client);
        }
    }

    /// Shows the request to `url_rewrite_program` (when configured and
    /// `url_rewrite_access` allows): a new URL replaces the request's (its destination to be
    /// looked up again); a redirect is answered here, and `true` returned.
    pub(crate) async fn rewrite_url(
        &mut self,
        info: &mut RequestInfo,
        (start, t0): (SystemTime, Instant),
    ) -> bool {
        let shared = self.shared.clone();
        let Some(rewriter) = &shared.rewriter else {
            return false;
        };
        if !rewriter.applies(&info.facts(self.client)) {
            return false;
        }
        let so_far = self.entry(info, start, ("TCP_MISS", 0), None);
        match rewriter.ask(&info.url, &so_far).await {
            crate::url_rewrite::Rewrite::Unchanged => false,
            crate::url_rewrite::Rewrite::Url(to) => {
                match Target::parse(&info.method, &to) {
                    Ok(Target::Absolute {
                        scheme,
                        host,
                        port,
                        path_and_query,
                    }) if info.method != "CONNECT" => {
                        if !rewriter.rewrites_host_header() && info.kept_host.is_none() {
                            let sent = info.head.as_ref().and_then(|h| h.value("host"));
                            info.kept_host = Some(match sent {
                                Some(v) => String::from_utf8_lossy(v).into_owned(),
                                None => Target::host_header(&info.host, info.port, "http"),
                            });
                        }
                        (info.scheme, info.host, info.port, info.path) =
                            (scheme, host, port, path_and_query);
                        info.url = to;
                        info.dst_ips.clear();
                    }
                    Ok(Target::Authority { host, port }) if info.method == "CONNECT" => {
                        info.url = format!("{}:{port}", bracket(&host));
                        (info.host, info.port) = (host, port);
                        info.dst_ips.clear();
                    }
                    _ => {
                        tracing::warn!(url = %info.url, rewritten = %to, "url_rewrite helper answered a URL that is not one for this request: unchanged");
                    }
                }
                false
            }
            crate::url_rewrite::Rewrite::Redirect { status, url } => {
                let reply = crate::errors::redirect(status, &url, &self.shared.product, true, "");
                let mut entry = self.entry(info, start, ("TCP_REDIRECT", status), None);
                let sent = write_all(&mut self.stream, &reply, shared.config.read_timeout)
                    .await
                    .is_ok();
                entry.bytes = if sent { reply.len() as u64 } else { 0 };
                entry.elapsed = t0.elapsed();
                self.log_transaction(info, &entry);
                true
            }
        }
    }

    /// A log entry for `info`, to be completed with the bytes sent and the time taken.
    pub(crate) fn entry(
        &self,
        info: &RequestInfo,
        start: SystemTime,
        (squid_status, http_status): (&'static str, u16),
        server: Option<IpAddr>,
    ) -> LogEntry {
        let wants = self.shared.log.wants;
        LogEntry {
            start,
            elapsed: std::time::Duration::ZERO,
            client: info.log_client.unwrap_or(self.client),
            squid_status,
            http_status,
            bytes: 0,
            method: info.method.clone(),
            url: info.url.clone(),
            hierarchy: if server.is_some() {
                "HIER_DIRECT"
            } else {
                "HIER_NONE"
            },
            server,
            mime: None,
            user: info.user().map(str::to_string),
            // Behind a PROXY header the client's port is not kept.
            client_port: if self.port.spec.require_proxy_header {
                0
            } else {
                self.peer.port()
            },
            local: self.local,
            server_port: info.port,
            request: wants.request.then(|| {
                Box::new(LoggedRequest {
                    scheme: info.scheme.clone(),
                    host: info.host.clone(),
                    path: info.path.clone(),
                    head: if wants.request_head {
                        info.head.clone()
                    } else {
                        None
                    },
                })
            }),
            reply: None,
            sni: info.sni.clone(),
        }
    }

    /// Writes a transaction's line (see [`crate::access_log::AccessLogger::log`]): false
    /// when the response must not be finished (`logfile_error_policy refuse`).
    pub(crate) fn log_transaction(&self, info: &RequestInfo, entry: &LogEntry) -> bool {
        self.shared.log.log(&info.facts(self.client), entry)
    }

    /// Whether the request may go ahead: `http_access` (the host is looked up only when a
    /// `dst` ACL is reached; a name that does not resolve fails closed), then `miss_access`.
    /// Going direct then needs [`Self::direct_destination`].
    pub(crate) async fn admit(&self, info: &mut RequestInfo, head: &Head) -> Admission {
        let rules = &self.shared.config.http_access;
        loop {
            let (check, external) = rules.check_external(&info.facts(self.client));
            if let (Check::NeedsExternal, Some(acl)) = (check, external) {
                let (matched, tag) = self.ask_external(acl, info).await;
                info.external.push((acl.name.clone(), matched));
                // Squid sets a request's tag once: the first helper's stays.
                if info.tag.is_none() {
                    info.tag = tag;
                }
                continue;
            }
            match check {
                Check::Allow => break,
                Check::Deny => {
                    info.deny_info = self.deny_info_for(rules, info);
                    return Admission::Denied(Denial::Rules);
                }
                Check::Challenge => return Admission::Challenge,
                Check::NeedsDst => {
                    if let Err(e) = self.resolve_destination(info).await {
                        return Admission::DnsFailed(e);
                    }
                }
                Check::NeedsLogin => info.login = self.log_in(head).await,
                Check::NeedsExternal => unreachable!("check_external names the ACL to ask"),
            }
        }
        let config = &self.shared.config;
        if !config.miss_access.is_empty() && !config.miss_access.allows(&info.facts(self.client)) {
            return Admission::Denied(Denial::Miss);
        }
        Admission::Allowed
    }

    /// The `deny_info` of the last ACL of the line that denied (Squid's rule); none for the
    /// implicit answer when no line matched.
    fn deny_info_for(
        &self,
        rules: &crate::acl::AccessRules,
        info: &RequestInfo,
    ) -> Option<Arc<crate::config::DenyInfo>> {
        let table = &self.shared.config.deny_info;
        if table.is_empty() {
            return None;
        }
        let (_, rule) = rules.decide(&info.facts(self.client));
        let last = rule?.acls.0.last()?;
        table.get(&last.acl.name).cloned()
    }

    /// What a refused [`Self::direct_destination`] answers: the error page and its `%Ss`
    /// (`dns_tag` for a name that does not resolve), the refusal logged.
    pub(crate) fn direct_refusal(
        &self,
        admission: Admission,
        info: &RequestInfo,
        dns_tag: &'static str,
    ) -> (SquidError, &'static str) {
        match admission {
            Admission::Denied(denial) => {
                self.log_denial(info, denial);
                (denial.error(), denial.tag())
            }
            Admission::DnsFailed(e) => {
                tracing::info!(host = %info.host, error = %e, "DNS failure");
                (SquidError::DnsFail, dns_tag)
            }
            Admission::Allowed | Admission::Challenge => (SquidError::AccessDenied, "TCP_DENIED"),
        }
    }

    /// Before going direct: the destination's addresses (resolved once: what is judged is
    /// what will be dialed), and the destination guard on every one of them. A parent is
    /// not guarded: it is the configuration's own, and the destination is its to reach.
    pub(crate) async fn direct_destination(&self, info: &mut RequestInfo) -> Result<(), Admission> {
        if info.dst_ips.is_empty() {
            if let Err(e) = self.resolve_destination(info).await {
                return Err(Admission::DnsFailed(e));
            }
        }
        let guard = &self.shared.config.destination_guard;
        if let Some((ip, why)) = guard.refuses(&info.dst_ips, info.port, &self.shared.own_addrs) {
            return Err(Admission::Denied(Denial::Guard(ip, why)));
        }
        Ok(())
    }

    /// The destination's addresses as connections reach them. A resolver that answers no
    /// address at all is a failure, so a `dst` check can never loop.
    async fn resolve_destination(
        &self,
        info: &mut RequestInfo,
    ) -> Result<(), crate::resolve::DnsError> {
        let ips = self.shared.resolver.resolve(&info.host).await?;
        if ips.is_empty() {
            return Err(crate::resolve::DnsError {
                host: info.host.clone(),
                reason: "no addresses".into(),
            });
        }
        info.dst_ips = canonical_addresses(ips);
        Ok(())
    }

    /// What an `external` ACL's helper answers for this request.
    async fn ask_external(
        &self,
        acl: &crate::acl::Acl,
        info: &RequestInfo,
    ) -> (bool, Option<String>) {
        let Some((class, args)) = acl.external_class() else {
            return (false, None);
        };
        let mut entry = self.entry(info, SystemTime::now(), ("NONE_NONE", 0), None);
        if entry.request.is_none() {
            // The question's %DST, %PATH and headers come from here.
            entry.request = Some(Box::new(LoggedRequest {
                scheme: info.scheme.clone(),
                host: info.host.clone(),
                path: info.path.clone(),
                head: info.head.clone(),
            }));
        }
        let question = crate::external_acl::Question {
            entry: &entry,
            acl_name: &acl.name,
            args,
        };
        self.shared.external.matches(class, &question).await
    }

    /// Checks the request's credentials with `auth_param basic`'s helper.
    async fn log_in(&self, head: &Head) -> LoginState {
        let Some(auth) = &self.shared.auth else {
            return LoginState::Failed(None);
        };
        match auth.check(head).await {
            crate::auth::Outcome::User(user) => LoginState::User(user),
            crate::auth::Outcome::Rejected(user) => LoginState::Failed(user),
            crate::auth::Outcome::Unavailable(why, user) => {
                tracing::error!(client = %self.client, reason = %why, "basic auth helper could not check credentials: refused");
                LoginState::Failed(Some(user))
            }
        }
    }

    /// The cache log's line for a refused request: why, in words.
    pub(crate) fn log_denial(&self, info: &RequestInfo, denial: Denial) {
        match denial {
            Denial::Rules => {
                tracing::debug!(client = %self.client, url = %info.url, "denied by http_access")
            }
            Denial::Miss => {
                tracing::debug!(client = %self.client, url = %info.url, "denied by miss_access")
            }
            Denial::NeverDirect => {
                tracing::info!(client = %self.client, url = %info.url, "never_direct forbids going direct and there is no cache_peer: not forwarded")
            }
            Denial::Guard(ip, why) => {
                tracing::warn!(client = %self.client, url = %info.url, address = %ip, reason = %why, "destination refused by the destination guard")
            }
            Denial::Loop => {
                tracing::warn!(client = %self.client, url = %info.url, "forwarding loop: the request's Via already names this proxy")
            }
        }
    }
}

/// What [`ClientConn::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// `info.dst_ips` holds the judged addresses: dial only those.
    Allowed,
    Denied(Denial),
    /// A `proxy_auth` ACL wants (other) credentials: 407.
    Challenge,
    DnsFailed(crate::resolve::DnsError),
}

/// Why a request was refused with ERR_ACCESS_DENIED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denial {
    /// `http_access`.
    Rules,
    /// The destination guard, for this address.
    Guard(IpAddr, crate::guard::Protected),
    /// The request already passed through this proxy (its `Via` names it).
    Loop,
    /// `miss_access`.
    Miss,
    /// `never_direct`, with no parent to go through.
    NeverDirect,
}

impl Denial {
    /// The error page this refusal answers with.
    pub(crate) fn error(self) -> SquidError {
        match self {
            Denial::Miss => SquidError::ForwardingDenied,
            Denial::NeverDirect => SquidError::CannotForward,
            Denial::Rules | Denial::Guard(..) | Denial::Loop => SquidError::AccessDenied,
        }
    }

    /// The access log's `%Ss`, as Squid 5.7 writes it (a `miss_access` denial is logged
    /// as the miss it is).
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Denial::NeverDirect => "NONE_NONE",
            Denial::Miss => "TCP_MISS",
            _ => "TCP_DENIED",
        }
    }
}

/// Resolved addresses as connections reach them, without repeats, in their order.
/// Each address `1 + retries` times in a row (`connect_retries`).
pub(crate) fn with_retries(ips: &[IpAddr], retries: usize) -> Vec<IpAddr> {
    ips.iter()
        .flat_map(|ip| std::iter::repeat_n(*ip, retries + 1))
        .collect()
}

pub(crate) fn canonical_addresses(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips.into_iter().map(crate::guard::canonical) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// An IPv6 host in brackets, as it appears in a URL authority.
pub fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Reads what the client sent next, before `deadline`. Room in `buf` is reserved only once
/// the socket is readable, so a client that sends nothing (idle, or between keep-alive
/// requests) holds no buffer; a readiness event with nothing to read gives the room back.
async fn read_head_bytes(
    stream: &TcpStream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> Result<usize, CopyError> {
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CopyError::Source(e)),
            Err(_) => return Err(CopyError::SourceTimeout),
        }
        if buf.capacity() - buf.len() < HEAD_READ / 4 {
            buf.reserve(HEAD_READ);
        }
        match stream.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
            }
            Err(e) => return Err(CopyError::Source(e)),
        }
    }
}

#[cfg(test)]
mod idle_size {
    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's task is this future, idle keep-alive time included, so its size is
    /// memory per idle connection: a large state (a transaction, a tunnel, an error page)
    /// must sit behind a `Box::pin` (bench/scale measured 6 KiB per idle connection once a
    /// tunnel's state was awaited inline).
    #[test]
    fn an_idle_connection_s_task_stays_small() {
        let size = future_size(ClientConn::serve);
        println!("ClientConn::serve future: {size} bytes");
        assert!(size <= 2048, "{size} bytes per connection's task");
    }
}
