//! The instances' proxy configuration, read with the proxy's own parser.
//!
//! A launch template's `.conf` files are rendered for a sample instance (the group's first
//! address in its first zone, id `check`) into a scratch directory — all the template's
//! files, so that relative `include`s and ACL value files resolve as they will on the
//! instance — and parsed with `proxyfleet_proxy::config`. A file counts as the proxy's
//! configuration when the command names it (`-f {dir}/squid.conf`), or else when it parses;
//! a parse error is reported only for a file the command names (another `.conf` may be for
//! something else entirely), as an error when the command is `proxyfleet proxy` and as a
//! warning when it is another server, Squid itself say, that may read more than the subset.
//!
//! Then, for each target group the load balancers send to: the proxy must listen on the
//! traffic and health-check ports, expect a PROXY header exactly when the target group sends
//! one, and admit in `http_access` whoever it will see as the client — the clients' networks
//! when the client address is preserved or carried in a PROXY header, the nodes otherwise —
//! and, with PROXY headers, admit their senders in `proxy_protocol_access`. Health checks
//! (`GET /healthz`) are answered before `http_access`, so only `proxyfleet proxy`'s
//! health-check path is checked for them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proxyfleet_lb::spec::HealthCheckProtocol;
use proxyfleet_proxy::acl::{AccessRules, Facts};
use proxyfleet_proxy::config::{parse_str, Config, ConfigError, HttpPort};

use super::{list, plural, representative, unique, Findings, Use, SERVICE};
use crate::{Group, LaunchTemplate, Placeholders, Stack};

/// The sample instance's id.
const SAMPLE_ID: &str = "check";

/// The destination of the sample requests when the stack has no `service` network.
const DEFAULT_DESTINATION: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 30, 0, 10));

pub(super) fn group(stack: &Stack, group: &Group, uses: &[Use], out: &mut Findings) {
    let Some(template) = stack.launch_template(&group.launch_template) else {
        return;
    };
    let object = format!("groups.{}", group.name);
    configs(stack, group, template, uses, &object, out);
    healthz(group, template, uses, &object, out);
}

fn configs(
    stack: &Stack,
    group: &Group,
    template: &LaunchTemplate,
    uses: &[Use],
    object: &str,
    out: &mut Findings,
) {
    if !template.files.iter().any(|(name, _)| is_conf(name)) {
        return;
    }
    let Some(zone) = group.zones.first().and_then(|z| stack.zone(z)) else {
        return;
    };
    let Some(address) = group.instance_address(&zone.subnet, 0) else {
        return;
    };
    let scratch = Scratch::new();
    let launch = template.render(&Placeholders {
        id: SAMPLE_ID.to_string(),
        zone: zone.name.clone(),
        address,
        port: group.port,
        dir: scratch.dir.clone(),
        group: group.name.clone(),
    });
    scratch.write(&launch.files);
    for (name, text) in launch.files.iter().filter(|(name, _)| is_conf(name)) {
        let path = scratch.dir.join(name);
        let named = launch
            .command
            .iter()
            .any(|arg| arg == name || arg.contains(&*path.to_string_lossy()));
        match parse_str(text, &path) {
            // A fragment another file includes (no port of its own): checked through it.
            Ok(config) if !named && config.http_ports.is_empty() => {}
            Ok(config) if config.http_ports.is_empty() && runs_proxy(template) => out.error(
                object,
                format!(
                    "launch template {}'s {name} has no http_port: proxyfleet proxy will not \
                     start",
                    template.name
                ),
            ),
            Ok(config) => {
                let conf = Conf {
                    name,
                    config: &config,
                    address,
                };
                for u in uses {
                    conf.check(stack, group, u, object, out);
                }
                conf.trusted_senders(stack, group, object, out);
                conf.hardening(template, uses, object, out);
            }
            // `proxyfleet proxy` would refuse to start; another server (Squid itself) may
            // well read what proxyfleet's subset does not, so then it is only unchecked.
            Err(e) if named && runs_proxy(template) => out.error(
                object,
                format!(
                    "launch template {}'s {name} does not parse: {}",
                    template.name,
                    scratch.describe(&e)
                ),
            ),
            Err(e) if named => out.warning(
                object,
                format!(
                    "launch template {}'s {name} is outside the squid.conf subset proxyfleet \
                     reads, so it was not checked: {}",
                    template.name,
                    scratch.describe(&e)
                ),
            ),
            Err(_) => {}
        }
    }
}

fn is_conf(name: &str) -> bool {
    name.ends_with(".conf")
}

/// One parsed configuration, as the sample instance would run it.
struct Conf<'a> {
    name: &'a str,
    config: &'a Config,
    /// The sample instance's address.
    address: IpAddr,
}

impl Conf<'_> {
    fn check(&self, stack: &Stack, group: &Group, u: &Use, object: &str, out: &mut Findings) {
        let conf = format!("the instances' proxy config {}", self.name);
        let tg = &u.tg.name;
        let v2 = u.tg.proxy_protocol_v2;
        let traffic = group.port;
        let health = u.health_port(group);
        let http_check = matches!(u.tg.health_check.protocol, HealthCheckProtocol::Http { .. });
        let ports = if health == traffic {
            vec![(traffic, "traffic and health checks")]
        } else {
            vec![(traffic, "traffic"), (health, "health checks")]
        };
        // Whether the traffic port expects a PROXY header, once it is known to work at all.
        let mut traffic_header = None;
        // Whether the nodes send PROXY headers to a port that expects them.
        let mut nodes_send_headers = false;
        for (port, what) in ports {
            let is_traffic = port == traffic;
            let Some(p) = self.listening(port) else {
                out.error(
                    object,
                    format!(
                        "{conf} does not listen on {}:{port} (http_port {}): {what} from target \
                         group {tg} will be refused",
                        self.address,
                        list(self.config.http_ports.iter().map(|p| p.addr)),
                    ),
                );
                continue;
            };
            // A mismatch on a port that only gets TCP health checks does no harm: the
            // connect alone succeeds.
            let fails = if is_traffic {
                "every request will fail"
            } else {
                "health checks will fail"
            };
            match (p.require_proxy_header, v2) {
                (true, false) if is_traffic || http_check => out.error(
                    object,
                    format!(
                        "{conf} requires a PROXY header on port {port} (require-proxy-header) \
                         that the load balancer will not send (target group {tg} has \
                         proxy_protocol_v2 false): connections without one are closed, so {fails}"
                    ),
                ),
                (false, true) if is_traffic || http_check => out.error(
                    object,
                    format!(
                        "target group {tg} sends a PROXY v2 header (proxy_protocol_v2 true) that \
                         {conf} does not expect on port {port} (no require-proxy-header): the \
                         proxy takes it for a malformed request, so {fails}"
                    ),
                ),
                (required, sent) if required == sent => {
                    nodes_send_headers |= required;
                    if is_traffic {
                        traffic_header = Some(required);
                    }
                }
                _ => {}
            }
        }
        let Some(header) = traffic_header else {
            return;
        };
        let destination = stack
            .network(SERVICE)
            .and_then(|net| crate::host_address(&net, 10))
            .unwrap_or(DEFAULT_DESTINATION);
        let nodes = unique(u.nodes().into_iter().map(|n| n.address));
        let access = &self.config.http_access;
        let request = |client| allows_request(access, client, destination);
        if header || u.tg.preserve_client_ip {
            let denied: Vec<_> = u
                .clients
                .iter()
                .filter(|net| !request(representative(net)))
                .collect();
            if !denied.is_empty() {
                out.error(
                    object,
                    format!(
                        "{conf} does not admit the clients' {} {} in http_access: their \
                         requests will be denied (403)",
                        plural(denied.len(), "network", "networks"),
                        list(&denied),
                    ),
                );
            }
        } else {
            let denied: Vec<_> = nodes.iter().filter(|a| !request(**a)).collect();
            if !denied.is_empty() {
                let n = denied.len();
                out.error(
                    object,
                    format!(
                        "{conf} does not admit the load balancer {} {} in http_access, and with \
                         preserve_client_ip off on target group {tg} (and no PROXY header) the \
                         proxies see {} {}: {}",
                        plural(n, "node", "nodes"),
                        list(&denied),
                        plural(n, "its", "their"),
                        plural(n, "address", "addresses"),
                        if n == nodes.len() {
                            "every request will be denied (403)"
                        } else {
                            "requests through them will be denied (403)"
                        },
                    ),
                );
            }
        }
        if !nodes_send_headers {
            return;
        }
        let senders = &self.config.proxy_protocol_access;
        let denied: Vec<_> = nodes
            .iter()
            .filter(|a| !allows_sender(senders, **a))
            .collect();
        if !denied.is_empty() {
            out.error(
                object,
                format!(
                    "{conf} does not admit the load balancer {} {} in proxy_protocol_access: \
                     connections from {} will be refused",
                    plural(denied.len(), "node", "nodes"),
                    list(&denied),
                    plural(denied.len(), "it", "them"),
                ),
            );
        }
        if header && u.tg.preserve_client_ip {
            let denied: Vec<_> = u
                .clients
                .iter()
                .filter(|net| !allows_sender(senders, representative(net)))
                .collect();
            if !denied.is_empty() {
                out.error(
                    object,
                    format!(
                        "{conf} does not admit the clients' {} {} in proxy_protocol_access, but \
                         with preserve_client_ip on target group {tg} their connections come \
                         from their own addresses: they will be refused",
                        plural(denied.len(), "network", "networks"),
                        list(&denied),
                    ),
                );
            }
        }
    }

    /// A `proxy_protocol_access` that trusts the instances' own addresses lets a client that
    /// reaches one instance through another's tunnel send a PROXY header claiming any source
    /// (the destination guard refuses such tunnels in `proxyfleet proxy`; Squid has none).
    fn trusted_senders(&self, stack: &Stack, group: &Group, object: &str, out: &mut Findings) {
        if !self
            .config
            .http_ports
            .iter()
            .any(|p| p.require_proxy_header)
        {
            return;
        }
        let mut own: Vec<IpAddr> = group
            .zones
            .iter()
            .filter_map(|z| stack.zone(z))
            .filter_map(|z| group.instance_address(&z.subnet, 0))
            .collect();
        own.extend(self.config.tcp_outgoing_address.iter().map(|o| o.addr));
        let trusted: Vec<IpAddr> = unique(own)
            .into_iter()
            .filter(|a| allows_sender(&self.config.proxy_protocol_access, *a))
            .collect();
        if !trusted.is_empty() {
            out.warning(
                object,
                format!(
                    "the instances' proxy config {} trusts PROXY headers from the instances' own \
                     {} {} (proxy_protocol_access): a connection an instance makes to another \
                     could claim any client address; trust only the load balancer nodes",
                    self.name,
                    plural(trusted.len(), "address", "addresses"),
                    list(&trusted),
                ),
            );
        }
    }

    /// Squid's stock protections, or proxyfleet's destination guard: an instance with none of
    /// them lets any client reach the proxy host's own services and any port.
    fn hardening(&self, template: &LaunchTemplate, uses: &[Use], object: &str, out: &mut Findings) {
        let guarded = runs_proxy(template) && self.config.destination_guard_in_files != Some(false);
        let Some(client) = uses
            .iter()
            .find_map(|u| u.clients.first().map(representative))
            .or_else(|| {
                uses.iter()
                    .find_map(|u| u.nodes().first().map(|n| n.address))
            })
        else {
            return;
        };
        let access = &self.config.http_access;
        let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let unsafe_port = 25;
        let probe = |method: &str, scheme: &str, ip: IpAddr, port: u16| {
            let host = ip.to_string();
            access.allows(&Facts {
                client,
                method,
                scheme,
                host: &host,
                port,
                path: if method == "CONNECT" { "" } else { "/" },
                dst_ips: &[ip],
                ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
            })
        };
        let protects_host = guarded || !probe("GET", "http", loopback, 80);
        let safe_ports = !probe("GET", "http", DEFAULT_DESTINATION, unsafe_port);
        let ssl_ports = !probe("CONNECT", "", DEFAULT_DESTINATION, unsafe_port);
        if !protects_host && !safe_ports && !ssl_ports {
            out.warning(
                object,
                format!(
                    "the instances' proxy config {} lets clients reach the proxy host's own \
                     services (http://127.0.0.1/ is allowed) and any port (GET and CONNECT to \
                     port {unsafe_port} are allowed): add Squid's stock `http_access deny \
                     !Safe_ports`, `http_access deny CONNECT !SSL_ports` and `http_access deny \
                     to_localhost`, or run `proxyfleet proxy`, whose destination guard `up` turns on",
                    self.name
                ),
            );
        }
    }

    /// The `http_port` the sample instance accepts connections to `port` on.
    fn listening(&self, port: u16) -> Option<&HttpPort> {
        self.config.http_ports.iter().find(|p| {
            p.addr.port() == port && (p.addr.ip().is_unspecified() || p.addr.ip() == self.address)
        })
    }
}

/// `GET http://DESTINATION/` from `client`.
fn allows_request(access: &AccessRules, client: IpAddr, destination: IpAddr) -> bool {
    let host = destination.to_string();
    access.allows(&Facts {
        client,
        method: "GET",
        scheme: "http",
        host: &host,
        port: 80,
        path: "/",
        dst_ips: &[destination],
        ..Facts::connection(std::net::Ipv4Addr::UNSPECIFIED.into())
    })
}

/// A connection from `sender`, as `proxy_protocol_access` sees it.
fn allows_sender(access: &AccessRules, sender: IpAddr) -> bool {
    access.allows(&Facts::connection(sender))
}

/// Whether the instances run this binary's forward proxy (`proxyfleet proxy ...`).
fn runs_proxy(template: &LaunchTemplate) -> bool {
    template.command.first().is_some_and(|c| c == "proxyfleet")
        && template.command.get(1).is_some_and(|c| c == "proxy")
}

/// `proxyfleet proxy` answers only `GET /healthz` itself; any other origin-form path is
/// `400 ERR_INVALID_URL`, so an HTTP health check of another path never passes.
fn healthz(
    group: &Group,
    template: &LaunchTemplate,
    uses: &[Use],
    object: &str,
    out: &mut Findings,
) {
    if !runs_proxy(template) {
        return;
    }
    for u in uses {
        let HealthCheckProtocol::Http { path, matcher } = &u.tg.health_check.protocol else {
            continue;
        };
        let route = path.split('?').next().unwrap_or_default();
        if route == "/healthz" || (matcher.0..=matcher.1).contains(&400) {
            continue;
        }
        let matcher = if matcher.0 == matcher.1 {
            matcher.0.to_string()
        } else {
            format!("{}-{}", matcher.0, matcher.1)
        };
        out.error(
            object,
            format!(
                "target group {} checks GET {path}, which `proxyfleet proxy` answers with 400 \
                 (it serves only /healthz; matcher {matcher}): no instance of group {} will \
                 become healthy",
                u.tg.name, group.name
            ),
        );
    }
}

/// A directory the sample instance's files are written to, removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "proxyfleet-check-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Scratch { dir }
    }

    /// Writes what it can; a file that cannot be written shows up as a parse error where it
    /// is included, which is what the instance would see too.
    fn write(&self, files: &[(String, String)]) {
        for (name, text) in files {
            let path = self.dir.join(name);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(&path, text);
        }
    }

    /// `squid.conf:3:1: message`, with the scratch directory shown as `{dir}`.
    fn describe(&self, e: &ConfigError) -> String {
        let dir = self.dir.to_string_lossy();
        let l = e.location();
        let file = match l.file.strip_prefix(&self.dir) {
            Ok(relative) => relative.display().to_string(),
            Err(_) => l.file.display().to_string(),
        };
        let at = if l.line == 0 {
            file
        } else {
            format!("{file}:{}:{}", l.line, l.column)
        };
        format!("{at}: {}", e.message().replace(&*dir, "{dir}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
