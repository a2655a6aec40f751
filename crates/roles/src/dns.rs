//! The stack's DNS name, as the cloud's network load balancer has one: it answers with the
//! load-balancer nodes whose zone has a healthy target, so clients that resolve it often (TTL
//! 1 s) stop sending flows to a zone that cannot serve them. When no zone has one it answers
//! with every node (fail open): leaving the name unanswered would help nobody.
//!
//! [`healthy_node_addresses`] computes the answer from a snapshot, purely; [`serve`] answers
//! for the one name with the latest answer from a watch, over UDP and TCP (hickory-server),
//! authoritative for that name and refusing every other — it is not a resolver.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use proxyfleet_lb::spec::LoadBalancerSpec;
use proxyfleet_stack::Stack;
use proxyfleet_state::{Snapshot, TargetHealth};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The answers' time to live, the cloud's: clients follow a zone's health within a second.
pub const TTL: u32 = 1;

/// A TCP connection that sends no query for this long is closed, so a client that opens
/// connections and goes quiet holds each for a bounded time.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses queued per TCP connection at most; past that they are dropped, so a client
/// that sends queries and never reads the answers costs bounded memory.
const TCP_RESPONSE_BUFFER: usize = 16;

/// With port 0, how many ephemeral UDP ports to try before giving up on finding one whose
/// TCP twin is free too.
const BIND_ATTEMPTS: usize = 16;

/// The addresses the DNS name answers with: every node (of the load balancers of `stack`)
/// whose zone has at least one Healthy target in a target group its load balancer forwards
/// to; all nodes when no zone has one (fail open, as the cloud's DNS does). Sorted,
/// deduplicated.
pub fn healthy_node_addresses(stack: &Stack, snapshot: &Snapshot) -> Vec<IpAddr> {
    let healthy: BTreeSet<IpAddr> = stack
        .load_balancers
        .iter()
        .flat_map(|lb| {
            let zones = healthy_zones(lb, snapshot);
            lb.nodes
                .iter()
                .filter(move |node| zones.contains(node.zone.as_str()))
        })
        .map(|node| node.address)
        .collect();
    let chosen = if healthy.is_empty() {
        all_node_addresses(stack)
    } else {
        healthy
    };
    chosen.into_iter().collect()
}

fn all_node_addresses(stack: &Stack) -> BTreeSet<IpAddr> {
    stack
        .load_balancers
        .iter()
        .flat_map(|lb| &lb.nodes)
        .map(|node| node.address)
        .collect()
}

/// The zones with a Healthy target in a target group `lb` forwards to.
fn healthy_zones<'s>(lb: &LoadBalancerSpec, snapshot: &'s Snapshot) -> BTreeSet<&'s str> {
    lb.listeners
        .iter()
        .filter_map(|listener| snapshot.targets.get(&listener.target_group))
        .flat_map(|targets| targets.values())
        .filter(|target| target.state == TargetHealth::Healthy)
        .map(|target| target.zone.as_str())
        .collect()
}

/// The answer, kept current from a role's view of the state until `stop`: recomputed on
/// every change of the view, sent on only when it differs. While the store is out of reach
/// the view, and so the answer, stay as they were.
pub fn follow_answer(
    stack: Stack,
    mut view: watch::Receiver<crate::view::View>,
    stop: CancellationToken,
) -> watch::Receiver<Vec<IpAddr>> {
    let first = healthy_node_addresses(&stack, &view.borrow_and_update().snapshot);
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                () = stop.cancelled() => return,
            }
            let answer = healthy_node_addresses(&stack, &view.borrow_and_update().snapshot);
            tx.send_if_modified(|current| {
                let changed = *current != answer;
                if changed {
                    tracing::info!(addresses = ?answer, "DNS answer changed");
                    *current = answer;
                }
                changed
            });
        }
    });
    rx
}

/// A running [`serve`]: it stops when its `stop` token is cancelled, not when this is dropped.
#[derive(Debug, Clone, Copy)]
pub struct DnsServer {
    local_addr: SocketAddr,
}

impl DnsServer {
    /// Where it answers, UDP and TCP (the same port on both).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Answers DNS queries for `name` (case-insensitive, with or without trailing dot) on
/// `listen`, UDP and TCP, until `stop` is cancelled: A records (AAAA for IPv6 addresses) from
/// the latest value of `answer`, TTL 1 s, authoritative; NOERROR with no records for other
/// record types of the name; REFUSED for any other name (it is authoritative for this one
/// name only). Returns once both sockets are bound (serving continues in spawned tasks), or
/// the bind error.
pub async fn serve(
    listen: SocketAddr,
    name: String,
    answer: watch::Receiver<Vec<IpAddr>>,
    stop: CancellationToken,
) -> io::Result<DnsServer> {
    let name = parse_name(&name)?;
    let (udp, tcp) = bind(listen).await?;
    let local_addr = udp.local_addr()?;
    let mut server = Server::new(Answerer {
        name,
        addresses: answer,
    });
    server.register_socket(udp);
    // hickory-server bounds each connection (one query at a time, the idle timeout, the
    // response queue); a UDP query is answered without waiting on anything.
    server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
    tokio::spawn(async move {
        // Dropping the server would abort its tasks: it lives here until `stop`.
        let result = match stop.run_until_cancelled(server.block_until_done()).await {
            Some(result) => result,
            None => server.shutdown_gracefully().await,
        };
        if let Err(error) = result {
            tracing::warn!(%local_addr, %error, "the DNS server stopped");
        }
    });
    Ok(DnsServer { local_addr })
}

/// `name` as a fully qualified name: queries always carry one, whether or not the stack
/// wrote the trailing dot.
fn parse_name(name: &str) -> io::Result<LowerName> {
    let invalid = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("DNS name {name:?}: {reason}"),
        )
    };
    if name.trim_end_matches('.').is_empty() {
        return Err(invalid("empty".into()));
    }
    let mut parsed = Name::from_ascii(name).map_err(|e| invalid(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(LowerName::new(&parsed))
}

/// A UDP socket on `listen` and a TCP listener on the same address and port. With port 0 the
/// port is the UDP socket's, retried when TCP has it taken already.
async fn bind(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempts = 0;
    loop {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                attempts += 1;
                if attempts == BIND_ATTEMPTS {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The request handler: the one name's answer, from the watch at the time of each query.
struct Answerer {
    name: LowerName,
    addresses: watch::Receiver<Vec<IpAddr>>,
}

impl Answerer {
    /// The answer records for `request`, or the error code to send instead.
    fn answer(&self, request: &Request) -> Result<Vec<Record>, ResponseCode> {
        if request.metadata.op_code != OpCode::Query {
            return Err(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Err(ResponseCode::BADVERS);
        }
        // Exactly one question (what every resolver sends); anything else is malformed.
        let [query] = request.queries.queries() else {
            return Err(ResponseCode::FormErr);
        };
        if *query.name() != self.name {
            return Err(ResponseCode::Refused);
        }
        if query.query_class() != DNSClass::IN {
            return Ok(Vec::new());
        }
        // The owner name as asked: resolvers that randomize the case (0x20) check it.
        let owner = query.original().name().clone();
        let addresses = self.addresses.borrow();
        Ok(records(&owner, query.query_type(), &addresses))
    }
}

/// The records of `addresses` that answer a `query_type` question for `owner`.
fn records(owner: &Name, query_type: RecordType, addresses: &[IpAddr]) -> Vec<Record> {
    let rdata = |address: &IpAddr| match (query_type, address) {
        (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
        (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
        _ => None,
    };
    addresses
        .iter()
        .filter_map(rdata)
        .map(|rdata| Record::from_rdata(owner.clone(), TTL, rdata))
        .collect()
}

/// The EDNS of a response to a request that had one (RFC 6891 requires it), with the
/// request's payload size, never below DNS's 512 bytes.
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(asked.max_payload().max(512));
    edns.set_version(0);
    Some(edns)
}

#[async_trait::async_trait]
impl RequestHandler for Answerer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answers = self.answer(request).unwrap_or_else(|code| {
            metadata.response_code = code;
            Vec::new()
        });
        // Authoritative for the name it serves: its answer, records or none, is the truth.
        metadata.authoritative = metadata.response_code == ResponseCode::NoError;
        let edns = response_edns(request);
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            [],
            [],
            [],
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                // The client is gone or not reading: nothing to retry.
                tracing::debug!(%error, src = %request.src(), "DNS response not sent");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use proxyfleet_state::{Target, UnixMillis};

    use super::*;

    const NODE_A: &str = "127.10.1.10";
    const NODE_C: &str = "127.10.2.10";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A snapshot with these targets of target group `tg`: (address, zone, state).
    fn snapshot(tg: &str, targets: &[(&str, &str, TargetHealth)]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let by_address: BTreeMap<SocketAddr, Target> = targets
            .iter()
            .map(|(address, zone, state)| {
                let address: SocketAddr = address.parse().unwrap();
                let target = Target {
                    target_group: tg.into(),
                    address,
                    zone: zone.to_string(),
                    instance: None,
                    state: *state,
                    since: UnixMillis(0),
                    nodes: BTreeMap::new(),
                    ever_healthy: false,
                };
                (address, target)
            })
            .collect();
        snapshot.targets.insert(tg.into(), by_address);
        snapshot
    }

    #[test]
    fn the_builtin_stack_has_one_node_per_zone() {
        // What the other tests rely on.
        let stack = proxyfleet_stack::builtin();
        let nodes: Vec<(String, IpAddr)> = stack.load_balancers[0]
            .nodes
            .iter()
            .map(|n| (n.zone.clone(), n.address))
            .collect();
        assert_eq!(
            nodes,
            vec![("a".into(), ip(NODE_A)), ("c".into(), ip(NODE_C))]
        );
        assert_eq!(stack.load_balancers[0].listeners[0].target_group, "proxies");
    }

    #[test]
    fn only_nodes_of_zones_with_a_healthy_target() {
        let stack = proxyfleet_stack::builtin();
        let s = snapshot(
            "proxies",
            &[
                ("127.10.1.11:3128", "a", TargetHealth::Unhealthy),
                ("127.10.2.11:3128", "c", TargetHealth::Healthy),
                ("127.10.2.12:3128", "c", TargetHealth::Unhealthy),
            ],
        );
        assert_eq!(healthy_node_addresses(&stack, &s), vec![ip(NODE_C)]);
    }

    #[test]
    fn every_zone_healthy_gives_every_node_sorted() {
        let stack = proxyfleet_stack::builtin();
        let s = snapshot(
            "proxies",
            &[
                ("127.10.2.11:3128", "c", TargetHealth::Healthy),
                ("127.10.1.11:3128", "a", TargetHealth::Healthy),
                ("127.10.1.12:3128", "a", TargetHealth::Healthy),
            ],
        );
        assert_eq!(
            healthy_node_addresses(&stack, &s),
            vec![ip(NODE_A), ip(NODE_C)]
        );
    }

    #[test]
    fn no_healthy_target_fails_open_to_every_node() {
        let stack = proxyfleet_stack::builtin();
        let all = vec![ip(NODE_A), ip(NODE_C)];
        assert_eq!(healthy_node_addresses(&stack, &Snapshot::default()), all);
        // Only Healthy counts: starting, draining and unused targets do not.
        let s = snapshot(
            "proxies",
            &[
                ("127.10.1.11:3128", "a", TargetHealth::Initial),
                ("127.10.1.12:3128", "a", TargetHealth::Draining),
                ("127.10.2.11:3128", "c", TargetHealth::Unused),
                ("127.10.2.12:3128", "c", TargetHealth::Unhealthy),
            ],
        );
        assert_eq!(healthy_node_addresses(&stack, &s), all);
    }

    #[test]
    fn targets_of_groups_the_balancer_does_not_forward_to_do_not_count() {
        let stack = proxyfleet_stack::builtin();
        let mut s = snapshot(
            "proxies",
            &[("127.10.1.11:3128", "a", TargetHealth::Healthy)],
        );
        let other = snapshot(
            "elsewhere",
            &[("127.10.2.11:3128", "c", TargetHealth::Healthy)],
        );
        s.targets.extend(other.targets);
        assert_eq!(healthy_node_addresses(&stack, &s), vec![ip(NODE_A)]);
    }

    #[test]
    fn a_healthy_target_in_a_zone_without_a_node_does_not_count() {
        let stack = proxyfleet_stack::builtin();
        let s = snapshot(
            "proxies",
            &[("127.10.3.11:3128", "b", TargetHealth::Healthy)],
        );
        assert_eq!(
            healthy_node_addresses(&stack, &s),
            vec![ip(NODE_A), ip(NODE_C)]
        );
    }

    #[test]
    fn each_balancer_counts_its_own_target_groups_and_shared_nodes_appear_once() {
        let mut stack = proxyfleet_stack::builtin();
        let mut second = stack.load_balancers[0].clone();
        second.name = "back".into();
        second.listeners[0].target_group = "others".into();
        second.nodes[0].address = ip("127.10.1.20");
        // Its zone-c node shares front's address: one answer, not two.
        stack.load_balancers.push(second);
        let mut s = snapshot(
            "proxies",
            &[("127.10.1.11:3128", "a", TargetHealth::Healthy)],
        );
        let others = snapshot(
            "others",
            &[
                ("127.10.1.21:3128", "a", TargetHealth::Healthy),
                ("127.10.2.21:3128", "c", TargetHealth::Healthy),
            ],
        );
        s.targets.extend(others.targets);
        // front: a only; back: a and c.
        assert_eq!(
            healthy_node_addresses(&stack, &s),
            vec![ip(NODE_A), ip("127.10.1.20"), ip(NODE_C)]
        );
    }

    #[test]
    fn names_parse_with_or_without_the_trailing_dot_in_any_case() {
        let expected = parse_name("proxies.example.").unwrap();
        assert_eq!(parse_name("proxies.example").unwrap(), expected);
        assert_eq!(parse_name("Proxies.EXAMPLE.").unwrap(), expected);
        assert!(parse_name("").is_err());
        assert!(parse_name(".").is_err());
    }

    #[test]
    fn records_answer_their_own_family_only() {
        let owner = Name::from_ascii("n.example.").unwrap();
        let addresses = [ip("127.10.1.10"), ip("::1")];
        let a = records(&owner, RecordType::A, &addresses);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].data, RData::A(A("127.10.1.10".parse().unwrap())));
        assert_eq!(a[0].ttl, TTL);
        let aaaa = records(&owner, RecordType::AAAA, &addresses);
        assert_eq!(aaaa.len(), 1);
        assert_eq!(aaaa[0].data, RData::AAAA(AAAA("::1".parse().unwrap())));
        assert!(records(&owner, RecordType::MX, &addresses).is_empty());
    }
}
