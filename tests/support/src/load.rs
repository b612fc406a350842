//! Load clients: threads that score in a loop until stopped, counting what a user would call
//! a failure (any status but 200, any connection error) and the versions that answered.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{http, wait_until};

/// What the load clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failures: Vec<String>,
    /// The `version` field of the answers (the test scorer echoes its `VERSION`).
    pub versions: BTreeSet<String>,
}

impl Tally {
    /// Fails the test, with the first few failures, unless every request succeeded.
    pub fn assert_no_failures(&self) {
        let shown = &self.failures[..self.failures.len().min(5)];
        assert!(
            self.failures.is_empty(),
            "{} failed requests of {}: {shown:?}",
            self.failures.len(),
            self.ok + self.failures.len() as u64
        );
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered 200 so far, over all clients.
    answered: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Tally>>,
}

impl Load {
    /// `clients` threads POSTing `{"delay_ms": 20}` to an `http://` scoring URI, one request
    /// at a time each.
    pub fn start(uri: &str, key: &str, clients: usize) -> Load {
        let rest = uri.strip_prefix("http://").expect("an http:// scoring uri");
        let (authority, path) = rest.split_once('/').expect("a path");
        let addr: SocketAddr = authority.parse().expect("an address");
        let path = format!("/{path}");
        let auth = format!("Bearer {key}");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, path, auth, answered) =
                    (stop.clone(), path.clone(), auth.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let headers =
                            [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
                        match http(addr, "POST", &path, &headers, r#"{"delay_ms": 20}"#) {
                            Ok(r) if r.status == 200 => {
                                tally.ok += 1;
                                answered.fetch_add(1, Ordering::Relaxed);
                                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                                tally.versions.insert(v["version"].as_str().unwrap_or_default().to_string());
                            }
                            Ok(r) => tally.failures.push(format!("{}: {}", r.status, r.body)),
                            Err(e) => tally.failures.push(e.to_string()),
                        }
                    }
                    tally
                })
            })
            .collect();
        Load { stop, answered, threads }
    }

    /// Waits until `n` more requests have been answered: the load is known to run across
    /// whatever happens next.
    pub fn wait_for_answers(&self, n: u64) {
        let from = self.answered.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(30), &format!("{n} more answers"), || {
            let now = self.answered.load(Ordering::Relaxed);
            if now >= from + n { Ok(()) } else { Err(format!("{} answered", now - from)) }
        });
    }

    /// Stops the clients and adds up what they saw.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for t in self.threads {
            let tally = t.join().expect("client thread");
            total.ok += tally.ok;
            total.failures.extend(tally.failures);
            total.versions.extend(tally.versions);
        }
        total
    }
}
