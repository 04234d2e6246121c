//! A loopback port where connections are refused, for tests of unreachable destinations.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpSocket;

/// A TCP port on a loopback address that refuses every connection, for as long as this value lives.
///
/// It holds a socket bound to the port but never listening: the kernel answers each SYN with a reset, so a
/// connection fails at once with [`io::ErrorKind::ConnectionRefused`] (no timeout to wait for), and since the
/// port stays bound, no other process can start listening on it meanwhile — unlike a port found by binding a
/// listener and closing it again, which anyone may take before the test uses it. Needs no runtime.
#[derive(Debug)]
pub struct ClosedPort {
    addr: SocketAddr,
    _socket: TcpSocket,
}

impl ClosedPort {
    /// Binds a fresh port (chosen by the OS) on `ip` without listening.
    ///
    /// # Errors
    ///
    /// If the socket cannot be created or bound (for example, `ip` is not an address of this machine).
    pub fn bind(ip: IpAddr) -> io::Result<ClosedPort> {
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // No SO_REUSEADDR: on Linux another socket may share a bound, non-listening port only if both set it.
        socket.bind(SocketAddr::new(ip, 0))?;
        Ok(ClosedPort {
            addr: socket.local_addr()?,
            _socket: socket,
        })
    }

    /// The refused address: `ip` and [`port`](Self::port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}
