//! Request bodies, read whole before the call (a retry and a mirror copy send them again):
//!
//! - within `max_body_bytes` (413), refused before a byte is read when the declared length is
//!   already over it;
//! - within `header_read_timeout_ms` for the whole body (408), so a slow upload cannot hold
//!   its memory for long;
//! - within the node's budget of buffered body bytes (`max_buffered_body_bytes`, 503): every
//!   piece is counted against it as it arrives, so a slow upload holds only what it has sent,
//!   and many of them together never more than the budget. A declared length the budget
//!   cannot hold now is refused before a byte is read.
//!
//! The body's bytes own their share of the budget: it is given back when the last copy of
//! them (the live request's, a retry's, a mirror copy's) is gone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::reject::Reject;

/// The bytes of request bodies the node may hold at once.
#[derive(Debug)]
pub struct Budget {
    free: AtomicUsize,
}

impl Budget {
    pub fn new(total: usize) -> Arc<Budget> {
        Arc::new(Budget { free: AtomicUsize::new(total) })
    }

    /// Bytes not held by any body now.
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.free.fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| free.checked_sub(n)).is_ok()
    }

    fn give(&self, n: usize) {
        self.free.fetch_add(n, Ordering::AcqRel);
    }
}

/// A share of the budget, given back on drop.
struct Share {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Share {
    fn grow(&mut self, n: usize) -> bool {
        let taken = self.budget.take(n);
        if taken {
            self.bytes += n;
        }
        taken
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// A body's bytes together with their share of the budget.
struct Owned {
    bytes: Bytes,
    _share: Share,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The limits a body is read within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub deadline: Duration,
}

/// Reads the whole body within `limits` and the budget. The declared length is the body's
/// exact size hint: the HTTP/1.1 codec and hyper's HTTP/2 have read `Content-Length` already.
pub async fn read<B>(body: B, limits: Limits, budget: &Arc<Budget>) -> Result<Bytes, Reject>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(Reject::BodyTooLarge(limits.max_bytes));
    }
    if declared.is_some_and(|n| n > budget.free() as u64) {
        return Err(Reject::BodyBudgetFull);
    }
    let share = Share { budget: budget.clone(), bytes: 0 };
    let mut reading = std::pin::pin!(gather(body, limits.max_bytes, share));
    // The usual small body came with its head and is whole at the first look: no timer for
    // it. An unused tokio timer still costs a clock reading, and the time driver's lock when
    // it is dropped.
    if let Poll::Ready(read) = std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await {
        return read;
    }
    match tokio::time::timeout(limits.deadline, reading).await {
        Ok(read) => read,
        Err(_) => Err(Reject::BodyTimeout(limits.deadline.as_millis())),
    }
}

async fn gather<B>(mut body: B, max: usize, mut share: Share) -> Result<Bytes, Reject>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // One piece (the usual small JSON body) is kept as it came; more are joined.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Reject::BadBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        if share.bytes + data.len() > max {
            return Err(Reject::BodyTooLarge(max));
        }
        if !share.grow(data.len()) {
            return Err(Reject::BodyBudgetFull);
        }
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                // Grown as pieces come, never to a declared size: memory follows what was sent.
                let mut buffer = BytesMut::with_capacity(2 * (earlier.len() + data.len()));
                buffer.extend_from_slice(&earlier);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    let bytes = joined.map(BytesMut::freeze).or(first).unwrap_or_default();
    if bytes.is_empty() {
        return Ok(bytes);
    }
    Ok(Bytes::from_owner(Owned { bytes, _share: share }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_goes_back_when_its_bytes_are_gone() {
        let budget = Budget::new(100);
        let mut share = Share { budget: budget.clone(), bytes: 0 };
        assert!(share.grow(60));
        assert!(!share.grow(41), "over the budget");
        assert!(share.grow(40));
        assert_eq!(budget.free(), 0);
        let bytes = Bytes::from_owner(Owned { bytes: Bytes::from(vec![1u8; 100]), _share: share });
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(budget.free(), 0, "a copy still holds them");
        drop(copy);
        assert_eq!(budget.free(), 100);
    }
}
