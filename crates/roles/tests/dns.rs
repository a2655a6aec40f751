//! The tier's DNS name served for real on loopback (127.106.0.x): hickory-resolver, as the
//! proxies use it, follows the answer as it changes, over UDP and over TCP; hand-built queries
//! check what a resolver hides (the TTL, the authoritative flag, REFUSED, the case echoed).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use proxyfleet_roles::dns::{self, DnsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

const NAME: &str = "proxies.front.example";
/// Every wait on the server gives up after this.
const PATIENCE: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A server for [`NAME`] on 127.106.0.1, any port, answering `addresses` until the token is
/// cancelled.
async fn start(addresses: &[&str]) -> (DnsServer, watch::Sender<Vec<IpAddr>>, CancellationToken) {
    let (tx, rx) = watch::channel(addresses.iter().map(|a| ip(a)).collect());
    let stop = CancellationToken::new();
    let listen: SocketAddr = "127.106.0.1:0".parse().unwrap();
    let server = dns::serve(listen, NAME.into(), rx, stop.clone())
        .await
        .expect("binds");
    (server, tx, stop)
}

/// A resolver that asks only `server`, over `protocol` only. Fresh for each lookup, so no
/// cache stands between a change and the next answer.
fn resolver(server: &DnsServer, protocol: ProtocolConfig) -> TokioResolver {
    let mut connection = ConnectionConfig::new(protocol);
    connection.port = server.local_addr().port();
    let nameserver = NameServerConfig::new(server.local_addr().ip(), true, vec![connection]);
    let config = ResolverConfig::from_parts(None, vec![], vec![nameserver]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.timeout = Duration::from_secs(2);
    options.use_hosts_file = ResolveHosts::Never;
    builder.build().expect("a resolver")
}

/// The name's addresses as hickory-resolver finds them (empty on an error).
async fn resolve(server: &DnsServer, protocol: ProtocolConfig) -> BTreeSet<IpAddr> {
    match resolver(server, protocol).lookup_ip(NAME).await {
        Ok(found) => found.iter().collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Resolves until the answer is `expected`, or fails after [`PATIENCE`].
async fn resolve_until(server: &DnsServer, protocol: ProtocolConfig, expected: &[&str]) {
    let expected: BTreeSet<IpAddr> = expected.iter().map(|a| ip(a)).collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = resolve(server, protocol.clone()).await;
        if found == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{protocol:?}: still {found:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn query_message(name: &str, record_type: RecordType) -> Vec<u8> {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message.to_vec().unwrap()
}

/// One hand-built question over UDP; the response.
async fn ask_udp(server: &DnsServer, name: &str, record_type: RecordType) -> Message {
    let socket = UdpSocket::bind("127.106.0.2:0").await.unwrap();
    socket.connect(server.local_addr()).await.unwrap();
    socket
        .send(&query_message(name, record_type))
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let n = timeout(PATIENCE, socket.recv(&mut buffer))
        .await
        .expect("a UDP response in time")
        .unwrap();
    Message::from_vec(&buffer[..n]).unwrap()
}

/// One hand-built question over TCP (two-byte length prefix); the response.
async fn ask_tcp(server: &DnsServer, name: &str, record_type: RecordType) -> Message {
    let mut stream = timeout(PATIENCE, TcpStream::connect(server.local_addr()))
        .await
        .expect("connects in time")
        .unwrap();
    let query = query_message(name, record_type);
    let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await.unwrap();
    let read = async {
        let length = stream.read_u16().await.unwrap();
        let mut buffer = vec![0; usize::from(length)];
        stream.read_exact(&mut buffer).await.unwrap();
        buffer
    };
    let buffer = timeout(PATIENCE, read)
        .await
        .expect("a TCP response in time");
    Message::from_vec(&buffer).unwrap()
}

/// The response's answer addresses and TTLs, in its order.
fn answers(response: &Message) -> Vec<(IpAddr, u32)> {
    response
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(a) => (IpAddr::V4(a.0), record.ttl),
            RData::AAAA(aaaa) => (IpAddr::V6(aaaa.0), record.ttl),
            other => panic!("not an address: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_follows_the_answer_over_udp_and_tcp() {
    let (server, tx, stop) = start(&["127.10.1.10", "127.10.2.10"]).await;
    for protocol in [ProtocolConfig::Udp, ProtocolConfig::Tcp] {
        resolve_until(&server, protocol, &["127.10.1.10", "127.10.2.10"]).await;
    }
    tx.send_replace(vec![ip("127.10.2.10")]);
    for protocol in [ProtocolConfig::Udp, ProtocolConfig::Tcp] {
        resolve_until(&server, protocol, &["127.10.2.10"]).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_authoritative_with_a_one_second_ttl() {
    let (server, tx, stop) = start(&["127.10.1.10", "127.10.2.10", "fd00::10"]).await;
    let udp = ask_udp(&server, "proxies.front.example.", RecordType::A).await;
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert!(udp.metadata.authoritative);
    assert_eq!(udp.metadata.id, 4242);
    assert_eq!(
        answers(&udp),
        vec![(ip("127.10.1.10"), 1), (ip("127.10.2.10"), 1)]
    );
    let tcp = ask_tcp(&server, "proxies.front.example.", RecordType::AAAA).await;
    assert_eq!(tcp.metadata.response_code, ResponseCode::NoError);
    assert!(tcp.metadata.authoritative);
    assert_eq!(answers(&tcp), vec![(ip("fd00::10"), 1)]);
    // Each query reads the latest answer.
    tx.send_replace(vec![ip("127.10.1.10")]);
    let changed = ask_tcp(&server, "proxies.front.example.", RecordType::A).await;
    assert_eq!(answers(&changed), vec![(ip("127.10.1.10"), 1)]);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_matches_in_any_case_and_is_echoed_as_asked() {
    let (server, _tx, stop) = start(&["127.10.1.10"]).await;
    let response = ask_udp(&server, "PROXIES.Front.EXAMPLE.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&response), vec![(ip("127.10.1.10"), 1)]);
    assert_eq!(
        response.answers[0].name.to_ascii(),
        "PROXIES.Front.EXAMPLE."
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_types_are_empty_and_other_names_refused() {
    let (server, _tx, stop) = start(&["127.10.1.10"]).await;
    for response in [
        ask_udp(&server, "proxies.front.example.", RecordType::MX).await,
        ask_tcp(&server, "proxies.front.example.", RecordType::TXT).await,
        // No IPv6 node: an AAAA question has no records, and still NOERROR.
        ask_udp(&server, "proxies.front.example.", RecordType::AAAA).await,
    ] {
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert!(response.answers.is_empty());
    }
    for name in [
        "example.com.",
        "front.example.",
        "x.proxies.front.example.",
        "proxies.front.example.com.",
    ] {
        for response in [
            ask_udp(&server, name, RecordType::A).await,
            ask_tcp(&server, name, RecordType::A).await,
        ] {
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(!response.metadata.authoritative, "{name}");
            assert!(response.answers.is_empty(), "{name}");
        }
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_frees_its_port() {
    let (server, _tx, stop) = start(&["127.10.1.10"]).await;
    let addr = server.local_addr();
    stop.cancel();
    // Rebinding the same address succeeds once both sockets are closed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_tx, rx) = watch::channel(vec![]);
        let again = CancellationToken::new();
        match dns::serve(addr, NAME.into(), rx, again.clone()).await {
            Ok(_) => {
                again.cancel();
                return;
            }
            Err(e) => assert!(Instant::now() < deadline, "{addr} still taken: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_invalid_name_is_an_error_not_a_server() {
    let (_tx, rx) = watch::channel(vec![]);
    let listen: SocketAddr = "127.106.0.1:0".parse().unwrap();
    let error = dns::serve(listen, String::new(), rx, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
