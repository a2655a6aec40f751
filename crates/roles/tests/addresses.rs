//! Moving addresses for real, between two network namespaces joined by a veth pair (A and B,
//! 198.18.200.1/24 and .2/24, no route out): the agent's side runs in A, a neighbour in B.
//! Nothing is made in the root namespace; the namespaces go when the test ends, even when it
//! fails. Without root: `SKIPPED`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use proxyfleet_roles::addresses::Interface;

const MOVING: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 50);

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("SKIPPED: needs root (network namespaces)");
    }
    root
}

/// Runs `ip ARGS`, which must succeed: its stdout.
fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "`ip {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; deleted (with the pair) on drop.
struct Pair {
    a: String,
    b: String,
    veth_a: String,
    veth_b: String,
    made: Vec<String>,
}

impl Pair {
    /// Names unique to this process and test (`tag`); interface names stay within 15 bytes.
    fn new(tag: char) -> Pair {
        let base = format!("pfa{}{tag}", std::process::id());
        let mut pair = Pair {
            a: format!("{base}a"),
            b: format!("{base}b"),
            veth_a: format!("{base}x"),
            veth_b: format!("{base}y"),
            made: Vec::new(),
        };
        for ns in [pair.a.clone(), pair.b.clone()] {
            ip(&["netns", "add", &ns]);
            pair.made.push(ns);
        }
        let (a, b, va, vb) = (&pair.a, &pair.b, &pair.veth_a, &pair.veth_b);
        // Made inside A with its peer in B: the pair never exists in the root namespace.
        ip(&[
            "-n", a, "link", "add", va, "type", "veth", "peer", "name", vb, "netns", b,
        ]);
        for (ns, veth, address) in [(a, va, "198.18.200.1/24"), (b, vb, "198.18.200.2/24")] {
            ip(&["-n", ns, "addr", "add", address, "dev", veth]);
            ip(&["-n", ns, "link", "set", veth, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// A's MAC, as B should learn it.
    fn mac_a(&self) -> String {
        let link = ip(&["-n", &self.a, "-o", "link", "show", &self.veth_a]);
        let mut words = link.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .expect("an Ethernet link");
        words.next().expect("a MAC").to_owned()
    }

    /// B's neighbour entry for `ip` (e.g. `198.18.200.50 lladdr 02:… STALE`), or "".
    fn neighbour_in_b(&self, ip: Ipv4Addr) -> String {
        let ip = ip.to_string();
        self::ip(&["-n", &self.b, "neigh", "show", &ip, "dev", &self.veth_b])
            .trim()
            .to_owned()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in &self.made {
            // Deleting a namespace deletes its end of the pair, and so the pair.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `work` on a thread of its own in namespace `ns`: what it opens (sockets) or spawns
/// (`ip`) is in `ns`.
fn in_netns<T: Send + 'static>(ns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns(2) takes a descriptor, open for the call, and a flag; it moves only
        // this thread, which ends after `work`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// As [`in_netns`], for async work, on a runtime of that thread's own.
fn in_netns_async<T: Send + 'static, F: std::future::Future<Output = T>>(
    ns: &str,
    work: impl FnOnce() -> F + Send + 'static,
) -> T {
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
}

#[test]
fn add_has_remove_round_trip() {
    if !is_root() {
        return;
    }
    let pair = Pair::new('r');
    let veth = pair.veth_a.clone();
    let listing = in_netns_async(&pair.a, move || async move {
        let iface = Interface::new(&veth);
        let moving = IpAddr::V4(MOVING);
        assert!(!iface.has(moving).await.unwrap());
        iface.add(moving).await.unwrap();
        assert!(iface.has(moving).await.unwrap());
        iface.add(moving).await.expect("adding again is nothing");
        let listing = ip(&["-4", "-o", "addr", "show", "dev", &veth]);
        iface.remove(moving).await.unwrap();
        assert!(!iface.has(moving).await.unwrap());
        iface
            .remove(moving)
            .await
            .expect("removing again is nothing");

        // The namespace's own address is not a moving one: left alone, saying why.
        let own = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1));
        let e = iface.remove(own).await.unwrap_err();
        assert!(e.to_string().contains("/24"), "{e}");
        assert!(iface.has(own).await.unwrap());

        // Errors say what and where.
        let e = Interface::new("pfanone0").add(moving).await.unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("ip -4 -o addr show dev pfanone0"),
            "{message}"
        );
        assert!(message.contains("does not exist"), "{message}");
        listing
    });
    let entries = listing.matches("198.18.200.50/32").count();
    assert_eq!(entries, 1, "one /32 entry after adding twice:\n{listing}");
}

#[test]
fn announcing_moves_a_neighbours_entry() {
    if !is_root() {
        return;
    }
    let pair = Pair::new('g');
    let moving = MOVING.to_string();
    // B still maps the address to the host that had it before.
    ip(&[
        "-n",
        &pair.b,
        "neigh",
        "replace",
        &moving,
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        &pair.veth_b,
        "nud",
        "stale",
    ]);
    assert!(pair.neighbour_in_b(MOVING).contains("02:00:00:00:00:01"));
    let mac_a = pair.mac_a();

    let veth = pair.veth_a.clone();
    let (b, veth_b, wanted) = (pair.b.clone(), pair.veth_b.clone(), mac_a.clone());
    let (seen, took) = in_netns_async(&pair.a, move || async move {
        let iface = Interface::new(&veth);
        let start = Instant::now();
        iface.add(IpAddr::V4(MOVING)).await.unwrap();
        iface.announce(MOVING).unwrap();
        // Polled while this runtime keeps the repeated announcements going.
        let deadline = start + Duration::from_secs(2);
        loop {
            let seen = ip(&[
                "-n",
                &b,
                "neigh",
                "show",
                &MOVING.to_string(),
                "dev",
                &veth_b,
            ]);
            if seen.contains(&wanted) || Instant::now() >= deadline {
                return (seen, start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        seen.contains(&mac_a),
        "B's entry for {MOVING} still {seen:?} after {took:?}, not A's MAC {mac_a}"
    );
    println!("B's entry pointed at A after {took:?}: {}", seen.trim());
}

#[test]
fn an_added_address_takes_connections() {
    if !is_root() {
        return;
    }
    let pair = Pair::new('t');
    let veth = pair.veth_a.clone();
    let listener = in_netns_async(&pair.a, move || async move {
        Interface::new(&veth).add(IpAddr::V4(MOVING)).await.unwrap();
        // Bound in A: the socket stays A's wherever it is used from.
        TcpListener::bind((MOVING, 0)).expect("bind the added address")
    });
    let to: SocketAddr = listener.local_addr().unwrap();
    in_netns(&pair.b, move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect from B to {to}: {e}"));
        stream.write_all(b"ping").unwrap();
    });
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut stream, from) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept on {to}: {e}"),
        }
    };
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 200, 2)));
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping");
}
