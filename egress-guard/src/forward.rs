//! The guard's listener for one private endpoint: a container connects to the guard's
//! address for that endpoint (what its names resolve to) and the guard dials the endpoint's
//! listed address. On a TLS port the connection must open with a ClientHello naming the
//! endpoint ([`crate::hello`]); on another port the bytes go as they come.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::acl::Reason;
use crate::decision_log::Kind;
use crate::scope::Scope;
use crate::{hello, relay};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, scope: Arc<Scope>, endpoint: usize) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let Some(listed) = scope.endpoints.get(endpoint) else { return };
    let kind = if listed.is_tls(port) { Kind::Tls } else { Kind::Tcp };
    let target = format!("{}:{port}", listed.fqdn);
    loop {
        let (stream, from) = crate::sockets::accept(&listener).await;
        let Some(admitted) = scope.admit(from, kind, &target) else { continue };
        let scope = scope.clone();
        tokio::spawn(async move {
            connection(stream, from, &scope, endpoint, port).await;
            drop(admitted);
        });
    }
}

async fn connection(mut client: TcpStream, from: SocketAddr, scope: &Scope, index: usize, port: u16) {
    let Some(endpoint) = scope.endpoints.get(index) else { return };
    let who = scope.who(from.ip());
    let (kind, target, opening) = if endpoint.is_tls(port) {
        match hello::read(&mut client, endpoint, scope.limits.handshake).await {
            Ok(opening) => (Kind::Tls, format!("{}:{port}", opening.name), opening.bytes),
            Err(refused) => {
                let target = format!("{}:{port}", refused.name.as_deref().unwrap_or(&endpoint.fqdn));
                return scope.record(&who, Kind::Tls, &target, refused.reason, (0, 0));
            }
        }
    } else {
        (Kind::Tcp, format!("{}:{port}", endpoint.fqdn), Vec::new())
    };
    let Some(dial) = endpoint.dial(port) else { return };
    if let Err(reason) = scope.dialable(dial) {
        return scope.record(&who, kind, &target, reason, (0, 0));
    }
    let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dial)).await else {
        tracing::warn!(endpoint = %endpoint.name, address = %dial, "private endpoint unreachable");
        return scope.record(&who, kind, &target, Reason::Allowlisted, (0, 0));
    };
    if upstream.write_all(&opening).await.is_err() {
        return scope.record(&who, kind, &target, Reason::Allowlisted, (0, 0));
    }
    let (out, back) = relay::relay(&mut client, &mut upstream, scope.limits.idle).await;
    scope.record(&who, kind, &target, Reason::Allowlisted, (out + opening.len() as u64, back));
}
