//! Outgoing connections from a chosen source address: the node's own (health checks), or
//! the client's (client-IP preservation).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `target` from `source` (any port).
///
/// `transparent` sets IP_TRANSPARENT so `source` may be an address this host does not own —
/// the client's, across hosts. That needs CAP_NET_ADMIN and policy routing that sends the
/// target's replies back through this host (see the README). On one machine every 127.x
/// address is local and a plain bind suffices.
pub async fn connect_from(
    source: IpAddr,
    target: SocketAddr,
    transparent: bool,
) -> io::Result<TcpStream> {
    if source.is_ipv4() != target.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "source and target address families differ",
        ));
    }
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if transparent {
        if source.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
    }
    if source.is_ipv4() {
        // Choose the source port at connect(), by the full 4-tuple: many flows from one client
        // address then share ephemeral ports across targets instead of exhausting them.
        set_int_option(&socket, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    let socket = TcpSocket::from_std_stream(socket.into());
    socket.connect(target).await
}

/// Whether a failed connect says nothing about the target: this host ran out of something
/// (descriptors, socket buffers, memory, local ports) before a packet could reach it. Such a
/// failure is never counted against a target — a checker starved of descriptors must not
/// take a healthy zone out of service.
pub fn is_local_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// socket2 has no setter for IP_BIND_ADDRESS_NO_PORT.
fn set_int_option(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// TCP keepalive on a flow's sockets: a peer that vanished without a FIN or RST is noticed
/// within about two minutes instead of holding the flow until the idle timeout.
pub fn keepalive(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive_params());
}

pub fn keepalive_params() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6)
}
