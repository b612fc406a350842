//! The opening of a connection to a TLS port (443, or one the endpoint lists as TLS), in the
//! forwarders and in CONNECT tunnels alike: the whole ClientHello is read (however it is split,
//! however late within the handshake limit, up to 16 KiB) and must name one of the endpoint's
//! names. Nothing reaches the endpoint before that; what was read is sent on first.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::acl::{Endpoint, Reason};
use crate::names;
use crate::sni::{Hello, MAX_OPENING, Reassembly};

/// A ClientHello that names the endpoint: the name, and the bytes read to see it.
#[derive(Debug)]
pub struct Opening {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Why the connection may not go on, and the name it asked for if one was read.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub name: Option<String>,
}

pub async fn read<S>(stream: &mut S, endpoint: &Endpoint, within: Duration) -> Result<Opening, Refused>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let refused = |reason| Refused { reason, name: None };
    let deadline = tokio::time::Instant::now() + within;
    let mut bytes = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 4096];
    let mut hello = Reassembly::default();
    loop {
        let room = (MAX_OPENING - bytes.len()).min(chunk.len());
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Err(refused(Reason::HandshakeTimeout)),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(refused(Reason::NotTls)),
            Ok(Ok(n)) => n,
        };
        bytes.extend_from_slice(&chunk[..n]);
        match hello.feed(&chunk[..n]) {
            Hello::Incomplete => continue,
            Hello::NotTls => return Err(refused(Reason::NotTls)),
            Hello::TooLarge => return Err(refused(Reason::ClientHelloTooLarge)),
            Hello::Tls(None) => return Err(refused(Reason::SniMismatch)),
            Hello::Tls(Some(name)) => {
                if names::canonical(&name).is_some_and(|n| endpoint.has_name(&n)) {
                    return Ok(Opening { name, bytes });
                }
                return Err(Refused { reason: Reason::SniMismatch, name: Some(name) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sni::tests::{handshake, hello, hello_padded, records};
    use tokio::io::AsyncWriteExt;

    fn vault() -> Endpoint {
        Endpoint {
            name: "vault".into(),
            fqdn: "kv.vault.azure.net".into(),
            aliases: vec!["kv.privatelink.vaultcore.azure.net".into()],
            ips: vec!["10.0.1.5".parse().expect("ip")],
            ports: vec![443],
            tls_ports: vec![],
        }
    }

    /// Sends `parts` with `gap` between them, then waits; what the guard made of it.
    async fn opening(parts: Vec<Vec<u8>>, gap: Duration) -> Result<String, Reason> {
        let (mut client, mut guard_end) = tokio::io::duplex(64 * 1024);
        let sender = tokio::spawn(async move {
            for part in parts {
                tokio::time::sleep(gap).await;
                if client.write_all(&part).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        let result = read(&mut guard_end, &vault(), Duration::from_secs(10)).await;
        sender.abort();
        result.map(|o| o.name).map_err(|r| r.reason)
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_split_or_large_hello_naming_the_endpoint_passes() {
        let name = "kv.vault.azure.net";
        let ok = Ok(name.to_string());
        assert_eq!(opening(vec![hello(Some(name))], Duration::from_secs(3)).await, ok, "late");
        let split = records(&handshake(Some(name), 0), 9);
        let segments = split.chunks(5).map(<[u8]>::to_vec).collect();
        assert_eq!(opening(segments, Duration::from_millis(300)).await, ok, "split in records and segments");
        assert_eq!(opening(vec![hello_padded(Some(name), 12 * 1024)], Duration::ZERO).await, ok, "large");
        let alias = hello(Some("KV.privatelink.vaultcore.azure.net."));
        assert!(opening(vec![alias], Duration::ZERO).await.is_ok(), "an alias, in any case");
    }

    #[tokio::test(start_paused = true)]
    async fn every_other_opening_is_refused_with_its_reason() {
        let evil = Some("evil.example");
        let cases: [(&str, Vec<Vec<u8>>, Duration, Reason); 7] = [
            ("another name", vec![hello(evil)], Duration::ZERO, Reason::SniMismatch),
            ("another name, late", vec![hello(evil)], Duration::from_secs(2), Reason::SniMismatch),
            (
                "another name, split",
                records(&handshake(evil, 0), 3).chunks(2).map(<[u8]>::to_vec).collect(),
                Duration::from_millis(100),
                Reason::SniMismatch,
            ),
            ("another name, large", vec![hello_padded(evil, 8 * 1024)], Duration::ZERO, Reason::SniMismatch),
            ("no name", vec![hello(None)], Duration::ZERO, Reason::SniMismatch),
            ("plain bytes", vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()], Duration::ZERO, Reason::NotTls),
            (
                "too large",
                vec![records(&handshake(evil, 17 * 1024), 16 * 1024)],
                Duration::ZERO,
                Reason::ClientHelloTooLarge,
            ),
        ];
        for (case, parts, gap, reason) in cases {
            assert_eq!(opening(parts, gap).await, Err(reason), "{case}");
        }
        let half = hello(Some("kv.vault.azure.net"))[..30].to_vec();
        assert_eq!(opening(vec![half], Duration::ZERO).await, Err(Reason::HandshakeTimeout), "half a hello");
        assert_eq!(opening(vec![], Duration::ZERO).await, Err(Reason::HandshakeTimeout), "nothing at all");
    }
}
