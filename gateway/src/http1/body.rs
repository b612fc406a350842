//! A request's body, read off the client's connection only when the request life asks for
//! it ([`crate::intake`], after the credential check): the connection is lent to the body
//! for the request's life, and what the head's read brought already is taken first.

use std::io;
use std::pin::Pin;
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
const READ_BYTES: usize = 16 * 1024;

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

/// The body of a request on an HTTP/1.1 connection.
pub struct RequestBody<'a> {
    io: &'a mut dyn ClientIo,
    buf: &'a mut BytesMut,
    framing: &'a mut BodyFraming,
    /// Bytes of `100 Continue` still to write before the first read (the client waits for
    /// them before it sends the body).
    continue_left: usize,
}

impl<'a> RequestBody<'a> {
    pub fn new(
        io: &'a mut dyn ClientIo,
        buf: &'a mut BytesMut,
        framing: &'a mut BodyFraming,
        expect_continue: bool,
    ) -> RequestBody<'a> {
        let continue_left = if expect_continue && !framing.ended() { CONTINUE.len() } else { 0 };
        RequestBody { io, buf, framing, continue_left }
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
}

impl Body for RequestBody<'_> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match this.framing.next(this.buf) {
                Ok(Next::Data(data)) => {
                    // The client sent without waiting: no interim answer is due any more.
                    this.continue_left = 0;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Next::End) => return Poll::Ready(None),
                Ok(Next::More) => {}
                Err(e) => return Poll::Ready(Some(Err(BodyError::Framing(e)))),
            }
            if this.continue_left > 0 {
                ready!(this.poll_continue(cx))?;
            }
            this.buf.reserve(READ_BYTES);
            let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *this.io), cx, this.buf))?;
            if n == 0 {
                return Poll::Ready(Some(Err(BodyError::Closed)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
