//! Harness for proxyfleet's whole-system tests.
//!
//! - [`process`]: start the real `proxyfleet` binary (or any program) as a child that is
//!   killed and reaped when the test ends, however it ends, and read its output;
//! - [`origin`]: an HTTP origin (hyper, plain or TLS) on a loopback address that records who
//!   connected and what arrived;
//! - [`client`]: raw sockets bound to a chosen source address, and `curl` runs;
//! - [`load`]: a steady stream of requests on new connections, failures timed (drills);
//! - [`etcd`]: a real 3-member etcd cluster on 127.99.0.0/16, killed and removed on drop;
//! - [`firewall`]: removing the nftables tables a test's agents left;
//! - [`netns`]: hosts as network namespaces on one bridge (198.18.0.0/16 inside them only),
//!   killed and partitioned by the drills across hosts, removed on drop;
//! - [`wait`]: polling with a deadline — the only way these tests wait.
//!
//! Every address is on loopback: 127.20.0.0/16 for clients, 127.30.0.0/16 for origins.

pub mod client;
pub mod dns;
pub mod etcd;
pub mod firewall;
pub mod load;
pub mod netns;
pub mod origin;
pub mod process;
pub mod wait;

/// Installs rustls' ring provider once (the TLS origin needs a process-wide default).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
