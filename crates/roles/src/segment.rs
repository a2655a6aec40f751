//! What the hosts' segment says, by ARP: [`ArpWitness`] probes for addresses (RFC 5227) and
//! hears other hosts' frames; [`ClaimWatch`] remembers, for a while, which addresses other
//! hosts have sent from — the quickest sign that a node address handed over has been taken
//! up (the new holder's gratuitous ARP), quicker than its report through the store.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
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
    pub(crate) fn open(interface: &Interface) -> io::Result<ArpWitness> {
        let socket = ArpSocket::listening(interface.name())?;
        // SAFETY: the socket owns its descriptor, which stays open (and the same) until the
        // `AsyncFd` drops it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ArpWitness {
            socket,
            interface: interface.name().to_owned(),
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

    /// Which of `ips` nobody on the segment answers for: each probed [`PROBES`] times, an
    /// address counted as someone's once any host sends from it — or probes for it too,
    /// unless it is one of `home`'s (this host's own zone's nodes: another host probing for
    /// one of them is a stand-in, which gives way to the zone's own host).
    pub(crate) async fn unclaimed(
        &self,
        ips: &[Ipv4Addr],
        home: &[Ipv4Addr],
    ) -> io::Result<Vec<Ipv4Addr>> {
        let mut claimed = vec![false; ips.len()];
        for round in 0..=PROBES {
            if round < PROBES {
                for (ip, _) in ips.iter().zip(&claimed).filter(|(_, c)| !**c) {
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
                for (ip, c) in ips.iter().zip(claimed.iter_mut()) {
                    if !*c && seen.claims(*ip, !home.contains(ip)) {
                        tracing::debug!(%ip, ?seen, "answered for, or wanted, by another host");
                        *c = true;
                    }
                }
            }
        }
        Ok(ips
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| !**c)
            .map(|(ip, _)| *ip)
            .collect())
    }
}

/// Which addresses other hosts on the segment have sent ARP from, and when last.
#[derive(Clone, Default)]
pub(crate) struct ClaimWatch {
    seen: Arc<Mutex<HashMap<Ipv4Addr, Instant>>>,
}

impl ClaimWatch {
    /// Listens on `interface` until `stop`. Must be called within a Tokio runtime, in the
    /// interface's network namespace.
    pub(crate) fn start(interface: &Interface, stop: CancellationToken) -> io::Result<ClaimWatch> {
        let witness = ArpWitness::open(interface)?;
        let watch = ClaimWatch::default();
        let seen = watch.seen.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    f = witness.next() => f,
                    () = stop.cancelled() => return,
                };
                match frame {
                    Ok(f) if !f.sender_ip.is_unspecified() => {
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(f.sender_ip, Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped listening to the segment's ARP");
                        return;
                    }
                }
            }
        });
        Ok(watch)
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
