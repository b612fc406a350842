//! [`EtcdStore`]: the fleet's desired state in etcd, under `/moat/<fleet name>/`.
//!
//! - Reads answer from a [`Mirror`] filled by a linearizable read, then kept by a watch from
//!   the next revision; the watch requires a leader (one through a member cut off from its
//!   peers fails instead of going silent), reconnects with jittered backoff from the last
//!   revision applied, and reads everything again when etcd says that revision is compacted.
//! - A commit is one etcd transaction whose compares are the store's expectations (mod
//!   revision, or version 0 for "absent"); it returns once the mirror has its revision, so a
//!   command sees its own write. etcd unreachable: it fails within [`REQUEST_TIMEOUT`], saying
//!   nothing was changed, or that the outcome is unknown when the request was sent.
//! - One member down costs nothing: a request the client's channel could not connect to its
//!   chosen member with (it was not sent) is sent again, for up to a second.
//! - Secret fields are sealed on the way out and opened on the way in ([`super::seal`]).
//! - Freshness: the last time etcd answered anything (a watch message, a transaction, the
//!   presence keep-alive); stale beyond `max_staleness`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, KvClient, TxnOp, WatchOptions};
use serde_json::Value;
use tokio::sync::watch;

use super::mirror::{Change, Mirror};
use super::seal::{self, FleetKey};
use super::{Freshness, Op, Store, Txn, Versioned};
use crate::error::Error;

/// A mutating command fails within 5 s when etcd cannot be reached (CONTRACT.md).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a request that could not reach its member is sent again (see `request`).
const RESEND_FOR: Duration = Duration::from_secs(1);
/// etcd's default `--max-request-bytes` (1.5 MiB): a bigger change is refused before it is sent.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// The fleet key's proof: a sealed constant a node with another key cannot open.
const CHECK_KEY: &str = "fleet/check";
/// The longest wait before a broken watch is opened again (plus up to half of it, jitter).
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);
const CHECK_TEXT: &str = "moat fleet key check";

pub struct EtcdStore {
    client: Client,
    /// `/moat/<fleet>/`: every key of the fleet starts with it.
    prefix: String,
    fleet_key: FleetKey,
    mirror: Mutex<Mirror>,
    /// Bumps on every real change of the mirror (what the reconciler wakes on).
    changes: watch::Sender<u64>,
    /// The revision the mirror has reached, changes or not (what a commit waits on).
    reached: watch::Sender<u64>,
    base: Instant,
    /// Milliseconds after `base` when etcd last answered.
    heard: AtomicU64,
    max_staleness: Duration,
}

/// Where the fleet's etcd is and how to reach it.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub tls: Option<etcd_client::TlsOptions>,
    pub fleet: String,
    pub max_staleness: Duration,
}

/// Why a watch ended.
enum WatchEnd {
    /// The revision it resumed from is gone: read everything again.
    Compacted,
    Failed(String),
}

impl EtcdStore {
    /// Connects, checks the fleet key, fills the mirror, and starts watching. Fails when etcd
    /// cannot be reached, or holds the proof of another fleet key.
    pub async fn open(settings: &EtcdSettings, fleet_key: FleetKey) -> Result<Arc<EtcdStore>, Error> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = settings.tls.clone() {
            options = options.with_tls(tls);
        }
        let client = Client::connect(&settings.endpoints, Some(options)).await.map_err(|e| {
            Error::Other(format!("cannot reach etcd at {}: {e}", settings.endpoints.join(", ")))
        })?;
        let store = Arc::new(EtcdStore {
            client,
            prefix: format!("/moat/{}/", settings.fleet),
            fleet_key,
            mirror: Mutex::new(Mirror::default()),
            changes: watch::channel(0).0,
            reached: watch::channel(0).0,
            base: Instant::now(),
            heard: AtomicU64::new(0),
            max_staleness: settings.max_staleness,
        });
        let unreachable = |e: Error| match e {
            Error::Other(why) => Error::Other(format!(
                "cannot start: etcd at {}: {}",
                settings.endpoints.join(", "),
                why.trim_end_matches("; nothing was changed")
            )),
            other => other,
        };
        store.check_fleet_key().await.map_err(unreachable)?;
        let (revision, entries) = store.snapshot().await.map_err(unreachable)?;
        store.mirror().replace(revision, entries);
        store.publish(revision, true);
        tokio::spawn(store.clone().watch_forever());
        Ok(store)
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The etcd key of a store key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// etcd answered: the copy is current as of now.
    pub fn heard(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard.fetch_max(ms, Ordering::Relaxed);
    }

    /// The revision the mirror reflects.
    pub fn revision(&self) -> u64 {
        self.mirror().revision
    }

    fn publish(&self, revision: u64, changed: bool) {
        self.reached.send_if_modified(|r| std::mem::replace(r, (*r).max(revision)) < revision);
        if changed {
            self.changes.send_replace(revision);
        }
    }

    /// A node with another key file must not run: it could neither read the fleet's secrets
    /// nor write secrets the others can read.
    async fn check_fleet_key(&self) -> Result<(), Error> {
        let full = self.full_key(CHECK_KEY);
        let found = self
            .request(|mut kv| {
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        self.heard();
        if let Some(kv) = found.kvs().first() {
            let value: Value = serde_json::from_slice(kv.value()).unwrap_or(Value::Null);
            return match seal::open(&self.fleet_key, &full, &value) {
                Some(v) if v == CHECK_TEXT => Ok(()),
                _ => Err(Error::Invalid(format!(
                    "this node's fleet key_file is not the fleet's: the fleet {} in etcd was set up with another key; give every node the same key_file",
                    self.prefix.trim_matches('/').trim_start_matches("moat/")
                ))),
            };
        }
        let proof = seal::seal(&self.fleet_key, &full, &Value::from(CHECK_TEXT))?;
        let create = etcd_client::Txn::new()
            .when([Compare::version(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, proof.to_string(), None)]);
        self.request(|mut kv| {
            let create = create.clone();
            async move { kv.txn(create).await }
        })
        .await?;
        // Created here or by a node that started at the same moment: check what is there.
        Box::pin(self.check_fleet_key()).await
    }

    /// Everything under the prefix at one revision (a linearizable read).
    async fn snapshot(&self) -> Result<(u64, BTreeMap<String, Versioned>), Error> {
        let found = self
            .request(|mut kv| {
                let prefix = self.prefix.clone();
                async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        self.heard();
        let revision = found.header().map_or(0, |h| h.revision()).max(0) as u64;
        let entries = found
            .kvs()
            .iter()
            .filter_map(|kv| self.decode(kv.key(), kv.value(), kv.mod_revision()))
            .collect();
        Ok((revision, entries))
    }

    /// A stored key and its value with its secrets opened. A value that is not JSON or whose
    /// secrets do not open is kept as a marker no record decodes from, so the reader keeps the
    /// record's last form and lists it.
    fn decode(&self, key: &[u8], value: &[u8], mod_revision: i64) -> Option<(String, Versioned)> {
        let full = std::str::from_utf8(key).ok()?;
        let key = full.strip_prefix(&self.prefix)?;
        let record = serde_json::from_slice::<Value>(value)
            .ok()
            .and_then(|v| seal::open_record(&self.fleet_key, full, key, v))
            .unwrap_or_else(
                || serde_json::json!({"moat_unreadable": "does not decode or open with this fleet key"}),
            );
        Some((key.to_string(), Versioned { value: record, mod_revision: mod_revision.max(0) as u64 }))
    }

    /// Sends a request made by `call` on a key-value client. The channel spreads requests
    /// over every endpoint, and one it cannot connect to (a member that is down) fails the
    /// request unsent: such a request is sent again, for up to [`RESEND_FOR`], so that one
    /// member down fails nothing while the others answer.
    async fn request<T, F>(&self, mut call: impl FnMut(KvClient) -> F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let resend_until = tokio::time::Instant::now() + RESEND_FOR;
        let mut pause = Duration::from_millis(10);
        loop {
            match tokio::time::timeout_at(deadline, call(self.client.kv_client())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if unsent(&e) && tokio::time::Instant::now() + pause < resend_until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(Err(e)) => return Err(etcd_error(&e)),
                Err(_) => {
                    return Err(Error::Other(format!(
                        "etcd did not answer within {} s; the outcome is unknown",
                        REQUEST_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }

    /// Watches from the mirror's next revision, again and again: after an error with jittered
    /// backoff, after a compaction by reading everything first.
    async fn watch_forever(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let from = self.revision() + 1;
            let ended = self.watch_from(from).await;
            if let WatchEnd::Compacted = ended {
                tracing::info!(
                    from,
                    "etcd compacted the revision the watch resumes from; reading everything again"
                );
                match self.snapshot().await {
                    Ok((revision, entries)) => {
                        let changed = self.mirror().replace(revision, entries);
                        self.publish(revision, changed);
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the fleet's state again"),
                }
            }
            if let WatchEnd::Failed(why) = ended {
                tracing::warn!(error = %why, "the etcd watch ended; reconnecting");
            }
            let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
            tokio::time::sleep(delay + jitter).await;
            // Short enough that a healed cluster is seen again within a few seconds.
            delay = (delay * 2).min(WATCH_RETRY_MAX);
        }
    }

    async fn watch_from(&self, from: u64) -> WatchEnd {
        let options =
            WatchOptions::new().with_prefix().with_start_revision(from as i64).with_progress_notify();
        let mut watcher = self.client.watch_client();
        let mut stream = match watcher.watch(self.prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return WatchEnd::Failed("etcd closed the watch".into()),
                Err(e) => return WatchEnd::Failed(e.to_string()),
            };
            self.heard();
            if message.canceled() {
                if message.compact_revision() > 0 {
                    return WatchEnd::Compacted;
                }
                return WatchEnd::Failed(format!("etcd cancelled the watch: {}", message.cancel_reason()));
            }
            let changes: Vec<Change> = message
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    match event.event_type() {
                        etcd_client::EventType::Put => {
                            let (key, value) = self.decode(kv.key(), kv.value(), kv.mod_revision())?;
                            Some(Change::Put { key, value })
                        }
                        etcd_client::EventType::Delete => {
                            let key =
                                std::str::from_utf8(kv.key()).ok()?.strip_prefix(&self.prefix)?.to_string();
                            Some(Change::Delete { key, revision: kv.mod_revision().max(0) as u64 })
                        }
                    }
                })
                .collect();
            let (changed, reached) = {
                let mut mirror = self.mirror();
                let changed = if message.created() {
                    false
                } else if message.events().is_empty() {
                    // A progress notification: all changes up to its revision were sent.
                    mirror.progress(message.header().map_or(0, |h| h.revision()).max(0) as u64);
                    false
                } else {
                    mirror.apply(changes)
                };
                (changed, mirror.revision)
            };
            self.publish(reached, changed);
        }
    }

    /// The transaction as etcd takes it, and its size.
    fn transaction(&self, txn: Txn) -> Result<(etcd_client::Txn, usize), Error> {
        let mut size = 0;
        let compares: Vec<Compare> = txn
            .compares
            .iter()
            .map(|(key, expected)| {
                let full = self.full_key(key);
                size += full.len() + 16;
                match expected {
                    Some(revision) => Compare::mod_revision(full, CompareOp::Equal, *revision as i64),
                    None => Compare::version(full, CompareOp::Equal, 0),
                }
            })
            .collect();
        let mut ops = Vec::new();
        for op in txn.ops {
            ops.push(match op {
                Op::Put(key, value) => {
                    let full = self.full_key(&key);
                    let sealed = seal::seal_record(&self.fleet_key, &full, &key, value)?.to_string();
                    size += full.len() + sealed.len();
                    TxnOp::put(full, sealed, None)
                }
                Op::Delete(key) => TxnOp::delete(self.full_key(&key), None),
                Op::DeletePrefix(prefix) => {
                    TxnOp::delete(self.full_key(&prefix), Some(DeleteOptions::new().with_prefix()))
                }
            });
        }
        Ok((etcd_client::Txn::new().when(compares).and_then(ops), size))
    }
}

/// The request never left: the channel could not connect to the member it chose.
fn unsent(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::Unavailable && status.message().contains("connect error"))
}

/// What an etcd client error means to the user: unreachable (nothing changed), or not
/// knowing whether the change was made, or etcd's own refusal.
fn etcd_error(e: &etcd_client::Error) -> Error {
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable => {
                Error::Other(format!("etcd is unreachable ({}); nothing was changed", status.message()))
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Error::Other(format!(
                "etcd did not answer in time ({}); the outcome is unknown",
                status.message()
            )),
            _ if status.message().contains("too large") => Error::Invalid(format!(
                "the change is larger than etcd accepts in one request ({}); nothing was changed",
                status.message()
            )),
            _ => Error::Other(format!("etcd refused the change: {}; nothing was changed", status.message())),
        },
        other => Error::Other(format!("etcd is unreachable ({other}); nothing was changed")),
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn get(&self, key: &str) -> Option<Versioned> {
        self.mirror().entries.get(key).cloned()
    }

    fn range(&self, prefix: &str) -> Vec<(String, Versioned)> {
        super::prefixed(&self.mirror().entries, prefix)
    }

    async fn commit(&self, txn: Txn) -> Result<Option<u64>, Error> {
        let (txn, size) = self.transaction(txn)?;
        if size > MAX_REQUEST_BYTES {
            return Err(Error::Invalid(format!(
                "the change is {} KiB, more than etcd takes in one request ({} KiB); nothing was changed",
                size / 1024,
                MAX_REQUEST_BYTES / 1024
            )));
        }
        let answer = self
            .request(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        self.heard();
        if !answer.succeeded() {
            return Ok(None);
        }
        let revision = answer.header().map_or(0, |h| h.revision()).max(0) as u64;
        // The watch brings the write back; until it has, a read would not see it.
        let mut reached = self.reached.subscribe();
        let caught_up = tokio::time::timeout(REQUEST_TIMEOUT, reached.wait_for(|r| *r >= revision)).await;
        if caught_up.is_err() {
            tracing::warn!(revision, "the watch has not brought a committed change back yet");
        }
        Ok(Some(revision))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn freshness(&self) -> Freshness {
        let heard = Duration::from_millis(self.heard.load(Ordering::Relaxed));
        let stale = self.base.elapsed().saturating_sub(heard);
        Freshness { stale, current: stale <= self.max_staleness }
    }
}
