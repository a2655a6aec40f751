//! The namespace harness itself: two namespaces on one segment reach each other, a port down
//! cuts them apart silently, and dropping the segment removes every namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use testkit::netns::{self, Net};

#[test]
fn namespaces_on_one_segment_reach_each_other_and_are_removed() {
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let names;
    {
        let mut net = Net::new();
        let a = net.add("a", Ipv4Addr::new(198, 18, 250, 1));
        let b = net.add("b", Ipv4Addr::new(198, 18, 250, 2));
        net.add_address("a", Ipv4Addr::new(198, 18, 251, 10));
        assert!(net
            .addresses("a")
            .contains(&Ipv4Addr::new(198, 18, 251, 10)));
        let listener = netns::run_in(&a.name, || {
            TcpListener::bind("198.18.251.10:9000").expect("bind in a")
        });
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"hello").unwrap();
        });
        let got = netns::run_in(&b.name, || {
            let addr: SocketAddr = "198.18.251.10:9000".parse().unwrap();
            let mut s =
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect from b");
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        });
        assert_eq!(got, "hello");
        server.join().unwrap();
        net.link("a", false);
        let cut = netns::run_in(&b.name, || {
            TcpStream::connect_timeout(
                &"198.18.250.1:9001".parse().unwrap(),
                Duration::from_millis(300),
            )
        });
        let err = cut.expect_err("a's port is down").kind();
        assert_eq!(err, std::io::ErrorKind::TimedOut, "silence, not a refusal");
        names = (a.name, b.name);
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.contains(&names.0) && !list.contains(&names.1),
        "namespaces left: {list}"
    );
}
