//! `POST /probe`: the container tries to reach something and says what happened, so tests
//! can see the network from inside a deployment. One probe per request:
//!
//! - `{"dns": NAME, "type": "A"|"AAAA"|"TXT", "server": IP?}`: a query to the container's
//!   resolver (or to `server`); ok when it gets an answer record.
//! - `{"tcp": "HOST:PORT", "send": TEXT, "via": "direct"|"connect"|"http"}`: connect (directly,
//!   through the CONNECT proxy of `HTTPS_PROXY`, or with a proxied `GET` to `HTTP_PROXY`), send,
//!   and read the reply; ok when a reply came.
//! - `{"tls": "HOST:PORT", "sni": NAME, "via": "direct"|"connect"}`: a TLS handshake with that
//!   SNI (any certificate accepted: the test only asks whether it got through), then a line.
//! - `{"hello": "HOST:PORT", "sni": NAME?, "via": ..., "pad": BYTES, "record": BYTES,
//!   "segment": BYTES, "delay_ms": MS, "gap_ms": MS, "plain": TEXT?}`: a ClientHello made by
//!   hand (padded, cut into records of `record` bytes, written `segment` bytes at a time,
//!   `delay_ms` before the first write and `gap_ms` between writes), or `plain` bytes instead;
//!   ok when the other end answered anything.
//! - `{"flood": "HOST:PORT"|"proxy", "count": N, "hold_ms": MS}`: opens N connections, holds them, and
//!   says how many the other end had closed by then (`{"opened": n, "closed": k}`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(request: &Value) -> Value {
    let result = if let Some(name) = request["dns"].as_str() {
        dns(name, request["type"].as_str().unwrap_or("A"), request["server"].as_str())
    } else if let Some(target) = request["tcp"].as_str() {
        let send = request["send"].as_str().unwrap_or("hello\n");
        tcp(target, send, request["via"].as_str().unwrap_or("direct"))
    } else if let Some(target) = request["hello"].as_str() {
        hello(target, request)
    } else if let Some(target) = request["flood"].as_str() {
        flood(target, request["count"].as_u64().unwrap_or(100), request["hold_ms"].as_u64().unwrap_or(1000))
    } else if let Some(target) = request["tls"].as_str() {
        tls(target, request["sni"].as_str().unwrap_or_default(), request["via"].as_str().unwrap_or("direct"))
    } else {
        Err("say dns, tcp, tls, hello or flood".to_string())
    };
    match result {
        Ok(detail) => json!({"ok": true, "detail": detail}),
        Err(error) => json!({"ok": false, "detail": error}),
    }
}

/// The first nameserver of /etc/resolv.conf.
fn resolver() -> Result<IpAddr, String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| format!("resolv.conf: {e}"))?;
    conf.lines()
        .find_map(|l| l.strip_prefix("nameserver")?.trim().parse().ok())
        .ok_or_else(|| "no nameserver in resolv.conf".to_string())
}

fn dns_query(name: &str, kind: RecordType, server: IpAddr) -> Result<Message, String> {
    let mut query = Message::query();
    query.metadata.id = 4321;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).map_err(|e| e.to_string())?, kind));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    socket.send_to(&bytes, SocketAddr::new(server, 53)).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).map_err(|e| format!("no answer from {server}: {e}"))?;
    Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
}

fn dns(name: &str, kind: &str, server: Option<&str>) -> Result<String, String> {
    let kind = match kind {
        "AAAA" => RecordType::AAAA,
        "TXT" => RecordType::TXT,
        _ => RecordType::A,
    };
    let server = match server {
        Some(s) => s.parse().map_err(|_| format!("bad server {s}"))?,
        None => resolver()?,
    };
    let reply = dns_query(name, kind, server)?;
    let answers: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    if reply.metadata.response_code != ResponseCode::NoError || answers.is_empty() {
        return Err(format!("{} with {} answers", reply.metadata.response_code, answers.len()));
    }
    Ok(answers.join(","))
}

/// A name's first A record from the container's resolver, or the address it spells.
fn address(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let reply = dns_query(host, RecordType::A, resolver()?)?;
    reply
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), port)),
            _ => None,
        })
        .ok_or_else(|| format!("{host} does not resolve ({})", reply.metadata.response_code))
}

fn split(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = target.rsplit_once(':').ok_or("HOST:PORT")?;
    Ok((host, port.parse().map_err(|_| "bad port")?))
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn proxy(var: &str) -> Result<SocketAddr, String> {
    let url = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
    let rest = url.trim_start_matches("http://").trim_end_matches('/');
    rest.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or_else(|| format!("{var}={url}"))
}

/// A connection to `target`: direct, or a tunnel through the CONNECT proxy.
fn open(target: &str, via: &str) -> Result<TcpStream, String> {
    let (host, port) = split(target)?;
    if via != "connect" {
        return connect(address(host, port)?);
    }
    let mut stream = connect(proxy("HTTPS_PROXY")?)?;
    write!(stream, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").map_err(|e| e.to_string())?;
    let head = read_head(&mut stream)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("proxy said: {}", head.lines().next().unwrap_or_default()));
    }
    Ok(stream)
}

fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn read_some(stream: &mut impl Read) -> Result<String, String> {
    let mut buf = [0u8; 2048];
    match stream.read(&mut buf) {
        Ok(0) => Err("closed without a reply".into()),
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
        Err(e) => Err(format!("no reply: {e}")),
    }
}

fn tcp(target: &str, send: &str, via: &str) -> Result<String, String> {
    if via == "http" {
        let (host, _) = split(target)?;
        let mut stream = connect(proxy("HTTP_PROXY")?)?;
        write!(stream, "GET http://{target}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut all = String::new();
        let _ = stream.read_to_string(&mut all);
        return if all.starts_with("HTTP/1.1 200") {
            Ok(all)
        } else {
            Err(all.lines().next().unwrap_or("nothing").to_string())
        };
    }
    let mut stream = open(target, via)?;
    stream.write_all(send.as_bytes()).map_err(|e| e.to_string())?;
    read_some(&mut stream)
}

/// Takes any certificate: the probe asks whether the handshake reaches the endpoint, and
/// the endpoint proves itself by what it sends after it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls(target: &str, sni: &str, via: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, open(target, via)?);
    stream.write_all(b"hello\n").map_err(|e| format!("TLS: {e}"))?;
    read_some(&mut stream)
}

/// `body` behind its length, in `width` bytes.
fn framed(width: usize, body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes()[4 - width..].to_vec();
    out.extend_from_slice(body);
    out
}

/// A TLS 1.2-style ClientHello handshake message naming `sni` (if any), with `pad` bytes of an
/// unassigned extension.
fn client_hello(sni: Option<&str>, pad: usize) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        let entry = [&[0u8][..], &framed(2, name.as_bytes())].concat();
        extensions.extend([0, 0]);
        extensions.extend(framed(2, &framed(2, &entry)));
    }
    if pad > 0 {
        extensions.extend([0x55, 0x55]);
        extensions.extend(framed(2, &vec![0u8; pad]));
    }
    let mut body = vec![3, 3];
    body.extend([0x42u8; 32]); // random
    body.push(0); // no session id
    body.extend(framed(2, &[0x13, 0x01, 0xc0, 0x2f]));
    body.extend([1, 0]); // null compression
    body.extend(framed(2, &extensions));
    [&[1u8][..], &framed(3, &body)].concat()
}

fn hello(target: &str, request: &Value) -> Result<String, String> {
    let number = |key: &str, default: u64| request[key].as_u64().unwrap_or(default) as usize;
    let bytes = match request["plain"].as_str() {
        Some(text) => text.as_bytes().to_vec(),
        None => {
            let message = client_hello(request["sni"].as_str(), number("pad", 0));
            let per_record = number("record", 16 * 1024).max(1);
            message
                .chunks(per_record)
                .flat_map(|part| [&[22u8, 3, 1][..], &framed(2, part)].concat())
                .collect()
        }
    };
    let mut stream = open(target, request["via"].as_str().unwrap_or("direct"))?;
    let _ = stream.set_nodelay(true);
    std::thread::sleep(Duration::from_millis(number("delay_ms", 0) as u64));
    for (i, part) in bytes.chunks(number("segment", u64::MAX).max(1)).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(number("gap_ms", 0) as u64));
        }
        stream.write_all(part).map_err(|e| format!("writing: {e}"))?;
    }
    read_some(&mut stream)
}

fn flood(target: &str, count: u64, hold_ms: u64) -> Result<String, String> {
    let addr = if target == "proxy" {
        proxy("HTTPS_PROXY")?
    } else {
        let (host, port) = split(target)?;
        address(host, port)?
    };
    let mut held = Vec::new();
    // Up to `count`, or as many as the container's own descriptors allow.
    let mut stopped = None;
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                stopped = Some(format!("connection {} of {count}: {e}", held.len() + 1));
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(hold_ms));
    let mut closed = 0;
    for stream in &mut held {
        let _ = stream.set_nonblocking(true);
        let mut byte = [0u8; 1];
        let open = match stream.read(&mut byte) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        closed += usize::from(!open);
    }
    Ok(json!({"opened": held.len(), "closed": closed, "stopped": stopped}).to_string())
}
