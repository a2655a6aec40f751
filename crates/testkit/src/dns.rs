//! A tiny authoritative DNS server on a loopback address, port 53 (UDP): it answers A queries
//! for the names it was given and NXDOMAIN for every other name, so name resolution is tested
//! for real without a query ever leaving the machine. Binding port 53 needs root.
//!
//! A name may also follow a script, one [`Answer`] per query (the last one repeats): a name
//! that fails first and then resolves, or that answers differently each time (DNS
//! rebinding). Every query is counted per name.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running server; stops when dropped.
pub struct DnsServer {
    pub ip: Ipv4Addr,
    /// Queries seen per name (lowercase, no trailing dot): all of them, and A queries.
    queries: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether this process may bind port 53.
pub fn can_bind_port_53() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// What one query for a scripted name gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These A records (several: a name with several addresses).
    Addresses(Vec<Ipv4Addr>),
    NxDomain,
    ServFail,
}

impl DnsServer {
    /// Starts on a fresh 127.53.x.y address (unique per process and call). A name listed
    /// several times has all of its addresses in one answer.
    pub fn start(names: &[(&str, Ipv4Addr)]) -> DnsServer {
        let mut script: Vec<(&str, Vec<Answer>)> = Vec::new();
        for (name, ip) in names {
            match script.iter_mut().find(|(n, _)| n == name) {
                Some((_, answers)) => match &mut answers[0] {
                    Answer::Addresses(ips) => ips.push(*ip),
                    _ => unreachable!("only addresses here"),
                },
                None => script.push((name, vec![Answer::Addresses(vec![*ip])])),
            }
        }
        Self::start_scripted(&script)
    }

    /// Starts with a script per name: query N of a name gets its Nth answer, the last one
    /// once the script is used up.
    pub fn start_scripted(script: &[(&str, Vec<Answer>)]) -> DnsServer {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::new(
            127,
            53,
            (std::process::id() % 250) as u8,
            (n % 250) as u8 + 1,
        );
        let socket =
            UdpSocket::bind((ip, 53)).unwrap_or_else(|e| panic!("cannot bind {ip}:53: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let names: HashMap<String, Vec<Answer>> = script
            .iter()
            .map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), a.clone()))
            .collect();
        let queries = Arc::new(Mutex::new(HashMap::new()));
        let queries_in = queries.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_in = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop_in.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..len], &names, &queries_in) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer {
            ip,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl DnsServer {
    /// How many queries (of any type) arrived for `name`.
    pub fn queries(&self, name: &str) -> usize {
        let queries = self.queries.lock().unwrap();
        queries.get(&name.to_ascii_lowercase()).map_or(0, |q| q.0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds the reply to one query (RFC 1035 §4.1), or `None` for a packet that is not one.
fn answer(
    query: &[u8],
    names: &HashMap<String, Vec<Answer>>,
    queries: &Mutex<HashMap<String, (usize, usize)>>,
) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    // The question: labels, then QTYPE and QCLASS.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let a_queries = {
        let mut queries = queries.lock().unwrap();
        let count = queries.entry(name.clone()).or_insert((0, 0));
        count.0 += 1;
        count.1 += usize::from(qtype == 1);
        count.1
    };
    // A queries step through the script (the resolver also asks AAAA, which follows the
    // latest A answer's outcome).
    let step = names
        .get(&name)
        .map(|script| &script[a_queries.saturating_sub(1).min(script.len() - 1)]);
    let (rcode, answers): (u8, Vec<Ipv4Addr>) = match step {
        None | Some(Answer::NxDomain) => (3, vec![]),
        Some(Answer::ServFail) => (2, vec![]),
        Some(Answer::Addresses(ips)) if qtype == 1 => (0, ips.clone()),
        Some(Answer::Addresses(_)) => (0, vec![]),
    };
    let mut reply = Vec::with_capacity(question_end + 16 * answers.len());
    reply.extend_from_slice(&query[0..2]); // ID
    reply.push(0x84 | (query[2] & 0x01)); // QR, AA, RD copied
    reply.push(rcode);
    reply.extend_from_slice(&[0, 1]); // QDCOUNT
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in answers {
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// One A query for `name` to `server` over UDP: the reply's response code and its A records
/// with their TTLs, or why there is none within `limit`. The drills' client resolver: a
/// stub like an app host's, which asks one server and moves on to the next when it is silent.
pub fn query_a(
    server: std::net::SocketAddr,
    name: &str,
    limit: Duration,
) -> Result<(u8, Vec<(Ipv4Addr, u32)>), String> {
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let id = (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff) as u16;
    let mut query = Vec::with_capacity(32 + name.len());
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A, class IN
    socket
        .send_to(&query, server)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("no answer from {server}: {e}"))?;
        let reply = &buf[..len];
        if from != server || len < 12 || reply[..2] != id.to_be_bytes() {
            continue; // not ours
        }
        return parse_a_reply(reply).ok_or_else(|| format!("malformed reply from {server}"));
    }
}

/// The response code and A records of a reply.
fn parse_a_reply(reply: &[u8]) -> Option<(u8, Vec<(Ipv4Addr, u32)>)> {
    let rcode = reply.get(3)? & 0x0f;
    let questions = u16::from_be_bytes([*reply.get(4)?, *reply.get(5)?]);
    let answers = u16::from_be_bytes([*reply.get(6)?, *reply.get(7)?]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(reply, at)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        at = skip_name(reply, at)?;
        let field = |i: usize| reply.get(at + i).copied();
        let kind = u16::from_be_bytes([field(0)?, field(1)?]);
        let ttl = u32::from_be_bytes([field(4)?, field(5)?, field(6)?, field(7)?]);
        let len = u16::from_be_bytes([field(8)?, field(9)?]) as usize;
        let data = reply.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            records.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]), ttl));
        }
        at += 10 + len;
    }
    Some((rcode, records))
}

/// Where the name starting at `at` ends (labels up to a root byte, or a compression pointer).
fn skip_name(reply: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *reply.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}
