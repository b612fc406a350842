//! One client connection on HTTP/1.1, request after request:
//!
//! 1. head: read until a whole request head is in, or refuse it (400, 414, 431, 501: the
//!    answer says why in the access line, and the connection closes);
//! 2. serve: the request life runs with the connection lent to the request's body;
//! 3. answer: the head and whatever of the body is ready go out in one write; while the body
//!    must be waited for, what is pending goes out, and while it waits, a client that goes
//!    away is seen at once. Each write is whole before the body is asked for more (a slow
//!    client slows the container, never fills moat's memory);
//! 4. next: the connection carries another request unless the client, the answer or the
//!    drain said close, or the request's body was left unread.
//!
//! Pipelined requests wait in the read buffer until the answer before them is written.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWriteExt;

use super::body::{ClientIo, Lent, RequestBody};
use super::head::{self, Framing, Parsed, Persist, Refused};
use crate::drain::Graceful;
use crate::fields::{Fields, HeadFields};
use crate::wire::tokens;

/// Room made in the read buffer before each read of a head.
const HEAD_READ_BYTES: usize = 8 * 1024;
/// Bytes of the client's next requests read ahead while an answer is written, at most.
const READ_AHEAD_BYTES: usize = 64 * 1024;
/// A body piece up to this size is copied beside its framing into one write; a larger one
/// is written from where it lies.
const COPY_BYTES: usize = 16 * 1024;
/// Pieces ready at once are joined into one write up to this size.
const WRITE_BYTES: usize = 64 * 1024;

/// What a connection serves its requests with.
pub trait Serve: Send + Sync {
    type Body: Body<Data = Bytes, Error: Send> + BodyFields + Send + Unpin;

    /// The answer to one request; the request's body reads from the connection. The
    /// request's header map is empty: its fields are `fields`.
    fn serve<'a>(
        &'a self,
        request: Request<RequestBody<'a>>,
        fields: HeadFields,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'a;

    /// A head refused before it became a request (the codec has answered it).
    fn refused(&self, refused: &Refused);
}

/// An answer body may bring header fields of its own (a relayed answer's), written after the
/// answer map's: `field` is called with each, in order. Called rather than iterated: an
/// iterator over a relayed answer's two kinds of fields was a nest of adapters that cost more
/// than writing the fields.
pub trait BodyFields {
    fn each_field(&self, _field: impl FnMut(&[u8], &[u8])) {}
}

/// No fields but the map's.
impl BodyFields for () {}

/// A head's fields as they came (a relayed answer's).
impl BodyFields for HeadFields {
    fn each_field(&self, mut field: impl FnMut(&[u8], &[u8])) {
        for (name, value) in self.each() {
            field(name, value);
        }
    }
}

pin_project_lite::pin_project! {
    /// A served connection: a future that ends with the connection, and that the drain can
    /// ask to end once its request in flight, if any, is answered.
    pub struct Http1<F> {
        #[pin]
        future: F,
        asked: Arc<AtomicBool>,
    }
}

impl<F: Future> Future for Http1<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

impl<F: Future> Graceful for Http1<F> {
    /// The drain polls the connection right after this, so a connection waiting between
    /// requests sees the flag at once.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.asked.store(true, Ordering::Release);
    }
}

/// Serves HTTP/1.1 requests on `io` with `service` until the connection ends.
pub fn serve_connection<I: ClientIo, S: Serve>(
    io: I,
    service: S,
    max_head_bytes: usize,
) -> Http1<impl Future<Output = io::Result<()>> + Send> {
    let asked = Arc::new(AtomicBool::new(false));
    Http1 { future: run(io, service, max_head_bytes, asked.clone()), asked }
}

async fn run<I: ClientIo, S: Serve>(
    mut io: I,
    service: S,
    max_head_bytes: usize,
    asked: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(HEAD_READ_BYTES);
    let mut out = Vec::with_capacity(1024);
    loop {
        let Parsed { line, fields, body: mut framing, keep_alive, expect_continue } =
            match next_head(&mut io, &mut buf, max_head_bytes, &asked).await? {
                None => return Ok(()),
                Some(Ok(parsed)) => parsed,
                Some(Err(refused)) => {
                    out.clear();
                    head::write_answer_head(
                        &mut out,
                        refused.status,
                        &HeaderMap::new(),
                        &(),
                        Framing::Length(0),
                        Persist::Close,
                    );
                    let written = write_all(&mut io, [&out[..]]).await;
                    service.refused(&refused);
                    written?;
                    return io.shutdown().await;
                }
            };
        let mut answering =
            Answering { version: line.version, head_only: line.method == Method::HEAD, keep_alive };
        let response = {
            let lent = Lent::new(&mut io, &mut buf, &mut framing, expect_continue);
            // Pinned where it is made: the request's future is kilobytes, and `select!` moved
            // it twice (a measurable share of a small request's instructions).
            let mut served = pin!(service.serve(line.request(RequestBody::new(&lent)), fields));
            // A client that goes away before its answer ends the request (its queue place,
            // its call to the container) instead of waiting for an answer no one reads.
            tokio::select! {
                biased;
                response = &mut served => response,
                gone = poll_fn(|cx| Lent::poll_gone(&lent, cx)) => return Err(gone),
            }
        };
        answering.keep_alive &= !asked.load(Ordering::Acquire) && !says_close(response.headers());
        if !framing.ended() {
            // An unread rest of the body is skipped when it is here already; otherwise where
            // the next request starts is unknown, and the connection ends with this answer.
            match framing.exact() {
                Some(left) if buf.len() as u64 >= left => buf.advance(left as usize),
                _ => answering.keep_alive = false,
            }
        }
        if !write_answer(&mut io, &mut buf, &mut out, response, answering).await? {
            return io.shutdown().await;
        }
    }
}

/// The next request's head; `None` when the connection ends between requests (the client
/// closed it, or the drain asked).
async fn next_head<I: ClientIo>(
    io: &mut I,
    buf: &mut BytesMut,
    max_head_bytes: usize,
    asked: &AtomicBool,
) -> io::Result<Option<Result<Parsed, Refused>>> {
    loop {
        match head::parse_request(buf, max_head_bytes) {
            Ok(Some(parsed)) => return Ok(Some(Ok(parsed))),
            Err(refused) => return Ok(Some(Err(refused))),
            Ok(None) => {}
        }
        buf.reserve(HEAD_READ_BYTES);
        let read = poll_fn(|cx| {
            if buf.is_empty() && asked.load(Ordering::Acquire) {
                return Poll::Ready(Ok(None));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut *buf).map_ok(Some)
        })
        .await?;
        match read {
            None => return Ok(None),
            Some(0) if buf.is_empty() => return Ok(None),
            Some(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed mid-head"));
            }
            Some(_) => {}
        }
    }
}

/// What the answer's framing depends on.
#[derive(Clone, Copy)]
struct Answering {
    version: Version,
    head_only: bool,
    keep_alive: bool,
}

/// Writes the answer; `Ok(true)` when the connection can carry another request.
async fn write_answer<I: ClientIo, B: Body<Data = Bytes> + BodyFields + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    response: Response<B>,
    answering: Answering,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let framing = framing(parts.status, &body, answering);
    let keep_alive = answering.keep_alive && framing != Framing::UntilClose;
    let persist = match (keep_alive, answering.version) {
        (false, _) => Persist::Close,
        (true, Version::HTTP_10) => Persist::KeepAlive,
        (true, _) => Persist::Default,
    };
    out.clear();
    head::write_answer_head(out, parts.status, &parts.headers, &body, framing, persist);
    if let Framing::Bodiless(_) = framing {
        write_all(io, [&out[..]]).await?;
        return Ok(keep_alive);
    }
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let chunked = framing == Framing::Chunked;
    loop {
        // What is ready now joins what waits in `out` (the head, earlier pieces); only when
        // the body must be waited for does `out` go to the client.
        let frame = if body.is_end_stream() {
            None
        } else {
            match poll_once(&mut body).await {
                Some(frame) => frame,
                None => {
                    write_all(io, [&out[..]]).await?;
                    out.clear();
                    next_frame(io, buf, &mut body).await?
                }
            }
        };
        let data = match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                write_all(io, [&out[..]]).await?;
                // An answer shorter than its length: only the close tells the client.
                return Ok(keep_alive && left.is_none_or(|l| l == 0));
            }
            // Cut (a stall, a limit, the container lost): no proper end, so that no client
            // takes it for a whole answer.
            Some(Err(_)) => {
                write_all(io, [&out[..]]).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if let Some(left) = &mut left {
            if data.len() as u64 > *left {
                write_all(io, [&out[..]]).await?;
                return Ok(false);
            }
            *left -= data.len() as u64;
        }
        if chunked {
            head::chunk_size_line(out, data.len());
        }
        let after: &[u8] = if chunked { b"\r\n" } else { b"" };
        if data.len() <= COPY_BYTES {
            out.extend_from_slice(&data);
            out.extend_from_slice(after);
        } else {
            write_all(io, [&out[..], &data[..], after]).await?;
            out.clear();
        }
        if out.len() >= WRITE_BYTES {
            write_all(io, [&out[..]]).await?;
            out.clear();
        }
    }
}

/// The answer's framing: by length when the body knows it, else chunks (HTTP/1.1) or the
/// connection's end (HTTP/1.0).
fn framing<B: Body>(status: StatusCode, body: &B, answering: Answering) -> Framing {
    let exact = body.size_hint().exact();
    if answering.head_only {
        Framing::Bodiless(exact.filter(|n| *n > 0))
    } else if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        Framing::Bodiless(None)
    } else if let Some(n) = exact {
        Framing::Length(n)
    } else if answering.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::UntilClose
    }
}

fn says_close(headers: &HeaderMap) -> bool {
    headers.contains_key(CONNECTION)
        && tokens(headers.all(&CONNECTION)).any(|t| t.eq_ignore_ascii_case("close"))
}

/// The body's next frame if it is ready now.
async fn poll_once<B: Body + Unpin>(body: &mut B) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// The body's next frame; while it is not there, the client's side is watched, so that a
/// client that goes away ends the answer (`Err`) instead of waiting for the container.
async fn next_frame<I: ClientIo, B: Body + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    body: &mut B,
) -> io::Result<Option<Result<Frame<B::Data>, B::Error>>> {
    poll_fn(|cx| {
        if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
            return Poll::Ready(Ok(frame));
        }
        poll_gone(&mut *io, buf, cx).map(Err)
    })
    .await
}

/// Reads what the client sends while it waits for an answer (a pipelined request, kept in
/// `buf` up to [`READ_AHEAD_BYTES`]); ready when the client has gone away. As hyper does by
/// default, a client that shuts its side down counts as gone.
pub(super) fn poll_gone(io: &mut dyn ClientIo, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Error> {
    while buf.len() < READ_AHEAD_BYTES {
        // Room is made only when there is none: the buffer is still shared with the request's
        // head and body, so making room here would mean a new buffer per request.
        if buf.capacity() == buf.len() {
            buf.reserve(HEAD_READ_BYTES);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut *buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(io::ErrorKind::ConnectionAborted.into()),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(e),
            Poll::Pending => break,
        }
    }
    Poll::Pending
}

/// Writes `parts` whole, in as few writes as the connection takes, and flushes them (a TLS
/// connection holds records until then).
async fn write_all<I: ClientIo, const N: usize>(io: &mut I, parts: [&[u8]; N]) -> io::Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    //! The codec on an in-memory pipe, with a service that echoes what it was sent or streams
    //! what the test hands it.

    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// A body of the pieces sent on a channel; its length is unknown.
    struct Pieces(mpsc::Receiver<Bytes>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|piece| piece.map(|p| Ok(Frame::data(p))))
        }
    }

    impl BodyFields for BoxBody<Bytes, Infallible> {}

    #[derive(Default)]
    struct Echo {
        /// `/stream` answers with these pieces.
        stream: Mutex<Option<mpsc::Receiver<Bytes>>>,
        /// `/hang` reads its body, then never answers; it holds this until it is dropped.
        hanging: Mutex<Option<oneshot::Sender<()>>>,
        refused: Mutex<Vec<u16>>,
    }

    impl Serve for Arc<Echo> {
        type Body = BoxBody<Bytes, Infallible>;

        async fn serve<'a>(
            &'a self,
            request: Request<RequestBody<'a>>,
            _: HeadFields,
        ) -> Response<Self::Body> {
            let (parts, body) = request.into_parts();
            if parts.uri.path() == "/stream" {
                let pieces = self.stream.lock().expect("stream").take().expect("one stream");
                return Response::new(BoxBody::new(Pieces(pieces)));
            }
            if parts.uri.path() == "/unread" {
                return Response::new(BoxBody::new(Full::new(Bytes::from_static(b"unread"))));
            }
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => Bytes::from(e.to_string()),
            };
            if parts.uri.path() == "/hang" {
                let _held = self.hanging.lock().expect("hanging").take();
                std::future::pending::<()>().await;
            }
            let text = format!("{} {} {}", parts.method, parts.uri, String::from_utf8_lossy(&body));
            Response::new(BoxBody::new(Full::new(Bytes::from(text))))
        }

        fn refused(&self, refused: &Refused) {
            self.refused.lock().expect("refused").push(refused.status.as_u16());
        }
    }

    /// An [`Echo`] whose `/stream` answers with what is sent on the sender.
    fn streaming() -> (Arc<Echo>, mpsc::Sender<Bytes>) {
        let (pieces, stream) = mpsc::channel(1);
        let echo = Echo { stream: Mutex::new(Some(stream)), ..Echo::default() };
        (Arc::new(echo), pieces)
    }

    /// A connection served by an [`Echo`]; the task ends with the connection.
    fn connection(echo: &Arc<Echo>) -> (DuplexStream, tokio::task::JoinHandle<io::Result<()>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_connection(server, echo.clone(), 1024));
        (client, served)
    }

    /// Reads until `end` has come (or the connection closed) and returns what came.
    async fn read_until(client: &mut DuplexStream, end: &str) -> String {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while !text.ends_with(end.as_bytes()) {
            match tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await {
                Ok(Ok(1)) => text.push(byte[0]),
                Ok(_) => break,
                Err(_) => panic!("nothing more came after {:?}", String::from_utf8_lossy(&text)),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    async fn closed(client: &mut DuplexStream) -> bool {
        let mut rest = Vec::new();
        matches!(tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await, Ok(Ok(_)))
    }

    fn without_date(answer: &str) -> String {
        answer.lines().filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client
            .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /b?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n1\r\n!\r\n0\r\n\r\n")
            .await
            .expect("write");
        let first = read_until(&mut client, "POST /a one").await;
        assert_eq!(without_date(&first), "HTTP/1.1 200 OK\ncontent-length: 11\n\nPOST /a one");
        let second = read_until(&mut client, "POST /b?q=1 two!").await;
        assert!(second.contains("content-length: 16\r\n"), "{second}");
        client.write_all(b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n").await.expect("write");
        let third = read_until(&mut client, "GET /c ").await;
        assert!(third.contains("connection: close\r\n"), "{third}");
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn a_client_that_expects_100_continue_gets_it_before_it_sends_the_body() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client
            .write_all(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_until(&mut client, "\r\n\r\n").await, "HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"body").await.expect("write");
        assert!(read_until(&mut client, "PUT /up body").await.starts_with("HTTP/1.1 200 OK"));
    }

    #[tokio::test]
    async fn http_1_0_clients_keep_the_connection_only_when_they_ask() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.expect("write");
        assert!(read_until(&mut client, "GET /a ").await.contains("connection: keep-alive\r\n"));
        client.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.expect("write");
        assert!(read_until(&mut client, "GET /b ").await.contains("connection: close\r\n"));
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn a_streamed_answer_goes_out_piece_by_piece_in_chunks() {
        let (echo, pieces) = streaming();
        let (mut client, _served) = connection(&echo);
        client.write_all(b"GET /stream HTTP/1.1\r\n\r\n").await.expect("write");
        let head = read_until(&mut client, "\r\n\r\n").await;
        assert!(
            head.contains("transfer-encoding: chunked\r\n") && !head.contains("content-length"),
            "{head}"
        );
        pieces.send(Bytes::from_static(b"data: 1\n\n")).await.expect("send");
        assert_eq!(read_until(&mut client, "data: 1\n\n\r\n").await, "9\r\ndata: 1\n\n\r\n");
        pieces.send(Bytes::from(vec![b'x'; 20_000])).await.expect("send");
        let big = read_until(&mut client, "x\r\n").await;
        assert!(big.starts_with("4e20\r\nxxx") && big.len() == 6 + 20_000 + 2, "{}", big.len());
        drop(pieces);
        assert_eq!(read_until(&mut client, "0\r\n\r\n").await, "0\r\n\r\n");
        client.write_all(b"GET /next HTTP/1.1\r\n\r\n").await.expect("write");
        assert!(read_until(&mut client, "GET /next ").await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn an_http_1_0_stream_ends_with_the_connection() {
        let (echo, pieces) = streaming();
        let (mut client, _served) = connection(&echo);
        client.write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.expect("write");
        pieces.send(Bytes::from_static(b"all of it")).await.expect("send");
        drop(pieces);
        let answer = read_until(&mut client, "all of it").await;
        assert!(answer.contains("connection: close\r\n") && !answer.contains("chunked"), "{answer}");
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn a_client_gone_while_its_answer_waits_ends_the_answer() {
        let (echo, pieces) = streaming();
        let (mut client, served) = connection(&echo);
        client.write_all(b"GET /stream HTTP/1.1\r\n\r\n").await.expect("write");
        read_until(&mut client, "\r\n\r\n").await;
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await.expect("ended").expect("task");
        assert!(ended.is_err(), "the connection ends with the client");
        assert!(pieces.is_closed(), "and the answer's body is dropped");
    }

    #[tokio::test]
    async fn a_client_gone_while_its_request_is_served_ends_the_request() {
        let (held, dropped) = oneshot::channel();
        let echo = Arc::new(Echo { hanging: Mutex::new(Some(held)), ..Echo::default() });
        let (mut client, served) = connection(&echo);
        client.write_all(b"POST /hang HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").await.expect("write");
        while echo.hanging.lock().expect("hanging").is_some() {
            tokio::task::yield_now().await;
        }
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await.expect("ended").expect("task");
        assert!(ended.is_err(), "the connection ends with the client");
        assert!(dropped.await.is_err(), "and the request with it");
    }

    #[tokio::test]
    async fn an_unread_body_ends_the_connection_unless_it_is_here_already() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client.write_all(b"POST /unread HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").await.expect("write");
        let here = read_until(&mut client, "unread").await;
        assert!(!here.contains("connection: close"), "{here}");
        client.write_all(b"POST /unread HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}").await.expect("write");
        let missing = read_until(&mut client, "unread").await;
        assert!(missing.contains("connection: close\r\n"), "{missing}");
        assert!(closed(&mut client).await);
    }

    #[tokio::test]
    async fn a_head_answer_says_the_length_without_the_body() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client.write_all(b"HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n").await.expect("write");
        let answer = read_until(&mut client, "GET /g ").await;
        let (head, rest) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains("content-length: 8\r\n"), "{head}");
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "no body after the HEAD answer: {rest}");
    }

    #[tokio::test]
    async fn a_refused_head_is_answered_and_the_connection_closes() {
        let echo = Arc::new(Echo::default());
        let (mut client, _served) = connection(&echo);
        client
            .write_all(format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000)).as_bytes())
            .await
            .expect("write");
        let answer = read_until(&mut client, "\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
        assert!(answer.contains("content-length: 0\r\nconnection: close\r\n"), "{answer}");
        assert!(closed(&mut client).await);
        assert_eq!(*echo.refused.lock().expect("refused"), [431]);
    }

    #[tokio::test]
    async fn asked_to_end_an_idle_connection_ends_and_a_busy_one_answers_first() {
        let (echo, pieces) = streaming();
        let (_idle_client, idle_server) = tokio::io::duplex(4096);
        let (mut busy_client, busy_server) = tokio::io::duplex(4096);
        let mut idle = Box::pin(serve_connection(idle_server, echo.clone(), 1024));
        let mut busy = Box::pin(serve_connection(busy_server, echo.clone(), 1024));
        busy_client.write_all(b"GET /stream HTTP/1.1\r\n\r\n").await.expect("write");
        let (idle_ended, busy_ended, ()) = tokio::join!(
            async {
                assert!(poll_once(&mut idle).await.is_none(), "waits for a request");
                idle.as_mut().graceful_shutdown();
                idle.await
            },
            async {
                assert!(poll_once(&mut busy).await.is_none(), "waits for its answer");
                busy.as_mut().graceful_shutdown();
                busy.await
            },
            async {
                pieces.send(Bytes::from_static(b"last")).await.expect("send");
                drop(pieces);
            },
        );
        idle_ended.expect("idle ended");
        busy_ended.expect("busy ended");
        let answer = read_until(&mut busy_client, "0\r\n\r\n").await;
        assert!(answer.contains("\r\n4\r\nlast\r\n0\r\n\r\n"), "answered whole: {answer}");
        assert!(closed(&mut busy_client).await, "then closed");
    }

    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *future).poll(cx) {
                Poll::Ready(out) => Some(out),
                Poll::Pending => None,
            })
        })
        .await
    }
}
