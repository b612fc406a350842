//! The daemon's log: JSON lines on stderr or in `log_file`. Access lines reach a writer
//! thread through a bounded channel, so a slow disk never stalls a request; when the channel
//! is full, lines are dropped (and the drop is reported once the writer catches up).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use moat_egress_guard::{Decision, DecisionSink};
use moat_gateway::{AccessRecord, LogSink};
use tracing_subscriber::EnvFilter;

use crate::error::Error;

/// Where the log goes.
#[derive(Clone)]
enum Destination {
    Stderr,
    File(Arc<File>),
}

impl Destination {
    fn write_line(&self, line: &[u8]) {
        let _ = match self {
            Destination::Stderr => std::io::stderr().lock().write_all(line),
            Destination::File(f) => (&**f).write_all(line),
        };
    }
}

/// Sets up daemon logging; returns the gateway's access-log sink.
pub fn init(log_file: Option<&Path>) -> Result<Sinks, Error> {
    let destination = match log_file {
        None => Destination::Stderr,
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::other(&format!("opening log file {}", path.display()), e))?;
            Destination::File(Arc::new(file))
        }
    };
    let events = destination.clone();
    let make_writer = move || LineBuffer { destination: events.clone(), buf: Vec::new() };
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(EnvFilter::try_from_env("MOAT_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(make_writer)
        .try_init();

    let (sender, receiver) = sync_channel::<Vec<u8>>(8192);
    let dropped = Arc::new(AtomicU64::new(0));
    let dropped_in_writer = dropped.clone();
    std::thread::Builder::new()
        .name("moat-access-log".into())
        .spawn(move || {
            for line in receiver {
                destination.write_line(&line);
                let lost = dropped_in_writer.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(lines = lost, "access log lines dropped: the log could not keep up");
                }
            }
        })
        .map_err(|e| Error::other("starting the log writer", e))?;
    let lines = Lines { sender, dropped };
    let access = {
        let lines = lines.clone();
        Arc::new(move |record: &AccessRecord| lines.send(record)) as LogSink
    };
    let decisions = Arc::new(move |decision: &Decision| lines.send(decision)) as DecisionSink;
    Ok(Sinks { access, decisions })
}

/// The gateway's access lines and the egress guard's decision lines.
pub struct Sinks {
    pub access: LogSink,
    pub decisions: DecisionSink,
}

/// JSON lines to the writer thread, dropped (and counted) when it cannot keep up.
#[derive(Clone)]
struct Lines {
    sender: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Lines {
    fn send(&self, record: &impl serde::Serialize) {
        let Ok(mut line) = serde_json::to_vec(record) else { return };
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = self.sender.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Collects one event's bytes and writes them in one call when dropped, so lines from
/// different threads never interleave.
struct LineBuffer {
    destination: Destination,
    buf: Vec<u8>,
}

impl Write for LineBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.destination.write_line(&self.buf);
        }
    }
}
