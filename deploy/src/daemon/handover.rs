//! `moat serve --upgrade`: a new process takes the running daemon's place, and no connection
//! is refused meanwhile (CONTRACT.md "Health and lifecycle").
//!
//! The running daemon listens on `handover.sock` beside `admin.sock` (owner-only). The new
//! process, once its own config checks out, asks to take over. The running one stands by (no
//! change to containers, networks, kernel rules or the store; scoring goes on from its route
//! table) and sends its serve lock and listening sockets along (SCM_RIGHTS): the kernel keeps
//! one socket with two owners, so connections wait in its backlog for whichever accepts. The
//! new process starts on them, adopts the containers, and says when it can serve; the old one
//! acknowledges, stops accepting, finishes its in-flight requests and exits 0, and the new one
//! starts accepting. A new process that fails, or goes quiet, before that leaves the old one
//! serving as before: it resumes.
//!
//! On the wire, one JSON line each way and back: `take_over` → `offer` (with the sockets) or
//! `refused`; then `ready` → `ack`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How long the running daemon waits for the new one to say it serves: adoption of every
/// deployment's containers, their first readiness probes, and some room.
pub const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long either side waits for a line the other should send at once.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The serve lock and at most three listeners.
const MAX_FDS: usize = 4;

/// A listening socket, by the config key that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "listen")]
    Scoring,
    #[serde(rename = "tls.listen")]
    Tls,
    #[serde(rename = "metrics_listen")]
    Metrics,
}

impl Role {
    pub fn key(self) -> &'static str {
        match self {
            Role::Scoring => "listen",
            Role::Tls => "tls.listen",
            Role::Metrics => "metrics_listen",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    TakeOver {
        pid: u32,
    },
    /// `serving`: each deployment's ready instances (`endpoint/deployment`), which the new
    /// daemon must have too before the old one lets go.
    Offer {
        pid: u32,
        listeners: Vec<Role>,
        serving: BTreeMap<String, usize>,
    },
    Refused {
        reason: String,
    },
    Ready,
    Ack,
}

/// What the running daemon hands over: its serve lock and its listening sockets (duplicates
/// of them, taken at start).
pub struct Offer {
    pub lock: OwnedFd,
    pub listeners: Vec<(Role, OwnedFd)>,
}

/// What the running daemon does while another takes its place.
pub trait StandBy: Send + Sync {
    /// Stops every change to containers, networks, kernel rules and the store, and says how
    /// many ready instances each deployment has. Err(why) when it cannot hand over now (then
    /// it has resumed already).
    fn stand_by(&self) -> Result<BTreeMap<String, usize>, String>;
    /// Takes up again after a hand-over that did not happen.
    fn resume(&self);
}

/// How one request to take over ended, on the running daemon's side.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new process serves: this one stops accepting, drains and exits.
    HandedOver { to: u32 },
    /// Nothing changed hands; this daemon serves on.
    Kept(String),
}

/// The running daemon's side of one connection to `handover.sock`. Blocking: run it on a
/// blocking thread.
pub fn offer(stream: UnixStream, offer: &Offer, standby: &dyn StandBy) -> Outcome {
    let mut reader = BufReader::new(&stream);
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    let pid = match read_line(&mut reader) {
        Ok(Line::TakeOver { pid }) => pid,
        Ok(other) => return Outcome::Kept(format!("expected take_over, got {other:?}")),
        Err(e) => return Outcome::Kept(e),
    };
    let serving = match standby.stand_by() {
        Ok(serving) => serving,
        Err(reason) => {
            let _ = write_line(&stream, &Line::Refused { reason: reason.clone() }, &[]);
            return Outcome::Kept(reason);
        }
    };
    let mut fds: Vec<BorrowedFd<'_>> = vec![offer.lock.as_fd()];
    fds.extend(offer.listeners.iter().map(|(_, fd)| fd.as_fd()));
    let roles = offer.listeners.iter().map(|(role, _)| *role).collect();
    if let Err(e) =
        write_line(&stream, &Line::Offer { pid: std::process::id(), listeners: roles, serving }, &fds)
    {
        standby.resume();
        return Outcome::Kept(format!("sending the sockets to pid {pid}: {e}"));
    }
    let _ = stream.set_read_timeout(Some(READY_WITHIN));
    match read_line(&mut reader) {
        Ok(Line::Ready) => match write_line(&stream, &Line::Ack, &[]) {
            Ok(()) => Outcome::HandedOver { to: pid },
            Err(e) => {
                standby.resume();
                Outcome::Kept(format!("pid {pid} said it serves, but cannot be told to go on: {e}"))
            }
        },
        Ok(other) => {
            standby.resume();
            Outcome::Kept(format!("pid {pid} sent {other:?} instead of ready"))
        }
        Err(e) => {
            standby.resume();
            Outcome::Kept(format!("pid {pid} did not get to serve: {e}"))
        }
    }
}

/// The new process's side, from the offer to the acknowledgement.
pub struct TakeOver {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// The running daemon's process id.
    pub from: u32,
    /// Ready instances per deployment in the running daemon.
    pub serving: BTreeMap<String, usize>,
}

/// What changed hands: the serve lock and the listening sockets.
pub struct Handed {
    pub lock: File,
    pub listeners: Vec<(Role, std::net::TcpListener)>,
}

/// Asks the daemon on `socket` to hand over. Blocking.
pub fn take_over(socket: &Path) -> Result<(TakeOver, Handed), Error> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        Error::Other(format!(
            "no running moat serve to take over from (handover socket {}: {e})",
            socket.display()
        ))
    })?;
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    write_line(&stream, &Line::TakeOver { pid: std::process::id() }, &[])
        .map_err(|e| Error::Other(format!("asking the running daemon to hand over: {e}")))?;
    let (line, mut fds) =
        recv_line(&stream).map_err(|e| Error::Other(format!("the running daemon's offer: {e}")))?;
    let (from, roles, serving) = match line {
        Line::Offer { pid, listeners, serving } => (pid, listeners, serving),
        Line::Refused { reason } => {
            return Err(Error::Conflict(format!("the running daemon cannot hand over now: {reason}")));
        }
        other => return Err(Error::Other(format!("the running daemon sent {other:?} instead of an offer"))),
    };
    if fds.len() != roles.len() + 1 {
        return Err(Error::Other(format!(
            "the running daemon sent {} sockets for {} listeners and the lock",
            fds.len(),
            roles.len()
        )));
    }
    let listener_fds = fds.split_off(1);
    let lock = File::from(fds.remove(0));
    let listeners = roles
        .into_iter()
        .zip(listener_fds)
        .map(|(role, fd)| (role, std::net::TcpListener::from(fd)))
        .collect();
    let reader = BufReader::new(stream.try_clone().map_err(|e| Error::other("the handover socket", e))?);
    Ok((TakeOver { stream, reader, from, serving }, Handed { lock, listeners }))
}

impl TakeOver {
    /// Tells the running daemon this process serves, and waits for it to let go.
    pub fn ready(mut self) -> Result<(), Error> {
        let _ = self.stream.set_read_timeout(Some(ANSWER_WITHIN));
        write_line(&self.stream, &Line::Ready, &[]).map_err(|e| {
            Error::Other(format!("telling the running daemon (pid {}) to let go: {e}", self.from))
        })?;
        match read_line(&mut self.reader) {
            Ok(Line::Ack) => Ok(()),
            Ok(other) => Err(Error::Other(format!("the running daemon sent {other:?} instead of ack"))),
            Err(e) => Err(Error::Other(format!(
                "the running daemon (pid {}) serves on, having given up on this one: {e}",
                self.from
            ))),
        }
    }
}

fn write_line(stream: &UnixStream, line: &Line, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
    let mut bytes = serde_json::to_vec(line).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    if fds.is_empty() {
        return (&*stream).write_all(&bytes).map_err(|e| e.to_string());
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(format!("{} sockets do not fit one message", fds.len()));
    }
    // The sockets ride on the line's bytes; a short write would split them from it.
    let sent = rustix::net::sendmsg(stream, &[IoSlice::new(&bytes)], &mut control, SendFlags::empty())
        .map_err(|e| e.to_string())?;
    if sent != bytes.len() {
        return Err(format!("sent {sent} of {} bytes", bytes.len()));
    }
    Ok(())
}

/// The first line and the sockets that came with it. The offer is small and sent in one
/// message, so one receive holds it whole.
fn recv_line(stream: &UnixStream) -> Result<(Line, Vec<OwnedFd>), String> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received =
        rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)
            .map_err(|e| e.to_string())?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let bytes = &buf[..received.bytes.min(buf.len())];
    let text = bytes.strip_suffix(b"\n").ok_or("no whole line (closed, or longer than expected)")?;
    let line = serde_json::from_slice(text).map_err(|e| format!("not a handover line: {e}"))?;
    Ok((line, fds))
}

fn read_line(reader: &mut impl BufRead) -> Result<Line, String> {
    let mut text = String::new();
    // A line is a few dozen bytes; more is not the other moat.
    let read = reader.by_ref().take(4096).read_line(&mut text).map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("it closed the connection".into());
    }
    serde_json::from_str(text.trim_end()).map_err(|e| format!("not a handover line: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the running daemon was asked to do.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<&'static str>>, Option<String>);

    impl StandBy for Recorded {
        fn stand_by(&self) -> Result<BTreeMap<String, usize>, String> {
            self.0.lock().expect("lock").push("stand_by");
            match &self.1 {
                Some(reason) => {
                    self.0.lock().expect("lock").push("resume");
                    Err(reason.clone())
                }
                None => Ok(BTreeMap::from([("ep/blue".to_string(), 2)])),
            }
        }
        fn resume(&self) {
            self.0.lock().expect("lock").push("resume");
        }
    }

    fn the_offer() -> (Offer, std::net::TcpListener, File) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lock = tempfile_in_temp();
        let offer = Offer {
            lock: OwnedFd::from(lock.try_clone().expect("dup")),
            listeners: vec![(Role::Scoring, OwnedFd::from(listener.try_clone().expect("dup")))],
        };
        (offer, listener, lock)
    }

    fn tempfile_in_temp() -> File {
        let path = std::env::temp_dir().join(format!(
            "moat-handover-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::create(&path).expect("file");
        let _ = std::fs::remove_file(&path);
        file
    }

    #[test]
    fn the_sockets_change_hands_and_the_old_daemon_lets_go_once_the_new_one_is_ready() {
        let (offer_made, listener, _lock) = the_offer();
        let (old_end, new_end) = UnixStream::pair().expect("pair");
        let standby = Recorded::default();
        let new_side = std::thread::spawn(move || {
            let _ = new_end.set_read_timeout(Some(ANSWER_WITHIN));
            write_line(&new_end, &Line::TakeOver { pid: 42 }, &[]).expect("ask");
            let (line, fds) = recv_line(&new_end).expect("offer");
            let reader = BufReader::new(new_end.try_clone().expect("clone"));
            let Line::Offer { listeners, serving, .. } = line else { panic!("{line:?}") };
            assert_eq!(listeners, vec![Role::Scoring]);
            assert_eq!(serving, BTreeMap::from([("ep/blue".to_string(), 2)]));
            assert_eq!(fds.len(), 2, "the lock and one listener");
            let taken = std::net::TcpListener::from(fds.into_iter().nth(1).expect("listener"));
            let over = TakeOver { stream: new_end, reader, from: 1, serving: BTreeMap::new() };
            over.ready().expect("ack");
            taken
        });
        assert_eq!(offer(old_end, &offer_made, &standby), Outcome::HandedOver { to: 42 });
        let taken = new_side.join().expect("new side");
        // The same socket: what connects to the old address is accepted on the new side.
        assert_eq!(taken.local_addr().expect("addr"), listener.local_addr().expect("addr"));
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = taken.accept().expect("accepted by the new owner");
        assert_eq!(accepted.peer_addr().expect("peer"), client.local_addr().expect("local"));
        assert_eq!(*standby.0.lock().expect("lock"), vec!["stand_by"]);
    }

    #[test]
    fn a_new_process_that_goes_away_before_it_is_ready_leaves_the_old_one_serving() {
        let (offer_made, _listener, _lock) = the_offer();
        let (old_end, new_end) = UnixStream::pair().expect("pair");
        let standby = Recorded::default();
        let new_side = std::thread::spawn(move || {
            write_line(&new_end, &Line::TakeOver { pid: 42 }, &[]).expect("ask");
            let _ = recv_line(&new_end).expect("offer");
            drop(new_end);
        });
        let outcome = offer(old_end, &offer_made, &standby);
        new_side.join().expect("new side");
        assert!(
            matches!(&outcome, Outcome::Kept(why) if why.contains("did not get to serve")),
            "{outcome:?}"
        );
        assert_eq!(*standby.0.lock().expect("lock"), vec!["stand_by", "resume"]);
    }

    #[test]
    fn a_daemon_that_cannot_stand_by_refuses_and_sends_no_socket() {
        let (offer_made, _listener, _lock) = the_offer();
        let (old_end, new_end) = UnixStream::pair().expect("pair");
        let standby = Recorded(Mutex::default(), Some("deployment blue is being applied".into()));
        let new_side = std::thread::spawn(move || {
            write_line(&new_end, &Line::TakeOver { pid: 42 }, &[]).expect("ask");
            recv_line(&new_end).expect("answer")
        });
        let outcome = offer(old_end, &offer_made, &standby);
        let (line, fds) = new_side.join().expect("new side");
        assert!(matches!(line, Line::Refused { reason } if reason.contains("being applied")));
        assert!(fds.is_empty());
        assert!(matches!(outcome, Outcome::Kept(_)));
    }

    #[test]
    fn anything_but_a_take_over_request_changes_nothing() {
        let (offer_made, _listener, _lock) = the_offer();
        let (old_end, new_end) = UnixStream::pair().expect("pair");
        let standby = Recorded::default();
        (&new_end).write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        assert!(matches!(offer(old_end, &offer_made, &standby), Outcome::Kept(_)));
        assert!(standby.0.lock().expect("lock").is_empty(), "never stood by");
    }
}
