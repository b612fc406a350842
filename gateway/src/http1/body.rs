//! A request's body, read off the client's connection only when the request life asks for
//! it ([`crate::intake`], after the credential check): the connection is lent for the
//! request's life, and what the head's read brought already is taken first. Once the body is
//! whole, the lent connection is watched for the client going away.

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::wire::{BodyFraming, Next};

/// The client's side of a connection, as the codec and a body see it.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Room made in the read buffer before each read of the body.
const BODY_READ_BYTES: usize = 16 * 1024;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is not framed right: {0}")]
    Framing(String),
    #[error("the client closed the connection before the body's end")]
    Closed,
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
}

/// The client's connection while one of its requests is served: shared, under a lock no one
/// else contends for, by the request's body and the watch for the client going away (both
/// run in the connection's task).
pub struct Lent<'a> {
    io: &'a mut dyn ClientIo,
    buf: &'a mut BytesMut,
    framing: &'a mut BodyFraming,
    /// Bytes of `100 Continue` still to write before the first read (the client waits for
    /// them before it sends the body).
    continue_left: usize,
}

impl<'a> Lent<'a> {
    pub fn new(
        io: &'a mut dyn ClientIo,
        buf: &'a mut BytesMut,
        framing: &'a mut BodyFraming,
        expect_continue: bool,
    ) -> Mutex<Lent<'a>> {
        let continue_left = if expect_continue && !framing.ended() { CONTINUE.len() } else { 0 };
        Mutex::new(Lent { io, buf, framing, continue_left })
    }

    /// Ready when the client has gone away, once the body is whole (until then the body's
    /// reads see it); what it pipelines meanwhile is kept.
    pub fn poll_gone(lent: &Mutex<Lent<'_>>, cx: &mut Context<'_>) -> Poll<io::Error> {
        let mut lent = lock(lent);
        let lent = &mut *lent;
        if !lent.framing.ended() {
            return Poll::Pending;
        }
        super::connection::poll_gone(&mut *lent.io, lent.buf, cx)
    }

    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.continue_left > 0 {
            let from = CONTINUE.len() - self.continue_left;
            let n = ready!(Pin::new(&mut *self.io).poll_write(cx, &CONTINUE[from..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_left -= n;
        }
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.framing.next(self.buf) {
                Ok(Next::Data(data)) => {
                    // The client sent without waiting: no interim answer is due any more.
                    self.continue_left = 0;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Next::End) => return Poll::Ready(None),
                Ok(Next::More) => {}
                Err(e) => return Poll::Ready(Some(Err(BodyError::Framing(e)))),
            }
            if self.continue_left > 0 {
                ready!(self.poll_continue(cx))?;
            }
            self.buf.reserve(BODY_READ_BYTES);
            let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, self.buf))?;
            if n == 0 {
                return Poll::Ready(Some(Err(BodyError::Closed)));
            }
        }
    }
}

/// Nothing holds the lock across a panic that could leave the connection half-changed in a
/// way a later reader would trust more than the panic itself: use it as it is.
fn lock<'l, 'a>(lent: &'l Mutex<Lent<'a>>) -> MutexGuard<'l, Lent<'a>> {
    lent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The body of a request on an HTTP/1.1 connection.
pub struct RequestBody<'a> {
    lent: &'a Mutex<Lent<'a>>,
}

impl<'a> RequestBody<'a> {
    pub fn new(lent: &'a Mutex<Lent<'a>>) -> RequestBody<'a> {
        RequestBody { lent }
    }
}

impl Body for RequestBody<'_> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        lock(self.lent).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        lock(self.lent).framing.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match lock(self.lent).framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
