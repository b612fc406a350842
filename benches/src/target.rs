//! The server under load: how to open a connection to it (TCP, TLS, HTTP/1.1 or HTTP/2) and
//! send one request on it, with failures sorted into the kinds the report counts.

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::Plan;
use crate::h1;

/// What went wrong with a request, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Tls,
    Protocol,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
        }
    }
}

pub struct Target {
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    http2: bool,
    /// Each body to send in turn, with its HTTP/1.1 request encoded once.
    requests: Vec<(Bytes, Vec<u8>)>,
    /// The next body's turn, over all connections.
    turn: AtomicUsize,
    head_only: bool,
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

/// One open connection.
pub enum Connection {
    /// HTTP/1.1 through moat-bench's own short path ([`h1`]).
    Http1 { stream: Stream, buf: BytesMut },
    /// HTTP/2 through hyper. Its connection future is polled by the task that sends on it,
    /// while it waits for a response, rather than by a task of its own.
    Http2 { sender: http2::SendRequest<Full<Bytes>>, driver: Pin<Box<dyn Future<Output = ()> + Send>> },
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// How a request on an open connection went.
pub enum Sent {
    /// Answered with this status, its first byte at `first_byte`; `keep` is false when the
    /// server closes the connection.
    Answered { status: u16, keep: bool, first_byte: Instant },
    /// The connection had closed before the request went out: open another.
    Closed,
}

impl Target {
    pub fn new(plan: &Plan) -> Result<Target, String> {
        let url = &plan.url;
        let https = url.scheme_str() == Some("https");
        let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = url.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let tls = if https { Some(tls_connector(plan)?) } else { None };
        // HTTP/1.1 takes the path and a Host header; HTTP/2 the whole URI (its :authority).
        let uri: Uri = if plan.http2 {
            url.clone()
        } else {
            url.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|e| format!("URL: {e}"))?
        };
        let mut headers = http::HeaderMap::new();
        if !plan.http2 {
            let host = http::HeaderValue::from_str(&authority).map_err(|e| format!("URL: {e}"))?;
            headers.insert(http::header::HOST, host);
        }
        for (name, value) in &plan.headers {
            headers.append(name, value.clone());
        }
        let method = plan.method.clone();
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let requests = plan
            .bodies
            .iter()
            .map(|body| (body.clone(), h1::encode(&method, path, &authority, &plan.headers, body)))
            .collect();
        let head_only = method == http::Method::HEAD;
        let turn = AtomicUsize::new(0);
        Ok(Target { host, port, tls, http2: plan.http2, requests, turn, head_only, method, uri, headers })
    }

    pub async fn connect(&self) -> Result<Connection, ErrorKind> {
        let tcp =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|_| ErrorKind::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|_| ErrorKind::Tls)?;
                Stream::Tls(Box::new(tls.connect(name, tcp).await.map_err(|_| ErrorKind::Tls)?))
            }
        };
        if !self.http2 {
            return Ok(Connection::Http1 { stream, buf: BytesMut::with_capacity(16 * 1024) });
        }
        match stream {
            Stream::Plain(s) => self.handshake(TokioIo::new(s)).await,
            Stream::Tls(s) => self.handshake(TokioIo::new(*s)).await,
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<Connection, ErrorKind>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), io).await.map_err(|e| classify(&e))?;
        let driver = Box::pin(async move { drop(connection.await) });
        Ok(Connection::Http2 { sender, driver })
    }

    /// Sends the request and reads the whole response. A connection that ended or failed
    /// must not be used again.
    pub async fn send(&self, connection: &mut Connection) -> Result<Sent, ErrorKind> {
        let (body, request) = self.next_request();
        let (sender, driver) = match connection {
            Connection::Http1 { stream, buf } => {
                let head_only = self.head_only;
                let reply = match stream {
                    Stream::Plain(s) => h1::exchange(s, request, head_only, buf).await,
                    Stream::Tls(s) => h1::exchange(s.as_mut(), request, head_only, buf).await,
                }?;
                return Ok(match reply {
                    h1::Reply::Answered { status, keep, first_byte } => {
                        Sent::Answered { status, keep, first_byte }
                    }
                    h1::Reply::Closed => Sent::Closed,
                });
            }
            Connection::Http2 { sender, driver } => (sender, driver),
        };
        let went_out = AtomicBool::new(false);
        let exchange = async {
            sender.ready().await.map_err(|_| None)?;
            went_out.store(true, Ordering::Relaxed);
            self.send_h2(sender, body).await.map_err(Some)
        };
        tokio::select! {
            biased;
            done = exchange => match done {
                Ok(sent) => Ok(sent),
                Err(None) => Ok(Sent::Closed),
                Err(Some(kind)) => Err(kind),
            },
            () = driver => {
                if went_out.load(Ordering::Relaxed) { Err(ErrorKind::Reset) } else { Ok(Sent::Closed) }
            }
        }
    }
}

impl Target {
    /// The next body in turn, and its HTTP/1.1 request.
    fn next_request(&self) -> (&Bytes, &[u8]) {
        let turn = if self.requests.len() == 1 { 0 } else { self.turn.fetch_add(1, Ordering::Relaxed) };
        let (body, request) = &self.requests[turn % self.requests.len()];
        (body, request)
    }

    /// One request on a ready HTTP/2 sender, read to its end.
    async fn send_h2(
        &self,
        sender: &mut http2::SendRequest<Full<Bytes>>,
        body: &Bytes,
    ) -> Result<Sent, ErrorKind> {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let response = sender.send_request(request).await.map_err(|e| classify(&e))?;
        let first_byte = Instant::now();
        let status = response.status().as_u16();
        response.into_body().collect().await.map_err(|e| classify(&e))?;
        Ok(Sent::Answered { status, keep: true, first_byte })
    }

    /// Sends on a shared HTTP/2 connection whose driver runs in a task of its own (several
    /// streams at once: `--streams`). Ok(None): the connection is gone, nothing went out.
    pub async fn send_stream(
        &self,
        sender: &mut http2::SendRequest<Full<Bytes>>,
    ) -> Result<Option<Sent>, ErrorKind> {
        if sender.ready().await.is_err() {
            return Ok(None);
        }
        let (body, _) = self.next_request();
        self.send_h2(sender, body).await.map(Some)
    }

    /// A new HTTP/2 connection whose driver runs as a task, for several streams at once.
    pub async fn connect_shared(&self) -> Result<http2::SendRequest<Full<Bytes>>, ErrorKind> {
        match self.connect().await? {
            Connection::Http2 { sender, driver } => {
                tokio::spawn(driver);
                Ok(sender)
            }
            Connection::Http1 { .. } => Err(ErrorKind::Protocol),
        }
    }
}

fn classify(error: &hyper::Error) -> ErrorKind {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return ErrorKind::Reset;
    }
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof => {
                    ErrorKind::Reset
                }
                Io::TimedOut => ErrorKind::Timeout,
                _ if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => ErrorKind::Tls,
                _ => ErrorKind::Reset,
            };
        }
        source = e.source();
    }
    ErrorKind::Protocol
}

/// The public roots plus those in `SSL_CERT_FILE` (as curl does), or any certificate with
/// `--insecure`.
fn tls_connector(plan: &Plan) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = if plan.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
            let shown = file.to_string_lossy().into_owned();
            let certs =
                CertificateDer::pem_file_iter(&file).map_err(|e| format!("SSL_CERT_FILE {shown}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("SSL_CERT_FILE {shown}: {e}"))?;
                roots.add(cert).map_err(|e| format!("SSL_CERT_FILE {shown}: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = if plan.http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `--insecure`: the handshake's signatures are still checked, the certificate chain is not.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
