//! The task that watches one instance: probes readiness and liveness on their own schedules,
//! turns what it sees into lifecycle events, and carries out what the lifecycle asks (stop
//! an unhealthy container, start an exited one again after the backoff).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::instance::{Ctx, Instance};
use crate::lifecycle::{Ask, Event};
use crate::probe::Threshold;
use crate::spec::{DeploymentSpec, ProbeSettings, Route};

/// Restarts of a deployment's instances after they exited or failed liveness.
pub const RESTARTS: &str = "moat_instance_restarts_total";

/// How many log lines an exited instance keeps for `show`'s warnings.
const LOG_LINES_KEPT: usize = 20;

/// How watching begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    /// The container has been up for a while (adopted, or watched anew with new probe
    /// settings): the initial delays are not waited.
    pub settled: bool,
}

/// Starts (or restarts) the task watching `instance` with `spec`'s probes.
pub(crate) fn watch(ctx: &Arc<Ctx>, spec: &Arc<DeploymentSpec>, instance: &Arc<Instance>, start: Start) {
    let task = tokio::spawn(run(ctx.clone(), spec.clone(), Arc::downgrade(instance), start));
    instance.watch_with(task);
}

/// Why one run of the container ended.
enum Ended {
    Exited(Option<i64>),
    Unhealthy(String),
}

async fn run(ctx: Arc<Ctx>, spec: Arc<DeploymentSpec>, instance: Weak<Instance>, start: Start) {
    let mut settled = start.settled;
    loop {
        let Some(id) = instance.upgrade().and_then(|i| i.container_id()) else { return };
        let started = Instant::now();
        let ended = probe_until_it_ends(&ctx, &spec, &instance, settled).await;
        settled = false;
        ctx.until_active().await;
        let (code, why) = match ended {
            Ended::Exited(code) => {
                let error = ctx.engine.inspect(&id).await.ok().flatten().and_then(|i| i.error);
                let why = match (code, error) {
                    (_, Some(e)) => e,
                    (Some(c), None) => format!("the container exited with code {c}"),
                    (None, None) => "the container was removed".to_string(),
                };
                (code, why)
            }
            Ended::Unhealthy(why) => {
                let Some(this) = instance.upgrade() else { return };
                if this.on(&ctx, Event::LivenessFailed { why: why.clone() }) == Some(Ask::Stop) {
                    let _ = ctx.engine.stop(&id, ctx.stop_timeout).await;
                }
                let code = ctx.engine.inspect(&id).await.ok().flatten().and_then(|i| i.exit_code);
                (code, why)
            }
        };
        let logs = ctx.engine.logs(&id, LOG_LINES_KEPT).await.unwrap_or_default();
        let Some(this) = instance.upgrade() else { return };
        this.update(|s| s.last_logs = logs);
        let mut ask = this.on(&ctx, Event::Exited { code, why, ran_for: started.elapsed() });
        if matches!(ask, Some(Ask::RestartAfter(_))) {
            let (endpoint, deployment) = (spec.id.endpoint.clone(), spec.id.deployment.clone());
            metrics::counter!(RESTARTS, "endpoint" => endpoint, "deployment" => deployment).increment(1);
        }
        drop(this);
        // The backoff, and again after every start that fails, until one succeeds.
        while let Some(Ask::RestartAfter(delay)) = ask {
            tokio::time::sleep(delay).await;
            let started = ctx.engine.start(&id).await;
            let Some(this) = instance.upgrade() else { return };
            ask = match started {
                Ok(()) => {
                    let network_address = ctx
                        .engine
                        .inspect(&id)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|i| i.addresses.into_values().next());
                    this.update(|s| s.address = network_address.or(s.address));
                    this.on(&ctx, Event::Restarted);
                    None
                }
                Err(e) => this.on(&ctx, Event::RestartFailed { why: e.to_string() }),
            };
        }
        // Anything else (the apply fails, or the instance is stopping) ends the watch.
        let restarted = instance.upgrade().is_some_and(|i| i.snapshot().life.state.can_restart());
        if !restarted {
            return;
        }
    }
}

/// Probes until the container exits or fails liveness.
async fn probe_until_it_ends(
    ctx: &Ctx,
    spec: &DeploymentSpec,
    instance: &Weak<Instance>,
    settled: bool,
) -> Ended {
    let Some(id) = instance.upgrade().and_then(|i| i.container_id()) else { return Ended::Exited(None) };
    let exit = ctx.engine.wait_exit(&id);
    tokio::pin!(exit);
    let (rp, lp) = (spec.readiness_probe, spec.liveness_probe);
    let mut readiness_tick = ticker(&rp, settled);
    let mut liveness_tick = ticker(&lp, settled);
    let initially_ready = instance.upgrade().is_some_and(|i| i.snapshot().life.ready);
    let mut readiness = Threshold::new(rp.success_threshold, rp.failure_threshold, initially_ready);
    let mut liveness = Threshold::new(1, lp.failure_threshold, true);
    loop {
        tokio::select! {
            code = &mut exit => return Ended::Exited(code),
            _ = readiness_tick.tick() => {
                // A probe of a container that is exiting times out; the exit tells the truth.
                let result = tokio::select! {
                    code = &mut exit => return Ended::Exited(code),
                    result = probe(ctx, instance, &spec.readiness_route, rp.timeout) => result,
                };
                readiness.observe(result.is_ok());
                let Some(this) = instance.upgrade() else { return Ended::Exited(None) };
                let detail = result.err().map(|e| format!("readiness probe failed: {e}"));
                this.on(ctx, Event::Readiness { ready: readiness.passing(), detail });
            }
            _ = liveness_tick.tick() => {
                let result = tokio::select! {
                    code = &mut exit => return Ended::Exited(code),
                    result = probe(ctx, instance, &spec.liveness_route, lp.timeout) => result,
                };
                if liveness.observe(result.is_ok()) == Some(false) {
                    let why = result.err().unwrap_or_default();
                    return Ended::Unhealthy(format!("liveness probe failed {} times in a row: {why}", lp.failure_threshold));
                }
            }
        }
    }
}

fn ticker(p: &ProbeSettings, settled: bool) -> tokio::time::Interval {
    let first = if settled { Duration::ZERO } else { p.initial_delay };
    let mut tick = tokio::time::interval_at(Instant::now() + first, p.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

async fn probe(ctx: &Ctx, instance: &Weak<Instance>, route: &Route, timeout: Duration) -> Result<(), String> {
    match instance.upgrade().and_then(|i| i.address()) {
        Some(ip) => ctx.probe.check(ip, route, timeout).await,
        None => Err("the container has no address on its network".to_string()),
    }
}
