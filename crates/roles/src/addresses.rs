//! Addresses that move between hosts: a zone's load-balancer node address (taken over by a
//! surviving host when its own is lost, like keepalived's virtual IP) and each proxy
//! instance's own address, added to one of this host's interfaces before anything binds it.
//!
//! Adding an address is not enough when it moves: the neighbours on the segment still map it
//! to the lost host's MAC until their ARP entries expire (minutes). So [`Interface::add`] also
//! *announces* it — gratuitous ARP from this interface's MAC — and repeats that for a while,
//! because Linux ignores an update for a neighbour entry changed within its `locktime` (1 s by
//! default).
//!
//! The addresses are changed with iproute2's `ip` rather than through netlink (`rtnetlink`):
//! `ip` is on every host this runs on, its few commands need no async netlink machinery and no
//! dependency whose API changes every release, and its messages (with the command that failed)
//! are what an operator would type to look into it. The ARP frame is built by hand on an
//! `AF_PACKET` socket: it is 28 bytes, and no maintained crate sends one without pulling in a
//! whole packet library (pnet and the like).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

/// When the gratuitous ARPs go out, from the first: five, like keepalived, the later ones
/// after a neighbour's `locktime` (1 s) has passed since anything else changed its entry.
const ANNOUNCE_AT: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(700),
    Duration::from_millis(1500),
];

/// Adds and removes this host's addresses on one interface.
///
/// Calls are made from the network namespace the interface is in (the `ip` commands and the
/// ARP socket act in the calling thread's namespace).
pub struct Interface {
    name: String,
    /// The announcements still repeating, by address: [`remove`](Interface::remove) stops its
    /// address's, so that this host never claims an address it has given up. (Dropping the
    /// `Interface` leaves them running: they are short.)
    announcing: Arc<Mutex<HashMap<Ipv4Addr, AbortHandle>>>,
}

impl Interface {
    pub fn new(name: &str) -> Interface {
        Interface {
            name: name.to_owned(),
            announcing: Arc::default(),
        }
    }

    /// Makes the ARP requests this host sends on the interface carry its primary address,
    /// never an address that moves (`arp_announce = 2`, what LVS and keepalived setups set):
    /// by default Linux puts the packet's source there, so a host still draining a node
    /// address it handed over would, asking for a client's MAC, point that client back at
    /// itself. The setting is per network namespace, like the interface.
    pub fn prefer_primary_in_arp(&self) -> io::Result<()> {
        // The kernel uses the larger of `all` and the interface's value: the interface's
        // alone is enough, and leaves the host's other interfaces as they were.
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/arp_announce", self.name),
            "2",
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `ip/32` to the interface unless it already has `ip`. It is not announced here:
    /// the caller [`announce`](Interface::announce)s it once something listens on it (a
    /// node's listener), so that no neighbour is sent here before a connection can be taken.
    /// A /32 adds no prefix route; IPv4 has no duplicate address detection to turn off.
    /// IPv4 only for now.
    pub async fn add(&self, ip: IpAddr) -> io::Result<()> {
        let v4 = ipv4_only(ip, "add")?;
        if self.prefix_of(v4).await?.is_none() {
            let address = format!("{v4}/32");
            match self
                .ip(&["-4", "addr", "add", &address, "dev", &self.name])
                .await
            {
                // Added meanwhile by someone else: present, as asked.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Removes `ip/32` from the interface (nothing if it is absent), first stopping its
    /// announcements. An `ip` the interface has with another prefix was not added here and is
    /// left alone: that is an error.
    pub async fn remove(&self, ip: IpAddr) -> io::Result<()> {
        let v4 = ipv4_only(ip, "remove")?;
        if let Some(announcing) = self.announcing.lock().unwrap().remove(&v4) {
            announcing.abort();
        }
        match self.prefix_of(v4).await? {
            None => Ok(()),
            Some(32) => {
                let address = format!("{v4}/32");
                match self
                    .ip(&["-4", "addr", "del", &address, "dev", &self.name])
                    .await
                {
                    // Removed meanwhile by someone else: absent, as asked.
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => Ok(()),
                    other => other.map(drop),
                }
            }
            Some(prefix) => Err(io::Error::other(format!(
                "not removing {v4} from {}: it is configured there as {v4}/{prefix}, not as \
                 a moving /32 address",
                self.name
            ))),
        }
    }

    /// Whether the interface has `ip` now (with any prefix).
    pub async fn has(&self, ip: IpAddr) -> io::Result<bool> {
        let v4 = ipv4_only(ip, "look up")?;
        Ok(self.prefix_of(v4).await?.is_some())
    }

    /// Sends gratuitous ARP for `ip` from this interface's MAC, at each of `ANNOUNCE_AT` (0 to
    /// 1.5 s): the first before returning (its error is returned), the others from a spawned
    /// task (their errors are logged). A new announcement of `ip` replaces one still repeating.
    ///
    /// Must be called within a Tokio runtime.
    pub fn announce(&self, ip: Ipv4Addr) -> io::Result<()> {
        let socket = ArpSocket::open(&self.name)?;
        socket.send_gratuitous(ip)?;
        let name = self.name.clone();
        let repeats = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for at in &ANNOUNCE_AT[1..] {
                tokio::time::sleep_until(start + *at).await;
                if let Err(e) = socket.send_gratuitous(ip) {
                    tracing::warn!(error = %e, interface = %name, %ip, "gratuitous ARP not sent");
                }
            }
        });
        let earlier = self
            .announcing
            .lock()
            .unwrap()
            .insert(ip, repeats.abort_handle());
        if let Some(earlier) = earlier {
            earlier.abort();
        }
        Ok(())
    }

    /// The prefix length `ip` has on the interface, if it has it.
    async fn prefix_of(&self, ip: Ipv4Addr) -> io::Result<Option<u8>> {
        let listing = self
            .ip(&["-4", "-o", "addr", "show", "dev", &self.name])
            .await?;
        Ok(parse_prefix_of(&listing, ip))
    }

    /// Runs `ip ARGS` ([`crate::commands::ip`]), its error naming this interface.
    async fn ip(&self, args: &[&str]) -> io::Result<String> {
        crate::commands::ip(args)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (interface {})", self.name)))
    }
}

/// `ip` if it is IPv4 (what moving addresses, probes and return routes handle).
pub(crate) fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn ipv4_only(ip: IpAddr, what: &str) -> io::Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(v6) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot {what} {v6}: moving addresses are IPv4 only for now"),
        )),
    }
}

/// The prefix of `ip` in `ip -4 -o addr show` output: lines like
/// `2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0 ...` (a point-to-point
/// address reads `inet 10.0.0.1 peer 10.0.0.2/32`: the local one has no prefix, so /32).
fn parse_prefix_of(listing: &str, ip: Ipv4Addr) -> Option<u8> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "inet")?;
        let word = words.next()?;
        let (address, prefix) = match word.split_once('/') {
            Some((address, prefix)) => (address, prefix.parse().ok()?),
            None => (word, 32),
        };
        (address.parse::<Ipv4Addr>().ok()? == ip).then_some(prefix)
    })
}

/// An `AF_PACKET` datagram socket for ARP on one interface: the kernel adds the Ethernet
/// header for the destination it is given. [`open`](ArpSocket::open)ed, it receives nothing;
/// [`listening`](ArpSocket::listening), every ARP frame the interface sees.
pub(crate) struct ArpSocket {
    fd: OwnedFd,
    ifindex: i32,
    pub(crate) mac: [u8; 6],
}

impl AsRawFd for ArpSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl ArpSocket {
    /// Opens a socket that sends only (see [`ArpSocket::open_for`]).
    fn open(interface: &str) -> io::Result<ArpSocket> {
        ArpSocket::open_for(interface, 0)
    }

    /// Opens a non-blocking socket bound to the interface that receives its ARP frames, in
    /// and out ([`ArpSocket::recv`] tells them apart).
    pub(crate) fn listening(interface: &str) -> io::Result<ArpSocket> {
        let socket = ArpSocket::open_for(interface, libc::ETH_P_ARP as u16)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value, filled in below.
        let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        at.sll_family = libc::AF_PACKET as u16;
        at.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        at.sll_ifindex = socket.ifindex;
        // SAFETY: the address is valid for the length given, for the call.
        let bound = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&at as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen for ARP on interface {interface}: {e}"),
            ));
        }
        Ok(socket)
    }

    /// Opens the socket in the calling thread's network namespace and looks the interface up
    /// through it: its index and MAC come from the kernel by ioctl, not from
    /// `/sys/class/net`, which shows the namespace sysfs was mounted in, not necessarily the
    /// caller's. `protocol`: what it receives (0: nothing).
    fn open_for(interface: &str, protocol: u16) -> io::Result<ArpSocket> {
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot open an ARP socket on interface {interface}: {e}"),
            )
        };
        // SAFETY: socket(2) takes plain integers; the descriptor it returns is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(protocol.to_be()),
            )
        };
        if raw < 0 {
            return Err(context(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: both requests only fill the `ifreq`, and each reads back the union field
        // its request fills.
        let (ifindex, hwaddr) = unsafe {
            let index = ifreq_ioctl(&fd, interface, libc::SIOCGIFINDEX).map_err(context)?;
            let hwaddr = ifreq_ioctl(&fd, interface, libc::SIOCGIFHWADDR).map_err(context)?;
            (index.ifr_ifru.ifru_ifindex, hwaddr.ifr_ifru.ifru_hwaddr)
        };
        if hwaddr.sa_family != libc::ARPHRD_ETHER {
            return Err(context(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "not an Ethernet interface (hardware type {})",
                    hwaddr.sa_family
                ),
            )));
        }
        let mut mac = [0; 6];
        for (byte, c) in mac.iter_mut().zip(hwaddr.sa_data) {
            *byte = c as u8;
        }
        Ok(ArpSocket { fd, ifindex, mac })
    }

    /// Sends one gratuitous ARP request for `ip` (sender and target address both `ip`) to the
    /// Ethernet broadcast address. A request rather than a reply: every neighbour processes a
    /// broadcast request, and Linux updates an existing entry from it.
    fn send_gratuitous(&self, ip: Ipv4Addr) -> io::Result<()> {
        self.broadcast(&arp_request(self.mac, ip), "gratuitous ARP", ip)
    }

    /// Sends an ARP probe for `ip` (RFC 5227: sender address zero, so that no neighbour
    /// learns anything from it): a host that has `ip` answers it.
    pub(crate) fn send_probe(&self, ip: Ipv4Addr) -> io::Result<()> {
        self.broadcast(&arp_probe(self.mac, ip), "an ARP probe", ip)
    }

    /// Whether the interface is up with its link (`IFF_RUNNING`: carrier).
    pub(crate) fn carrier(&self, interface: &str) -> io::Result<bool> {
        // SAFETY: SIOCGIFFLAGS fills only the `ifreq`'s flags.
        let req = unsafe { ifreq_ioctl(&self.fd, interface, libc::SIOCGIFFLAGS)? };
        // SAFETY: SIOCGIFFLAGS fills the flags field of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        Ok(flags & up == up)
    }

    /// The next ARP frame another host sent on the interface, if one is waiting
    /// (`WouldBlock` when none is); `None` for a frame that was this host's own or not ARP
    /// over Ethernet for IPv4.
    pub(crate) fn recv(&self) -> io::Result<Option<SeenArp>> {
        let mut frame = [0u8; 64];
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value, filled by the kernel.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the buffer and the address are valid for the lengths given, for the call.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                frame.as_mut_ptr().cast(),
                frame.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Outgoing: this host's own. Another interface's: bound to this one, the socket
        // still heard every interface until the bind.
        if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_ifindex != self.ifindex {
            return Ok(None);
        }
        Ok(SeenArp::parse(&frame[..n as usize]).filter(|seen| seen.sender_mac != self.mac))
    }

    fn broadcast(&self, frame: &[u8; 28], what: &str, ip: Ipv4Addr) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value, filled in below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: the buffer and the address are valid for the lengths given, for the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot send {what} for {ip} (ifindex {}): {e}",
                    self.ifindex
                ),
            ));
        }
        Ok(())
    }
}

/// Runs an interface ioctl (`SIOCGIF*`) for `interface` on `fd`: the filled `ifreq`.
///
/// # Safety
/// `request` must be one that reads or writes nothing beyond the `ifreq` itself.
unsafe fn ifreq_ioctl(
    fd: &OwnedFd,
    interface: &str,
    request: libc::c_ulong,
) -> io::Result<libc::ifreq> {
    let name = CString::new(interface)
        .ok()
        .filter(|n| n.as_bytes_with_nul().len() <= libc::IFNAMSIZ)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {interface:?}"),
            )
        })?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (c, byte) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *c = *byte as libc::c_char;
    }
    // SAFETY: `req` outlives the call and, by the caller's promise, is all the kernel touches.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("ioctl {request:#x}: {e}")));
    }
    Ok(req)
}

/// An ARP request (RFC 826) over Ethernet for IPv4, gratuitous: it asks for `ip` on behalf of
/// `ip`, so every neighbour that knows `ip` learns `mac` for it; the target MAC is unknown
/// (zero), as in any request.
fn arp_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut frame = [0; 28];
    frame[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    frame[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    frame[4] = 6; // hardware address length
    frame[5] = 4; // protocol address length
    frame[6..8].copy_from_slice(&1u16.to_be_bytes()); // opcode: request
    frame[8..14].copy_from_slice(&mac); // sender MAC
    frame[14..18].copy_from_slice(&ip.octets()); // sender IP
                                                 // 18..24: target MAC, zero
    frame[24..28].copy_from_slice(&ip.octets()); // target IP
    frame
}

/// An ARP probe (RFC 5227 §2.1.1): a request for `ip` from `mac` with sender address zero.
fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut frame = arp_request(mac, ip);
    frame[14..18].copy_from_slice(&[0; 4]);
    frame
}

/// An ARP frame (request or reply) another host sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenArp {
    pub sender_mac: [u8; 6],
    /// Zero in a probe.
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl SeenArp {
    /// Ethernet/IPv4 ARP (RFC 826) only: anything else is `None`.
    fn parse(frame: &[u8]) -> Option<SeenArp> {
        if frame.len() < 28 || frame[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
        Some(SeenArp {
            sender_mac: frame[8..14].try_into().ok()?,
            sender_ip: ip(14),
            target_ip: ip(24),
        })
    }

    /// Whether this frame shows another host having `ip` (it sent from it), or — `probing`
    /// too — wanting it (its own probe for it: both would take it otherwise).
    pub fn claims(&self, ip: Ipv4Addr, probing: bool) -> bool {
        self.sender_ip == ip || (probing && self.sender_ip.is_unspecified() && self.target_ip == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_prefix_of_an_address() {
        let listing = "\
2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever
2: eth0    inet 198.18.200.50/32 scope global eth0\\       valid_lft forever
3: tun0    inet 10.8.0.1 peer 10.8.0.2/32 scope global tun0\\       valid_lft forever
";
        assert_eq!(
            parse_prefix_of(listing, "10.0.0.5".parse().unwrap()),
            Some(24)
        );
        assert_eq!(
            parse_prefix_of(listing, "198.18.200.50".parse().unwrap()),
            Some(32)
        );
        assert_eq!(
            parse_prefix_of(listing, "10.8.0.1".parse().unwrap()),
            Some(32)
        );
        assert_eq!(parse_prefix_of(listing, "10.8.0.2".parse().unwrap()), None);
        assert_eq!(parse_prefix_of(listing, "10.0.0.50".parse().unwrap()), None);
        assert_eq!(parse_prefix_of("", "10.0.0.5".parse().unwrap()), None);
    }

    #[test]
    fn builds_a_gratuitous_arp_request() {
        let frame = arp_request([2, 0, 0, 0, 0, 9], Ipv4Addr::new(198, 18, 200, 50));
        assert_eq!(
            frame,
            [
                0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, 6, 4, request
                2, 0, 0, 0, 0, 9, 198, 18, 200, 50, // sender
                0, 0, 0, 0, 0, 0, 198, 18, 200, 50, // target
            ]
        );
    }

    #[test]
    fn reads_probes_and_claims() {
        let ip = Ipv4Addr::new(198, 18, 200, 50);
        let probe = SeenArp::parse(&arp_probe([2, 0, 0, 0, 0, 9], ip)).unwrap();
        assert_eq!(probe.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(probe.target_ip, ip);
        assert!(
            probe.claims(ip, true),
            "another host probing for it while we probe"
        );
        assert!(
            !probe.claims(ip, false),
            "a probe is no claim on an address held"
        );
        let announce = SeenArp::parse(&arp_request([2, 0, 0, 0, 0, 9], ip)).unwrap();
        assert!(announce.claims(ip, false));
        assert!(!announce.claims(Ipv4Addr::new(198, 18, 200, 51), true));
        assert_eq!(SeenArp::parse(&[0; 27]), None, "short");
        let mut not_ipv4 = arp_request([2, 0, 0, 0, 0, 9], ip);
        not_ipv4[2] = 0x86;
        assert_eq!(SeenArp::parse(&not_ipv4), None);
    }

    #[tokio::test]
    async fn ipv6_is_refused_saying_so() {
        let e = Interface::new("lo")
            .add("2001:db8::1".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }
}
