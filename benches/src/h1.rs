//! HTTP/1.1 on the load tester's hot path. The request is encoded once; an exchange writes
//! those bytes and reads the response head with httparse, then its body by Content-Length,
//! chunks or the connection's end. A general client (hyper's) spent five times wrk's CPU per
//! request here, CPU the server under test shares on a small machine, so this path is kept
//! as short as wrk's.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::target::ErrorKind;

/// Response heads larger than this are a protocol error.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// The request, as bytes on the wire.
pub fn encode(
    method: &Method,
    path: &str,
    authority: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n").as_bytes());
    for (name, value) in headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// What came back.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Answered {
        status: u16,
        keep: bool,
        /// When the answer's first byte came.
        first_byte: Instant,
    },
    /// The connection ended before a byte of the response: a kept-alive connection the
    /// server had closed.
    Closed,
}

enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

/// One exchange on `stream`; `buf` keeps bytes read past the response (none, normally).
pub async fn exchange<S>(
    stream: &mut S,
    request: &[u8],
    head_only: bool,
    buf: &mut BytesMut,
) -> Result<Reply, ErrorKind>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await.map_err(|e| io_kind(&e))?;
    let mut first_byte = None;
    loop {
        let Some((status, head_len, body, close)) = read_head(stream, buf, &mut first_byte).await? else {
            return Ok(Reply::Closed);
        };
        buf.advance(head_len);
        // 1xx: an interim answer; the real one follows.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if head_only || status == 204 || status == 304 { Body::Length(0) } else { body };
        let keep = match body {
            Body::Length(n) => {
                skip(stream, buf, n).await?;
                !close
            }
            Body::Chunked => {
                read_chunked(stream, buf).await?;
                !close
            }
            Body::UntilClose => {
                while read_more(stream, buf).await? > 0 {
                    buf.clear();
                }
                false
            }
        };
        let first_byte = first_byte.unwrap_or_else(Instant::now);
        return Ok(Reply::Answered { status, keep, first_byte });
    }
}

type Head = (u16, usize, Body, bool);

/// The head of the answer; `first_byte` is set when its first byte is seen.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    first_byte: &mut Option<Instant>,
) -> Result<Option<Head>, ErrorKind> {
    loop {
        if !buf.is_empty() {
            first_byte.get_or_insert_with(Instant::now);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.ok_or(ErrorKind::Protocol)?;
                    let mut body = Body::UntilClose;
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                            body = Body::Length(n.ok_or(ErrorKind::Protocol)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.eq_ignore_ascii_case(b"chunked") {
                                body = Body::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    return Ok(Some((status, len, body, close)));
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Err(ErrorKind::Protocol),
            }
        }
        let had = buf.len();
        if read_more(stream, buf).await? == 0 {
            return if had == 0 { Ok(None) } else { Err(ErrorKind::Reset) };
        }
    }
}

/// Reads once into `buf`; 0 at the end of the stream.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<usize, ErrorKind> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    stream.read_buf(buf).await.map_err(|e| io_kind(&e))
}

/// Drops the next `n` bytes of the stream as they arrive: a large body never sits in memory.
async fn skip<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    mut n: usize,
) -> Result<(), ErrorKind> {
    loop {
        let take = n.min(buf.len());
        buf.advance(take);
        n -= take;
        if n == 0 {
            return Ok(());
        }
        if read_more(stream, buf).await? == 0 {
            return Err(ErrorKind::Reset);
        }
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<(), ErrorKind> {
    loop {
        let size_line = line(stream, buf).await?;
        let size = std::str::from_utf8(&size_line)
            .ok()
            .map(|l| l.split(';').next().unwrap_or_default().trim())
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or(ErrorKind::Protocol)?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !line(stream, buf).await?.is_empty() {}
            return Ok(());
        }
        skip(stream, buf, size).await?;
        if !line(stream, buf).await?.is_empty() {
            return Err(ErrorKind::Protocol);
        }
    }
}

/// The next CRLF-terminated line, taken off `buf`, without its CRLF.
async fn line<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Vec<u8>, ErrorKind> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(end).to_vec();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(ErrorKind::Protocol);
        }
        if read_more(stream, buf).await? == 0 {
            return Err(ErrorKind::Reset);
        }
    }
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => ErrorKind::Tls,
        _ => ErrorKind::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status and keep-alive of the answer to one exchange (None: closed), and the request.
    async fn answer(
        reply: &'static [u8],
        head_only: bool,
    ) -> (Result<Option<(u16, bool)>, ErrorKind>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut request = vec![0u8; 1024];
            let n = server.read(&mut request).await.unwrap_or(0);
            let _ = server.write_all(reply).await;
            request.truncate(n);
            request
        });
        let request = encode(&Method::POST, "/score", "h:1", &[], b"{}");
        let mut buf = BytesMut::new();
        let reply = exchange(&mut client, &request, head_only, &mut buf).await.map(|reply| match reply {
            Reply::Answered { status, keep, .. } => Some((status, keep)),
            Reply::Closed => None,
        });
        (reply, server.await.unwrap_or_default())
    }

    #[tokio::test]
    async fn bodies_by_length_chunks_and_close_are_read_to_their_end() {
        let (reply, request) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).await;
        assert_eq!(reply, Ok(Some((200, true))));
        assert_eq!(request, b"POST /score HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\n\r\n{}");
        let chunked =
            b"HTTP/1.1 424 X\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(answer(chunked, false).await.0, Ok(Some((424, true))));
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
        assert_eq!(answer(close, false).await.0, Ok(Some((200, false))));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(answer(interim, false).await.0, Ok(Some((201, true))));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(answer(head, true).await.0, Ok(Some((200, true))));
    }

    #[tokio::test]
    async fn broken_answers_are_sorted_into_kinds() {
        assert_eq!(answer(b"", false).await.0, Ok(None));
        assert_eq!(
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", false).await.0,
            Err(ErrorKind::Reset)
        );
        assert_eq!(answer(b"HTTP/1.1 200 OK\r\nContent", false).await.0, Err(ErrorKind::Reset));
        assert_eq!(answer(b"SSH-2.0-OpenSSH\r\n\r\n", false).await.0, Err(ErrorKind::Protocol));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(answer(bad_chunk, false).await.0, Err(ErrorKind::Protocol));
        let bad_length = b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n";
        assert_eq!(answer(bad_length, false).await.0, Err(ErrorKind::Protocol));
    }
}
