//! A tiny authoritative DNS server on a loopback address, port 53 (UDP): it answers A queries
//! for the names it was given and NXDOMAIN for every other name, so name resolution is tested
//! for real without a query ever leaving the machine. Binding port 53 needs root.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running server; stops when dropped.
pub struct DnsServer {
    pub ip: Ipv4Addr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether this process may bind port 53.
pub fn can_bind_port_53() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static NEXT: AtomicU32 = AtomicU32::new(1);

impl DnsServer {
    /// Starts on a fresh 127.53.x.y address (unique per process and call).
    pub fn start(names: &[(&str, Ipv4Addr)]) -> DnsServer {
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
        let names: HashMap<String, Ipv4Addr> = names
            .iter()
            .map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), *a))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_in = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop_in.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..len], &names) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer {
            ip,
            stop,
            thread: Some(thread),
        }
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
fn answer(query: &[u8], names: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
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
    let found = names.get(&name);
    let answers: Vec<Ipv4Addr> = match (found, qtype) {
        (Some(ip), 1) => vec![*ip],
        _ => vec![],
    };
    let rcode = if found.is_some() { 0 } else { 3 };
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
