//! What the hosts' segment says, by ARP: [`ArpWitness`] probes for addresses (RFC 5227) and
//! hears other hosts' frames; [`ClaimWatch`] remembers, for a while, which addresses other
//! hosts have sent from — the quickest sign that a node address handed over has been taken
//! up (the new holder's gratuitous ARP), quicker than its report through the store.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use crate::addresses::{ArpSocket, Interface, SeenArp};

/// Probes per address, this far apart; then [`PROBE_WAIT`] for late answers. A neighbour on
/// the segment answers within a millisecond; the margin is for a loaded host.
const PROBES: u32 = 3;
const PROBE_GAP: Duration = Duration::from_millis(50);
const PROBE_WAIT: Duration = Duration::from_millis(150);
/// The segment's ARP, heard from one interface.
pub(crate) struct ArpWitness {
    socket: AsyncFd<ArpSocket>,
    interface: String,
}

impl ArpWitness {
    /// Must be called within a Tokio runtime, in the interface's network namespace.
    pub(crate) fn open(interface: &str) -> io::Result<ArpWitness> {
        let socket = ArpSocket::listening(interface)?;
        // SAFETY: the socket owns its descriptor, which stays open (and the same) until the
        // `AsyncFd` drops it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ArpWitness {
            socket,
            interface: interface.to_owned(),
        })
    }

    pub(crate) fn carrier(&self) -> bool {
        self.socket
            .get_ref()
            .carrier(&self.interface)
            .unwrap_or(false)
    }

    /// The next ARP frame from another host. Cancel-safe.
    pub(crate) async fn next(&self) -> io::Result<SeenArp> {
        loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|s| s.get_ref().recv()) {
                Ok(Ok(Some(seen))) => return Ok(seen),
                Ok(Ok(None)) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// One round of probes: which of `wanted` nobody on the segment answers for, and which
    /// of `held` (addresses this host serves) another host answers for too. Each address is
    /// probed [`PROBES`] times; a wanted one counts as someone's once any host sends from it
    /// — or probes for it too, unless it is one of `home`'s (this host's own zone's nodes:
    /// another host probing for one of them is a stand-in, which gives way to the zone's own
    /// host). A held one is contested once another host sends from it (a probe is no claim
    /// on an address held).
    pub(crate) async fn probe(
        &self,
        wanted: &[Ipv4Addr],
        home: &[Ipv4Addr],
        held: &[Ipv4Addr],
    ) -> io::Result<(Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
        let mut claimed = vec![false; wanted.len()];
        let mut contested = vec![false; held.len()];
        for round in 0..=PROBES {
            if round < PROBES {
                for (ip, _) in wanted.iter().zip(&claimed).filter(|(_, c)| !**c) {
                    self.socket.get_ref().send_probe(*ip)?;
                }
                for (ip, _) in held.iter().zip(&contested).filter(|(_, c)| !**c) {
                    self.socket.get_ref().send_probe(*ip)?;
                }
            }
            let until = Instant::now()
                + if round < PROBES {
                    PROBE_GAP
                } else {
                    PROBE_WAIT
                };
            while let Ok(seen) = tokio::time::timeout_at(until.into(), self.next()).await {
                let seen = seen?;
                for (ip, c) in wanted.iter().zip(claimed.iter_mut()) {
                    if !*c && seen.claims(*ip, !home.contains(ip)) {
                        tracing::debug!(%ip, ?seen, "answered for, or wanted, by another host");
                        *c = true;
                    }
                }
                for (ip, c) in held.iter().zip(contested.iter_mut()) {
                    *c |= seen.claims(*ip, false);
                }
            }
        }
        let pick = |ips: &[Ipv4Addr], flags: &[bool], want: bool| {
            ips.iter()
                .zip(flags)
                .filter(|(_, f)| **f == want)
                .map(|(ip, _)| *ip)
                .collect::<Vec<_>>()
        };
        Ok((pick(wanted, &claimed, false), pick(held, &contested, true)))
    }
}

/// Which of the node addresses other hosts on the segment have sent ARP from, and when last
/// (only these, and only for [`REMEMBER`]: a host sending from random addresses costs
/// nothing). While it cannot listen (the interface went away), [`ClaimWatch::listening`] is
/// false and callers go by the store alone.
#[derive(Clone)]
pub(crate) struct ClaimWatch {
    seen: Arc<Mutex<HashMap<Ipv4Addr, Instant>>>,
    listening: Arc<AtomicBool>,
}

/// How long a sender is remembered: longer than any hand-over (`holding`'s release limit).
const REMEMBER: Duration = Duration::from_secs(10);
/// After a receive error (the interface down, say), the socket is opened again this often.
const REOPEN: Duration = Duration::from_secs(1);

impl ClaimWatch {
    /// Listens on `interface` for `addresses` until `stop`, opening the socket again after
    /// errors. Must be called within a Tokio runtime, in the interface's network namespace.
    pub(crate) fn start(
        interface: &Interface,
        addresses: Vec<Ipv4Addr>,
        stop: CancellationToken,
    ) -> io::Result<ClaimWatch> {
        let mut witness = Some(ArpWitness::open(interface.name())?);
        let watch = ClaimWatch {
            seen: Arc::default(),
            listening: Arc::new(AtomicBool::new(true)),
        };
        let (seen, listening) = (watch.seen.clone(), watch.listening.clone());
        let name = interface.name().to_owned();
        tokio::spawn(async move {
            loop {
                let Some(w) = &witness else {
                    tokio::select! {
                        () = tokio::time::sleep(REOPEN) => {}
                        () = stop.cancelled() => return,
                    }
                    witness = ArpWitness::open(&name).ok();
                    if witness.is_some() {
                        tracing::info!("listening to the segment's ARP again");
                        listening.store(true, Ordering::Relaxed);
                    }
                    continue;
                };
                let frame = tokio::select! {
                    f = w.next() => f,
                    () = stop.cancelled() => return,
                };
                match frame {
                    Ok(f) if addresses.contains(&f.sender_ip) => {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        seen.retain(|_, at| at.elapsed() < REMEMBER);
                        seen.insert(f.sender_ip, Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen to the segment's ARP: hand-overs go by the store's reports until it can again");
                        listening.store(false, Ordering::Relaxed);
                        witness = None;
                    }
                }
            }
        });
        Ok(watch)
    }

    /// Whether frames are being heard (else a claim cannot be seen).
    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Whether another host has sent from `ip` since `since`.
    pub(crate) fn claimed_since(&self, ip: Ipv4Addr, since: Instant) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .is_some_and(|at| *at >= since)
    }
}
