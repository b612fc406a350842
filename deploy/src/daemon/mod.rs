//! `moat serve`: one node in the foreground.
//!
//! Start-up order matters to scripts: the home is locked (a second `serve` fails), the store
//! is opened (the home's file, or the fleet's etcd: a node whose fleet key is not the
//! fleet's stops here), every listener is bound, and only then does `admin.sock` appear.
//! SIGTERM or SIGINT drains: `/readyz` answers 503 at once and the node leaves the fleet's
//! live nodes, the listeners keep serving for `shutdown_delay_s` (a balancer's probe needs
//! that long to take the node out; a second signal cuts it short), then stop accepting, and
//! in-flight requests finish within `shutdown_grace_s`; exit 0. Containers stay running, to
//! be adopted by the next start. Under systemd (`NOTIFY_SOCKET`), READY=1 is told once
//! `admin.sock` is there and STOPPING=1 when the drain begins.
//!
//! `serve --upgrade` (or SIGUSR2, which starts it from the binary's path) replaces the running
//! daemon without refusing a connection: see [`handover`].
//!
//! - [`listeners`]: binding the listeners (or taking them over), and the scoring URIs they make.
//! - [`handover`]: passing the lock and the sockets from the running daemon to its successor.

pub mod handover;
pub mod listeners;
mod open_files;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use moat_egress_guard::Guard;
use moat_gateway::auth::aml::AmlKey;
use moat_gateway::{Gateway, Load, Routes};
use moat_supervisor::Supervisor;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, Overrides};
use crate::error::Error;
use crate::fleet::presence::Presence;
use crate::home::Home;
use crate::keys;
use crate::node::{Fleet, Node, Tokens};
use crate::reconciler::Reconciler;
use crate::state::Reader;
use crate::store::etcd::EtcdStore;
use crate::store::{FileStore, Store};
use crate::{admin, logging, metrics_server, readiness, usage};
use listeners::Listeners;

/// Threads of the control runtime: its work is a few tasks a second, not a request each.
const CONTROL_THREADS: usize = 2;
/// How often the TLS certificate files are checked for a change.
const CERT_CHECK_PERIOD: Duration = Duration::from_secs(2);

pub fn serve(home: &Home, flags: &Overrides, upgrade: bool) -> Result<(), Error> {
    let home_id = home.ensure()?;
    // Under --upgrade the lock comes from the running daemon, with its sockets.
    let lock = if upgrade { None } else { Some(home.lock()?) };
    let mut config = Config::load(&home.config(), flags)?;
    let logs = logging::init(config.log_file.as_deref())?;
    match open_files::raise() {
        Ok(limit) => {
            let fitted = open_files::fit(config.max_connections, limit);
            if fitted < config.max_connections {
                tracing::warn!(
                    asked = config.max_connections,
                    allowed = fitted,
                    open_files = limit,
                    reserve = open_files::RESERVE,
                    "max_connections lowered: each connection takes two descriptors, under the open-files limit"
                );
                config.max_connections = fitted;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
    // Scoring connections run on the gateway's own worker threads (`workers`); this runtime
    // has the rest: accept loops, reconciler, supervisor, admin socket, metrics.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONTROL_THREADS)
        .enable_all()
        .build()
        .map_err(|e| Error::other("starting the runtime", e))?;
    let flush = logs.flush.clone();
    let result = runtime.block_on(run(home, home_id, config, logs, lock));
    flush();
    result
}

/// The home's file, or the fleet's etcd.
async fn open_store(home: &Home, config: &Config) -> Result<(Arc<dyn Store>, Option<Fleet>), Error> {
    let Some(fleet) = &config.fleet else {
        return Ok((Arc::new(FileStore::open(&home.store())?), None));
    };
    let etcd = EtcdStore::open(&fleet.etcd, fleet.load_key()?).await?;
    tracing::info!(fleet = %fleet.name, revision = etcd.revision(), "joined the fleet's desired state in etcd");
    Ok((etcd.clone(), Some(Fleet { name: fleet.name.clone(), etcd })))
}

/// `lock` is the home's serve lock; `None` under `serve --upgrade`, which takes the running
/// daemon's lock and sockets once it has checked what it can alone (config, Docker).
async fn run(
    home: &Home,
    home_id: String,
    config: Config,
    logs: logging::Sinks,
    lock: Option<std::fs::File>,
) -> Result<(), Error> {
    // Before anything makes or checks a token: jsonwebtoken keeps its first provider.
    moat_gateway::auth::signatures::install();
    // The gateway counts requests per instance; the supervisor drains by those counts.
    let load = Arc::new(Load::default());
    let in_flight = {
        let load = load.clone();
        Arc::new(move |ip| load.in_flight(ip))
    };
    let supervisor = Supervisor::connect(moat_supervisor::Config {
        home_id: home_id.clone(),
        stop_timeout: config.stop_timeout,
        backoff: config.backoff,
        in_flight,
        mounts: moat_supervisor::MountPolicy::new(&config.model_roots, Some(&home.dir)),
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?;

    let (lock, listeners, taken) = match lock {
        Some(lock) => (lock, Listeners::bind(&config).await?, None),
        None => {
            let socket = home.handover_socket();
            let (taken, handed) = tokio::task::spawn_blocking(move || handover::take_over(&socket))
                .await
                .map_err(|e| Error::other("taking over", e))??;
            tracing::info!(from = taken.from, "the running daemon stands by; starting on its sockets");
            (handed.lock, Listeners::inherit(&config, handed.listeners)?, Some(taken))
        }
    };
    let offer = Arc::new(handover::Offer {
        lock: lock
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::other("keeping the lock for upgrades", e))?,
        listeners: listeners.handover_fds()?,
    });
    let (store, fleet) = open_store(home, &config).await?;
    let metrics_addr = listeners.metrics_addr();
    let scoring = listeners.scoring_base(&config)?;

    let routes = Routes::default();
    let aml = Arc::new(AmlKey::new(&keys::aml_token_secret(&*store).await?));
    let state = Arc::new(Reader::new(store.clone(), &home_id));
    let guard = Arc::new(Guard::new(&home_id, logs.decisions).map_err(|e| Error::Other(e.to_string()))?);
    let reconciler =
        Reconciler::new(state.clone(), supervisor.clone(), routes.clone(), load, aml.clone(), guard);
    let presence = fleet.as_ref().map(|f| {
        let advertise = scoring.as_ref().map(|s| s.origin()).unwrap_or_default();
        Presence::new(f.etcd.clone(), &home_id, &advertise, supervisor.clone())
    });
    let tokens = Tokens { aml, aml_ttl: config.aml_token_ttl, aad: config.aad.clone() };
    let node = Arc::new(Node {
        state,
        supervisor,
        reconciler: reconciler.clone(),
        scoring: scoring.clone(),
        tokens,
        fleet,
    });

    // Signals are ours before anyone can see the daemon is ready and send one.
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Error::other("watching SIGTERM", e))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| Error::other("watching SIGINT", e))?;
    let mut upgrade_signal =
        signal(SignalKind::user_defined2()).map_err(|e| Error::other("watching SIGUSR2", e))?;
    reopen_logs_on_sighup(logs.reopen.clone())?;

    let (drain, draining) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving_tables = reconciler.serving();
    let reconcile = tokio::spawn(reconciler.clone().run());
    let standing = Arc::new(Standing::new(reconciler.clone(), node.supervisor.clone(), presence.clone()));
    let tracing = moat_gateway::trace::Tracing::start(&config.tracing, tokio::runtime::Handle::current())
        .map_err(Error::Invalid)?;
    let gateway = Gateway::traced(gateway_config(&config), routes, logs.access, tracing);
    let traces = gateway.clone();
    tokio::spawn(readiness::keep(gateway.health.clone(), store.clone(), serving_tables, draining));

    // Taking over: accept nothing until this node serves what the old one did and the old
    // one has let go; until then it accepts on the same sockets.
    if let Some(taken) = taken {
        let from = taken.from;
        wait_settled(&reconciler, &node.supervisor, &taken.serving).await?;
        tell_systemd(sd_notify::NotifyState::MainPid(std::process::id()));
        let let_go = tokio::task::spawn_blocking(move || taken.ready()).await;
        if let Err(e) = let_go.map_err(|e| Error::other("taking over", e)).and_then(|r| r) {
            tell_systemd(sd_notify::NotifyState::MainPid(from));
            return Err(e);
        }
        tracing::info!(from, "took over from the running daemon");
    }

    let socket = home.socket();
    // The admin socket comes last: its presence tells scripts the daemon is ready.
    let admin_listener = bind_owner_only(&socket)?;
    let handover_listener = bind_owner_only(&home.handover_socket())?;
    let (handed_over, mut handed_over_to) = watch::channel(None);
    tokio::spawn(offer_handovers(
        handover_listener,
        offer,
        standing.clone(),
        handed_over,
        wait_stop(stopped.clone()),
    ));
    let admin_task =
        tokio::spawn(admin::server::serve(admin_listener, node.clone(), wait_stop(stopped.clone())));
    if let Some(listener) = listeners.metrics {
        let handle = metrics_server::install()?;
        tokio::spawn(usage::keep(node.state.clone(), node.supervisor.clone()));
        let health = gateway.health.clone();
        tokio::spawn(metrics_server::serve(listener, handle, health, wait_stop(stopped.clone())));
    }
    if let Some(aad) = gateway.aad.clone() {
        // Warm the key set; a failure here only means the first token fetches it.
        tokio::spawn(async move {
            match aad.prefetch().await {
                Ok(count) => tracing::info!(keys = count, "fetched the AAD key set"),
                Err(e) => tracing::warn!(error = %e, "cannot fetch the AAD key set yet"),
            }
        });
    }
    let mut serving = Vec::new();
    if let Some(listener) = listeners.scoring {
        let done = wait_stop(stopped.clone());
        serving.push(tokio::spawn(moat_gateway::serve(
            listener,
            gateway.clone(),
            done,
            config.shutdown_grace,
        )));
    }
    if let Some((listener, acceptor, reloader)) = listeners.tls {
        tokio::spawn(reloader.watch(CERT_CHECK_PERIOD));
        let done = wait_stop(stopped.clone());
        serving.push(tokio::spawn(moat_gateway::serve_tls(
            listener,
            acceptor,
            gateway,
            done,
            config.shutdown_grace,
        )));
    }
    tracing::info!(
        home = %home.dir.display(),
        home_id = %home_id,
        scoring = scoring.as_ref().map(|s| s.uri("<endpoint>", "score")).unwrap_or_default(),
        metrics = metrics_addr.map(|a| format!("http://{a}/metrics")).unwrap_or_default(),
        "moat serve is ready"
    );
    tell_systemd(sd_notify::NotifyState::Ready);
    if let Some(presence) = &presence {
        standing.keep_presence(presence);
    }

    let handed_to = loop {
        tokio::select! {
            _ = terminate.recv() => break None,
            _ = interrupt.recv() => break None,
            _ = upgrade_signal.recv() => spawn_upgrade(home),
            _ = handed_over_to.changed() => break *handed_over_to.borrow(),
        }
    };
    match handed_to {
        // The new daemon serves and took the sockets: no delay, no draining (the node stays
        // in the balancer's pool), and admin.sock is its now.
        Some(pid) => {
            tracing::info!(to = pid, "handed over: no longer accepting, finishing in-flight requests")
        }
        None => {
            tracing::info!(
                delay_s = config.shutdown_delay.as_secs(),
                "draining: /readyz answers 503; serving for shutdown_delay_s before no longer accepting"
            );
            tell_systemd(sd_notify::NotifyState::Stopping);
            let _ = drain.send(true);
            if let Some(presence) = &presence {
                presence.leave().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(config.shutdown_delay) => {}
                _ = terminate.recv() => tracing::info!("a second signal: no longer waiting out shutdown_delay_s"),
                _ = interrupt.recv() => tracing::info!("a second signal: no longer waiting out shutdown_delay_s"),
            }
            tracing::info!("shutting down: no longer accepting, finishing in-flight requests");
        }
    }
    let _ = stop.send(true);
    for task in serving {
        let _ = task.await;
    }
    if traces.tracing.is_some() {
        // The batch's last spans: its exporter runs on this runtime, so wait off it.
        let flush = move || traces.tracing.as_ref().map(|t| t.shutdown(Duration::from_secs(5)));
        let _ = tokio::task::spawn_blocking(flush).await;
    }
    reconcile.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    if handed_to.is_none() {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(home.handover_socket());
    }
    drop(lock);
    tracing::info!("stopped; containers keep running and are adopted by the next start");
    Ok(())
}

/// Under `serve --upgrade`: the first pass is made, every action it started (adoption,
/// mostly) is done, and each deployment has at least the ready instances it had in the old
/// daemon, so that the route table serves what the old one did.
async fn wait_settled(
    reconciler: &Reconciler,
    supervisor: &Supervisor,
    serving: &std::collections::BTreeMap<String, usize>,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + handover::READY_WITHIN - Duration::from_secs(10);
    let mut changes = supervisor.subscribe();
    loop {
        let ready = ready_instances(supervisor);
        let short: Vec<String> = serving
            .iter()
            .filter(|(id, n)| ready.get(*id).copied().unwrap_or(0) < **n)
            .map(|(id, n)| format!("{id} ({} of {n} ready)", ready.get(id).copied().unwrap_or(0)))
            .collect();
        if reconciler.settled() && short.is_empty() {
            return Ok(());
        }
        // Progress ends actions; instance changes make them ready. A tick covers the rest.
        let wake = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            _ = changes.changed() => {}
            _ = wake => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let what = if short.is_empty() {
                "the deployments did not settle".to_string()
            } else {
                short.join(", ")
            };
            return Err(Error::Other(format!(
                "taking over: not serving what the running daemon serves in time: {what}"
            )));
        }
    }
}

/// Each deployment's ready instances (`endpoint/deployment`).
fn ready_instances(supervisor: &Supervisor) -> std::collections::BTreeMap<String, usize> {
    supervisor.leases().into_iter().map(|(id, leases)| (id.to_string(), leases.len())).collect()
}

/// Answers `serve --upgrade` on `handover.sock`, one at a time; tells `handed_over` the new
/// daemon's pid once one took over. Ends at `stop`, closing its copies of the listening
/// sockets: a daemon that stops accepting must not leave them open for the kernel to queue
/// connections nobody will take.
async fn offer_handovers(
    listener: UnixListener,
    offer: Arc<handover::Offer>,
    standing: Arc<Standing>,
    handed_over: watch::Sender<Option<u32>>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let Ok(stream) = stream.into_std() else { continue };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let (offer, standing) = (offer.clone(), standing.clone());
        let outcome = tokio::task::spawn_blocking(move || handover::offer(stream, &offer, &*standing)).await;
        match outcome {
            Ok(handover::Outcome::HandedOver { to }) => {
                handed_over.send_replace(Some(to));
                return;
            }
            Ok(handover::Outcome::Kept(why)) => {
                tracing::warn!(reason = %why, "serve --upgrade did not take over; serving on")
            }
            Err(e) => tracing::error!(error = %e, "the handover task failed; serving on"),
        }
    }
}

/// What this daemon stops while another takes its place, and takes up again if it does not.
struct Standing {
    reconciler: Arc<Reconciler>,
    supervisor: Supervisor,
    presence: Option<Arc<Presence>>,
    keeping: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

impl Standing {
    fn new(reconciler: Arc<Reconciler>, supervisor: Supervisor, presence: Option<Arc<Presence>>) -> Standing {
        let runtime = tokio::runtime::Handle::current();
        Standing { reconciler, supervisor, presence, keeping: std::sync::Mutex::default(), runtime }
    }

    fn keeping(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.keeping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's record in the fleet, kept alive.
    fn keep_presence(&self, presence: &Arc<Presence>) {
        *self.keeping() = Some(self.runtime.spawn(presence.clone().keep()));
    }
}

impl handover::StandBy for Standing {
    fn stand_by(&self) -> Result<std::collections::BTreeMap<String, usize>, String> {
        self.reconciler.stand_by(true);
        if !self.reconciler.settled() {
            self.reconciler.stand_by(false);
            return Err(
                "a deployment is being applied or removed; run serve --upgrade again once it is done".into(),
            );
        }
        // The new daemon writes the node's record from now on; two writers would undo each
        // other's lease.
        if let Some(task) = self.keeping().take() {
            task.abort();
        }
        tracing::info!(
            "standing by for serve --upgrade: no container, network or rule changes; scoring goes on"
        );
        Ok(ready_instances(&self.supervisor))
    }

    fn resume(&self) {
        self.reconciler.stand_by(false);
        if let Some(presence) = &self.presence {
            self.keep_presence(presence);
        }
        tracing::info!("no longer standing by");
    }
}

/// SIGUSR2 (systemd's `ExecReload`): starts `moat serve --upgrade` from the binary at the
/// path this one was started from (a package upgrade has replaced it there), with the same
/// arguments and environment; it takes over, or fails and this daemon serves on.
fn spawn_upgrade(home: &Home) {
    let exe = match std::env::current_exe() {
        Ok(exe) => {
            // Linux names a replaced binary "<path> (deleted)": the new one is at <path>.
            let text = exe.to_string_lossy();
            std::path::PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
        }
        Err(e) => return tracing::error!(error = %e, "SIGUSR2: cannot find moat's binary"),
    };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    if !args.iter().any(|a| a == "--home") {
        args.push("--home".into());
        args.push(home.dir.clone().into_os_string());
    }
    match tokio::process::Command::new(&exe).args(&args).spawn() {
        Ok(mut child) => {
            tracing::info!(binary = %exe.display(), pid = child.id().unwrap_or_default(), "SIGUSR2: starting serve --upgrade");
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await {
                    tracing::warn!(%status, "serve --upgrade exited without taking over");
                }
            });
        }
        Err(e) => {
            tracing::error!(binary = %exe.display(), error = %e, "SIGUSR2: cannot start serve --upgrade")
        }
    }
}

/// SIGHUP: `log_file` opened again (after logrotate moved it).
fn reopen_logs_on_sighup(reopen: logging::Reopen) -> Result<(), Error> {
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| Error::other("watching SIGHUP", e))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reopen() {
                Ok(()) => tracing::info!("SIGHUP: log file opened again"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: cannot open the log file again; still writing the old one")
                }
            }
        }
    });
    Ok(())
}

/// Tells systemd where the daemon is, when it runs as a `Type=notify` service; outside
/// systemd (no `NOTIFY_SOCKET`) this does nothing.
fn tell_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot tell systemd (NOTIFY_SOCKET)");
    }
}

/// A Unix socket only this user may connect to, from the moment it exists. Whatever is at
/// the path (a dead daemon's socket, the old daemon's after an upgrade, a link) goes; a link
/// is removed, not followed. The serve lock is ours, so no live daemon listens there.
fn bind_owner_only(socket: &std::path::Path) -> Result<UnixListener, Error> {
    if socket.symlink_metadata().is_ok() {
        std::fs::remove_file(socket)
            .map_err(|e| Error::other(&format!("removing stale socket {}", socket.display()), e))?;
    }
    // SAFETY: umask only swaps the process's file mode mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|e| Error::other(&format!("binding {}", socket.display()), e))?;
    Ok(listener)
}

fn gateway_config(config: &Config) -> moat_gateway::Config {
    moat_gateway::Config {
        max_body_bytes: config.max_body_bytes,
        max_buffered_body_bytes: config.max_buffered_body_bytes,
        max_response_bytes: config.max_response_bytes,
        max_streams_per_connection: config.max_streams_per_connection,
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        domain: config.domain.clone(),
        mirror_max_in_flight: config.mirror_max_in_flight,
        aad: config.aad.clone(),
        ingress: config.ingress.clone(),
        workers: config.workers,
    }
}
