//! The guard's listener for one private endpoint: a container connects to the guard's
//! address for that endpoint (what its names resolve to) and the guard dials the endpoint's
//! listed address. A TLS client must ask for one of the endpoint's names (SNI).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::acl::Reason;
use crate::decision_log::{Kind, record};
use crate::names;
use crate::scope::Scope;
use crate::sni::{Hello, client_hello};

/// How long the guard waits for a client's first bytes before treating it as plain TCP.
const FIRST_BYTES: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, scope: Arc<Scope>, endpoint: usize) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let scope = scope.clone();
        tokio::spawn(async move { connection(stream, from, &scope, endpoint).await });
    }
}

async fn connection(mut client: TcpStream, from: SocketAddr, scope: &Scope, index: usize) {
    let Some(endpoint) = scope.endpoints.get(index) else { return };
    let port = client.local_addr().map(|a| a.port()).unwrap_or_default();
    let who = scope.who(from.ip());
    let (kind, sni) = match first_bytes(&client).await {
        Hello::Tls(name) => (Kind::Tls, name),
        _ => (Kind::Tcp, None),
    };
    let target = format!("{}:{port}", sni.clone().unwrap_or_else(|| endpoint.fqdn.clone()));
    if let Some(name) = &sni
        && !names::canonical(name).is_some_and(|n| endpoint.has_name(&n))
    {
        return record(&scope.sink, &who, kind, &target, Reason::SniMismatch, (0, 0), true);
    }
    let Some(dial) = endpoint.dial(port) else { return };
    if let Err(reason) = scope.dialable(dial) {
        return record(&scope.sink, &who, kind, &target, reason, (0, 0), true);
    }
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dial)).await else {
        tracing::warn!(endpoint = %endpoint.name, address = %dial, "private endpoint unreachable");
        return record(&scope.sink, &who, kind, &target, Reason::Allowlisted, (0, 0), true);
    };
    let bytes = relay(&mut client, &mut upstream).await;
    record(&scope.sink, &who, kind, &target, Reason::Allowlisted, bytes, true);
}

/// Copies both ways until both sides are done; the bytes (client to endpoint, endpoint to
/// client). Buffers of 64 KiB: a private endpoint is mostly storage, and bulk transfers
/// through 8 KiB buffers (tokio's default) took nearly twice as long in the guard bench.
pub async fn relay<A, B>(client: &mut A, upstream: &mut B) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    const BUFFER: usize = 64 * 1024;
    tokio::io::copy_bidirectional_with_sizes(client, upstream, BUFFER, BUFFER).await.unwrap_or((0, 0))
}

/// Peeks at what the client sends first, without taking it off the wire.
async fn first_bytes(stream: &TcpStream) -> Hello {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES;
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Hello::NotTls,
        };
        match client_hello(&buf[..n]) {
            Hello::Incomplete if n < buf.len() => {
                if n == seen {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
            Hello::Incomplete => return Hello::NotTls,
            decided => return decided,
        }
    }
}
