//! `http_port ... intercept` (old name `transparent`): connections redirected to the proxy by
//! the host's firewall (nftables/iptables `REDIRECT` or `DNAT`), whose requests are in origin
//! form (`GET /path`, with `Host`). The destination is the connection's original one, which
//! the kernel's connection tracking keeps (`SO_ORIGINAL_DST`): the request goes to that
//! address whatever its `Host` says (what Squid does too, since a forged `Host` must not
//! choose where the connection goes), while ACLs and the log see the `Host` name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` (linux/netfilter_ipv4.h) and `IP6T_SO_ORIGINAL_DST`
/// (linux/netfilter_ipv6/ip6_tables.h): both 80; not in the libc crate.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The address a redirected connection was originally sent to; `None` for a connection
/// the firewall did not redirect (or one the kernel has no record of).
pub fn original_destination(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let fd = stream.as_raw_fd();
    let local = stream.local_addr().ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed sockaddr storage, which
    // is large enough for either family; the result is read only when the call succeeded.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let level = if local.is_ipv4() {
            libc::SOL_IP
        } else {
            libc::SOL_IPV6
        };
        let rc = libc::getsockopt(
            fd,
            level,
            SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        if rc != 0 {
            return None;
        }
        match addr.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

/// The host name and port a `Host` value names (`name`, `name:port`, `[v6]:port`).
pub fn host_of(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').map(str::parse).transpose().ok()?;
        return Some((v6.to_ascii_lowercase(), port));
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse().ok()?)))
        }
        _ => Some((value.to_ascii_lowercase(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        assert_eq!(host_of("Example.COM"), Some(("example.com".into(), None)));
        assert_eq!(host_of("a.test:8080"), Some(("a.test".into(), Some(8080))));
        assert_eq!(host_of("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(host_of("a.test:x"), None);
        assert_eq!(host_of(""), None);
    }
}
