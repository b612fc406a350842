//! The start of a connection: a trusted balancer may put a PROXY header first; from anyone
//! else a PROXY signature closes the connection. The bytes are peeked, so a connection
//! without a header reaches HTTP (or TLS) untouched.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::origin::{canonical, within};
use super::proxy_protocol::{self, Parsed, ProxyHeader, V2_MAX, V2_SIGNATURE};
use super::{IngressConfig, Mode};

/// Why a connection was closed before any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A PROXY header from a peer not in `trusted_proxies`.
    UntrustedProxyHeader,
    /// A trusted peer's PROXY header that does not parse.
    MalformedProxyHeader,
    /// Closed, or silent past the header-read timeout.
    Gone,
}

/// What the start of a connection held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Start {
    /// A trusted balancer's PROXY header.
    pub header: Option<ProxyHeader>,
    /// In report mode: an untrusted peer sent a PROXY header, which was taken off the wire
    /// and not believed (enforce mode would have closed the connection).
    pub untrusted_header: bool,
}

/// Reads a trusted balancer's PROXY header off the stream, if it sent one.
pub async fn proxy_header(
    stream: &mut TcpStream,
    config: &IngressConfig,
    timeout: Duration,
) -> Result<Start, Refused> {
    let trusted = stream.peer_addr().is_ok_and(|p| within(canonical(p.ip()), &config.trusted_proxies));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; V2_MAX];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(Refused::Gone),
            Ok(Ok(n)) => n,
        };
        let signed = buf[..n].starts_with(&V2_SIGNATURE) || buf[..n].starts_with(b"PROXY ");
        if signed && !trusted && config.mode == Mode::Enforce {
            return Err(Refused::UntrustedProxyHeader);
        }
        match proxy_protocol::parse(&buf[..n]) {
            Parsed::NotProxy => return Ok(Start::default()),
            Parsed::Header { header, len } => {
                let mut consumed = vec![0u8; len];
                stream.read_exact(&mut consumed).await.map_err(|_| Refused::Gone)?;
                return Ok(if trusted {
                    Start { header: Some(header), untrusted_header: false }
                } else {
                    Start { header: None, untrusted_header: true }
                });
            }
            Parsed::Invalid(_) => return Err(Refused::MalformedProxyHeader),
            Parsed::Incomplete => {
                if n == seen {
                    // Peeking again returns the same bytes at once: wait for more to arrive.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
        }
    }
}
