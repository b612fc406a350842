//! The guard's listening sockets, each carrying the guard's mark (SO_MARK) from before it is
//! bound: a private network's kernel rules let traffic reach only marked sockets, so a host
//! process that takes the guard's port while the daemon is down serves nobody. SO_REUSEPORT
//! lets the daemon that takes over in `serve --upgrade` bind them while the old one still
//! serves: for that moment the kernel spreads connections over both, with the same rules.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::nft::GUARD_MARK;

fn marked(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_mark(GUARD_MARK)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = marked(addr, Type::STREAM, Protocol::TCP)?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(marked(addr, Type::DGRAM, Protocol::UDP)?.into())
}

/// The next connection. An accept that fails (out of descriptors, most likely) is tried again
/// after a pause, not at once: a loop that spins on it would starve everything else.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the egress guard cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
