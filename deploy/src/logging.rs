//! The daemon's log: JSON lines on stderr or in `log_file`. Access and egress-decision
//! lines are appended to a shared buffer that a writer thread empties every few
//! milliseconds in one write, so a slow disk never stalls a request and a request almost
//! never wakes a thread (a channel's wake-up per line cost a fifth of the gateway's
//! throughput): only the first line into an empty buffer wakes the writer, which sleeps
//! while there is nothing to write, so an idle node's log costs nothing (it woke a hundred
//! times a second); when the buffer is full, lines are dropped and the drop is reported. Egress lines have a
//! buffer of their own: what a container makes the guard log never takes the access log's room.
//! A `log_file` is opened again on SIGHUP ([`Sinks::reopen`]), so that logrotate can move it
//! away; without one, lines go to stderr (the journal, under systemd).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::Thread;

use moat_egress_guard::{Decision, DecisionSink};
use moat_gateway::{AccessRecord, LogSink};
use tracing_subscriber::EnvFilter;

use crate::error::Error;

/// Where the log goes.
#[derive(Clone)]
enum Destination {
    Stderr,
    File(Arc<LogFile>),
}

impl Destination {
    fn write_line(&self, line: &[u8]) {
        let _ = match self {
            Destination::Stderr => std::io::stderr().lock().write_all(line),
            Destination::File(f) => (&*f.current()).write_all(line),
        };
    }
}

/// `log_file`, and the file now open under its name.
struct LogFile {
    path: PathBuf,
    file: RwLock<Arc<File>>,
}

impl LogFile {
    fn open(path: &Path) -> Result<File, Error> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::other(&format!("opening log file {}", path.display()), e))
    }

    fn current(&self) -> Arc<File> {
        self.file.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens the path again: after a rotation, a new file; lines being written finish in the old.
    fn reopen(&self) -> Result<(), Error> {
        let file = Arc::new(LogFile::open(&self.path)?);
        *self.file.write().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }
}

/// Sets up daemon logging; returns the gateway's access-log sink.
pub fn init(log_file: Option<&Path>) -> Result<Sinks, Error> {
    let destination = match log_file {
        None => Destination::Stderr,
        Some(path) => {
            let file = RwLock::new(Arc::new(LogFile::open(path)?));
            Destination::File(Arc::new(LogFile { path: path.to_path_buf(), file }))
        }
    };
    let reopen_this = destination.clone();
    let events = destination.clone();
    let flush_to = destination.clone();
    let make_writer = move || LineBuffer { destination: events.clone(), buf: Vec::new() };
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(EnvFilter::try_from_env("MOAT_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(make_writer)
        .try_init();

    let writer = Arc::new(OnceLock::new());
    let access_lines = Lines::new("access", ACCESS_PENDING_MAX, writer.clone());
    let egress_lines = Lines::new("egress decision", EGRESS_PENDING_MAX, writer.clone());
    let writers = [access_lines.clone(), egress_lines.clone()];
    let thread = std::thread::Builder::new()
        .name("moat-access-log".into())
        .spawn(move || write_continually(&writers, &destination))
        .map_err(|e| Error::other("starting the log writer", e))?;
    let _ = writer.set(thread.thread().clone());
    let access = {
        let lines = access_lines.clone();
        Arc::new(move |record: &AccessRecord| lines.append(|line| record.write_line(line))) as LogSink
    };
    let decisions = {
        let lines = egress_lines.clone();
        Arc::new(move |decision: &Decision| lines.send(decision)) as DecisionSink
    };
    let flush = Arc::new(move || {
        access_lines.write_to(&flush_to, &mut Vec::new());
        egress_lines.write_to(&flush_to, &mut Vec::new());
    }) as Arc<dyn Fn() + Send + Sync>;
    let reopen = Arc::new(move || match &reopen_this {
        Destination::Stderr => Ok(()),
        Destination::File(f) => f.reopen(),
    }) as Reopen;
    Ok(Sinks { access, decisions, flush, reopen })
}

/// The gateway's access lines and the egress guard's decision lines; `flush` writes what
/// is pending (at shutdown); `reopen` opens `log_file` again (on SIGHUP).
pub struct Sinks {
    pub access: LogSink,
    pub decisions: DecisionSink,
    pub flush: Arc<dyn Fn() + Send + Sync>,
    pub reopen: Reopen,
}

/// Opens `log_file` again (nothing to do without one).
pub type Reopen = Arc<dyn Fn() -> Result<(), Error> + Send + Sync>;

/// How often the writer empties the buffer: what a reader of the log waits at most.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Pending bytes at most; beyond them lines are dropped.
const ACCESS_PENDING_MAX: usize = 8 << 20;
const EGRESS_PENDING_MAX: usize = 1 << 20;
/// Buffer capacity kept between writes at most: a busy node's 10 ms of lines, with room.
const SPARE_MAX: usize = 1 << 20;

/// The writer thread: sleeps until a line comes, lets more gather for [`WRITE_EVERY`], and
/// writes them all; again and again.
fn write_continually(writers: &[Lines; 2], destination: &Destination) {
    // The buffers written last time, emptied and kept: swapped for the pending ones, so the
    // pending buffers keep their size instead of growing again every time.
    let mut spares = [Vec::new(), Vec::new()];
    loop {
        // An append after the check unparks this thread, and `park` then returns at once.
        while writers.iter().all(Lines::is_empty) {
            std::thread::park();
        }
        std::thread::sleep(WRITE_EVERY);
        for (lines, spare) in writers.iter().zip(&mut spares) {
            lines.write_to(destination, spare);
        }
    }
}

thread_local! {
    /// Where a line is made before it joins the pending ones, reused line after line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// JSON lines waiting for the writer, and how many were dropped.
#[derive(Clone)]
struct Lines {
    what: &'static str,
    max: usize,
    pending: Arc<Mutex<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
    /// The writer thread, woken by the first line into an empty buffer.
    writer: Arc<OnceLock<Thread>>,
}

impl Lines {
    fn new(what: &'static str, max: usize, writer: Arc<OnceLock<Thread>>) -> Lines {
        Lines { what, max, pending: Arc::default(), dropped: Arc::default(), writer }
    }

    fn is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn send(&self, record: &impl serde::Serialize) {
        self.append(|line| {
            if serde_json::to_writer(&mut *line, record).is_ok() {
                line.push(b'\n');
            } else {
                line.clear();
            }
        });
    }

    /// Adds the line `write` makes (newline included) unless the buffer is full.
    fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            write(line);
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() + line.len() >= self.max {
                drop(pending);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let first = pending.is_empty();
            pending.extend_from_slice(line);
            drop(pending);
            if first && let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        });
    }

    /// Writes the pending lines, taking them in exchange for `spare` (empty), which is left
    /// empty again with the capacity the pending lines had.
    fn write_to(&self, destination: &Destination, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()), spare);
        if !spare.is_empty() {
            destination.write_line(spare);
        }
        spare.clear();
        if spare.capacity() > SPARE_MAX {
            // A burst's worth is not kept for good.
            *spare = Vec::new();
        }
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(lines = lost, kind = self.what, "log lines dropped: the log could not keep up");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_egress_buffer_leaves_the_access_lines_their_room() {
        let (access, egress) =
            (Lines::new("access", 1024, Arc::default()), Lines::new("egress decision", 256, Arc::default()));
        for _ in 0..100 {
            egress.append(|line| line.extend_from_slice(b"{\"kind\":\"dns\"}\n"));
        }
        assert!(egress.dropped.load(Ordering::Relaxed) > 80, "the egress buffer holds what fits");
        for _ in 0..10 {
            access.append(|line| line.extend_from_slice(b"{\"status\":200}\n"));
        }
        assert_eq!(access.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(access.pending.lock().map(|p| p.len()).unwrap_or_default(), 150);
    }

    #[test]
    fn each_line_is_written_once_and_the_buffers_keep_their_room() {
        let dir = moat_test_support::TempDir::new("moat-log");
        let path = dir.path().join("moat.log");
        let file = RwLock::new(Arc::new(LogFile::open(&path).expect("log file")));
        let destination = Destination::File(Arc::new(LogFile { path: path.clone(), file }));
        let lines = Lines::new("access", 1 << 20, Arc::default());
        let mut spare = Vec::new();
        for batch in 0..3 {
            for n in 0..100 {
                lines.append(|line| line.extend_from_slice(format!("{{\"n\":{batch}{n:03}}}\n").as_bytes()));
            }
            lines.write_to(&destination, &mut spare);
            assert!(spare.is_empty() && spare.capacity() > 0, "kept empty, with its room");
        }
        let written = std::fs::read_to_string(&path).expect("read");
        let expected: String =
            (0..3).flat_map(|b| (0..100).map(move |n| format!("{{\"n\":{b}{n:03}}}\n"))).collect();
        assert_eq!(written, expected);
    }

    /// The writer thread's entry under /proc, once it has taken its name (a thread names
    /// itself as it starts).
    fn writer_task() -> std::path::PathBuf {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tasks = std::fs::read_dir("/proc/self/task").expect("tasks");
            let writer = tasks.flatten().find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "moat-access-log")
            });
            match writer {
                Some(task) => return task.path(),
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                None => panic!("no writer thread"),
            }
        }
    }

    /// The writer thread's voluntary context switches so far: how often it has slept.
    fn writer_sleeps(task: &std::path::Path) -> u64 {
        let status = std::fs::read_to_string(task.join("status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a count of switches")
    }

    #[test]
    fn the_writer_sleeps_while_there_is_nothing_to_write_and_a_line_wakes_it() {
        let dir = moat_test_support::TempDir::new("moat-log");
        let path = dir.path().join("moat.log");
        let sinks = init(Some(&path)).expect("logging");
        let writer = writer_task();
        let before = writer_sleeps(&writer);
        // An idle window: a writer that looked every 10 ms would have woken 30 times.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let idle = writer_sleeps(&writer) - before;
        assert!(idle <= 2, "the idle writer woke {idle} times");
        let id = moat_gateway::context::RequestId::new();
        (sinks.access)(&AccessRecord {
            time: std::time::SystemTime::now(),
            request_id: &id,
            endpoint: Some("ep"),
            deployment: None,
            instance: None,
            status: 401,
            duration: std::time::Duration::from_micros(1500),
            upstream: None,
            queue: None,
            client: None,
            auth_mode: Some("key"),
            auth: Some("missing"),
            policy: None,
            error: None,
            trace_id: None,
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let written = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(id.as_str()) || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(written.contains("\"status\":401"), "the line was written: {written:?}");
    }
}
