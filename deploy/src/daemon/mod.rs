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
//! - [`listeners`]: binding the listeners, and the scoring URIs they make.

pub mod listeners;
mod open_files;

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
use crate::{admin, logging, metrics_server, readiness};
use listeners::Listeners;

/// Threads of the control runtime: its work is a few tasks a second, not a request each.
const CONTROL_THREADS: usize = 2;
/// How often the TLS certificate files are checked for a change.
const CERT_CHECK_PERIOD: Duration = Duration::from_secs(2);

pub fn serve(home: &Home, flags: &Overrides) -> Result<(), Error> {
    let home_id = home.ensure()?;
    let _lock = home.lock()?;
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
    let result = runtime.block_on(run(home, home_id, config, logs));
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

async fn run(home: &Home, home_id: String, config: Config, logs: logging::Sinks) -> Result<(), Error> {
    // Before anything makes or checks a token: jsonwebtoken keeps its first provider.
    moat_gateway::auth::signatures::install();
    let (store, fleet) = open_store(home, &config).await?;
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

    let listeners = Listeners::bind(&config).await?;
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
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| Error::other("watching SIGHUP", e))?;
    let reopen = logs.reopen.clone();
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
    let socket = home.socket();
    let admin_listener = bind_admin_socket(&socket)?;

    let (drain, draining) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving_tables = reconciler.serving();
    let reconcile = tokio::spawn(reconciler.run());
    if let Some(presence) = &presence {
        tokio::spawn(presence.clone().keep());
    }
    let admin_task = tokio::spawn(admin::server::serve(admin_listener, node, wait_stop(stopped.clone())));
    let gateway = Gateway::new(gateway_config(&config), routes, logs.access);
    tokio::spawn(readiness::keep(gateway.health.clone(), store.clone(), serving_tables, draining));
    if let Some(listener) = listeners.metrics {
        let handle = metrics_server::install()?;
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

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
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
    let _ = stop.send(true);
    for task in serving {
        let _ = task.await;
    }
    reconcile.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; containers keep running and are adopted by the next start");
    Ok(())
}

/// Tells systemd where the daemon is, when it runs as a `Type=notify` service; outside
/// systemd (no `NOTIFY_SOCKET`) this does nothing.
fn tell_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot tell systemd (NOTIFY_SOCKET)");
    }
}

/// The admin socket comes last: its presence tells scripts the daemon is ready.
fn bind_admin_socket(socket: &std::path::Path) -> Result<UnixListener, Error> {
    // Whatever is there (a dead daemon's socket, a link) goes; a link is removed, not followed.
    if socket.symlink_metadata().is_ok() {
        // The serve lock is ours, so whatever left this socket is dead.
        std::fs::remove_file(socket)
            .map_err(|e| Error::other(&format!("removing stale socket {}", socket.display()), e))?;
    }
    // Owner-only from the moment it exists: no window where another user may connect.
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
