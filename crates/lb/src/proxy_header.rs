//! PROXY protocol v2 headers the balancer sends to targets (built with the `ppp` crate).

use std::net::SocketAddr;

use ppp::v2::{Addresses, Builder, Command, Protocol, Version};

/// The header for a proxied flow: the client's address and the address it connected to.
pub fn proxied(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let addresses = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            Addresses::from((client, local))
        }
        // Mixed families cannot share one header: say nothing about the addresses.
        _ => Addresses::Unspecified,
    };
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .build()
        .unwrap_or_default()
}

/// The LOCAL header health checks send: "this connection is the balancer's own".
pub fn local() -> Vec<u8> {
    Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        Addresses::Unspecified,
    )
    .build()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_ppp() {
        let client: SocketAddr = "127.20.0.5:40000".parse().unwrap();
        let node: SocketAddr = "127.10.1.10:3128".parse().unwrap();
        let bytes = proxied(client, node);
        let header = ppp::v2::Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(header.command, Command::Proxy);
        match header.addresses {
            Addresses::IPv4(a) => {
                assert_eq!(SocketAddr::from((a.source_address, a.source_port)), client)
            }
            other => panic!("{other:?}"),
        }
        let local = local();
        assert_eq!(local.len(), 16);
        assert_eq!(
            ppp::v2::Header::try_from(local.as_slice()).unwrap().command,
            Command::Local
        );
    }
}
