//! A scripted container engine and probe in one: containers live in memory, start and exit on
//! tokio's clock (so tests run under `tokio::time::pause()`), and answer probes as their
//! [`Script`] says. It proves the supervisor's loops (apply, roll, adopt, restart, drain);
//! only the real-Docker tests prove the supervisor against Docker.
//!
//! A probe of `/live` asks liveness; any other path asks readiness.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::engine::{
    ContainerInfo, Created, Engine, Host, Labels, NetworkInfo, NewContainer, NewImage, PullProgress,
};
use crate::probe::Probe;
use crate::spec::Route;

/// How a container behaves, from each (re)start on.
#[derive(Debug, Clone)]
pub struct Script {
    /// Readiness passes from this long after each start on; `None`: never.
    pub ready_after: Option<Duration>,
    /// The container exits with this code this long after each start.
    pub exits: Option<(Duration, i64)>,
    pub live: bool,
    /// What its logs hold.
    pub log: String,
}

impl Default for Script {
    fn default() -> Self {
        Script { ready_after: Some(Duration::ZERO), exits: None, live: true, log: "starting\n".into() }
    }
}

type Scripter = Box<dyn Fn(&NewContainer) -> Script + Send + Sync>;

struct Container {
    name: String,
    info: ContainerInfo,
    script: Script,
    started: Instant,
    /// Bumps on every start, so a scheduled exit of an earlier run does nothing.
    run: u64,
    /// Set by a test: readiness as told, whatever the script says.
    ready: Option<bool>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct World {
    containers: BTreeMap<String, Container>,
    networks: BTreeMap<String, (Labels, NetworkInfo)>,
    missing_images: HashSet<String>,
    /// Images built, by tag, with their labels and the context archive they were built from.
    built: BTreeMap<String, (Labels, bytes::Bytes)>,
    /// Set by a test: every build fails with these words.
    failing_builds: Option<String>,
    next_id: u64,
    calls: Vec<String>,
    scripter: Option<Scripter>,
}

/// The scripted engine; clones share one world.
#[derive(Clone, Default)]
pub struct Fake {
    world: Arc<Mutex<World>>,
}

fn matches(labels: &Labels, wanted: &[(&str, &str)]) -> bool {
    wanted.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How each new container behaves, from what it is made of (its env, say).
    pub fn script(&self, scripter: impl Fn(&NewContainer) -> Script + Send + Sync + 'static) {
        self.world().scripter = Some(Box::new(scripter));
    }

    /// An image that must be pulled before it is present.
    pub fn missing_image(&self, image: &str) {
        self.world().missing_images.insert(image.to_string());
    }

    /// Every build fails with `message` (after a first step), until told `None`.
    pub fn fail_builds(&self, message: Option<&str>) {
        self.world().failing_builds = message.map(String::from);
    }

    /// Tags of the images built and not removed.
    pub fn built(&self) -> Vec<String> {
        self.world().built.keys().cloned().collect()
    }

    /// The context archive an image was built from.
    pub fn built_context(&self, tag: &str) -> Option<bytes::Bytes> {
        self.world().built.get(tag).map(|(_, context)| context.clone())
    }

    /// What was asked of the engine, in order (`create <name>`, `stop <name>`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    /// Running containers by name.
    pub fn running(&self) -> Vec<String> {
        self.world().containers.values().filter(|c| c.info.running).map(|c| c.name.clone()).collect()
    }

    /// Every container, running or not, by name.
    pub fn containers(&self) -> Vec<String> {
        self.world().containers.values().map(|c| c.name.clone()).collect()
    }

    fn with(&self, name: &str, f: impl FnOnce(&mut Container)) {
        let mut world = self.world();
        let c = world.containers.values_mut().find(|c| c.name == name);
        f(c.unwrap_or_else(|| panic!("no container named {name}")));
    }

    /// Readiness as told from now on (`None`: as the script says).
    pub fn set_ready(&self, name: &str, ready: Option<bool>) {
        self.with(name, |c| c.ready = ready);
    }

    pub fn set_live(&self, name: &str, live: bool) {
        self.with(name, |c| c.script.live = live);
    }

    /// The container's process ends now with `code`.
    pub fn exit(&self, name: &str, code: i64) {
        self.with(name, |c| stop(c, code));
    }

    fn schedule_exit(&self, id: &str) {
        let (after, code, run) = {
            let world = self.world();
            let Some(c) = world.containers.get(id) else { return };
            let Some((after, code)) = c.script.exits else { return };
            (after, code, c.run)
        };
        let (world, id) = (self.world.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut world = world.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = world.containers.get_mut(&id).filter(|c| c.run == run && c.info.running) {
                stop(c, code);
            }
        });
    }

    fn start_run(&self, id: &str) {
        if let Some(c) = self.world().containers.get_mut(id) {
            c.info.running = true;
            c.info.exit_code = None;
            c.started = Instant::now();
            c.run += 1;
            c.changed.send_modify(|n| *n += 1);
        }
        self.schedule_exit(id);
    }

    fn find(world: &World, id_or_name: &str) -> Option<String> {
        if world.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        world.containers.iter().find(|(_, c)| c.name == id_or_name).map(|(id, _)| id.clone())
    }
}

fn stop(c: &mut Container, code: i64) {
    if c.info.running {
        c.info.running = false;
        c.info.exit_code = Some(code);
        c.changed.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Engine for Fake {
    async fn host(&self) -> Result<Host, Error> {
        Ok(Host { cpus: 2, memory_bytes: 16 << 30 })
    }

    /// An image moat builds (`moat-...`) is there once built; any other unless said missing.
    async fn image_present(&self, image: &str) -> Result<bool, Error> {
        let world = self.world();
        Ok(world.built.contains_key(image)
            || !(image.starts_with("moat-") || world.missing_images.contains(image)))
    }

    async fn build(&self, new: NewImage, progress: PullProgress<'_>) -> Result<(), Error> {
        let args: Vec<String> = new.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let failing = {
            let mut world = self.world();
            world.calls.push(format!("build {} on {} args [{}]", new.tag, new.network, args.join(" ")));
            world.failing_builds.clone()
        };
        progress(format!("Step 1/2 : FROM base (context of {} bytes)", new.context.len()));
        if let Some(message) = failing {
            return Err(Error::Build { image: new.tag, message });
        }
        progress(format!("Successfully tagged {}", new.tag));
        self.world().built.insert(new.tag, (new.labels, new.context));
        Ok(())
    }

    async fn images(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error> {
        let world = self.world();
        let found = world.built.iter().filter(|(_, (l, _))| matches(l, labels));
        Ok(found.map(|(tag, (l, _))| (tag.clone(), l.clone())).collect())
    }

    async fn remove_image(&self, tag: &str) -> Result<(), Error> {
        let mut world = self.world();
        world.calls.push(format!("remove-image {tag}"));
        world.built.remove(tag);
        Ok(())
    }

    async fn pull(&self, image: &str, progress: PullProgress<'_>) -> Result<(), Error> {
        self.world().missing_images.remove(image);
        progress(format!("Status: Downloaded newer image for {image}"));
        Ok(())
    }

    async fn network(&self, name: &str, labels: &Labels, _internal: bool) -> Result<NetworkInfo, Error> {
        let mut world = self.world();
        let n = u8::try_from(world.networks.len() % 200).unwrap_or(0);
        let entry = world.networks.entry(name.to_string()).or_insert_with(|| {
            let info = NetworkInfo {
                bridge: format!("br-fake{n}"),
                subnet: Ipv4Addr::new(172, 30, n, 0),
                prefix: 24,
                gateway: Ipv4Addr::new(172, 30, n, 1),
            };
            (labels.clone(), info)
        });
        Ok(entry.1.clone())
    }

    async fn remove_network(&self, name: &str) -> Result<(), Error> {
        self.world().networks.remove(name);
        Ok(())
    }

    async fn networks(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error> {
        let world = self.world();
        Ok(world
            .networks
            .iter()
            .filter(|(_, (l, _))| matches(l, labels))
            .map(|(n, (l, _))| (n.clone(), l.clone()))
            .collect())
    }

    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, Error> {
        let world = self.world();
        Ok(world
            .containers
            .values()
            .filter(|c| matches(&c.info.labels, labels))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, Error> {
        let world = self.world();
        Ok(Fake::find(&world, id).and_then(|id| world.containers.get(&id)).map(|c| c.info.clone()))
    }

    async fn create_and_start(&self, new: NewContainer) -> Result<Created, Error> {
        let id = {
            let mut world = self.world();
            world.calls.push(format!("create {}", new.name));
            if let Some(old) = Fake::find(&world, &new.name) {
                world.containers.remove(&old);
            }
            let Some(network) = world.networks.get(&new.network).map(|(_, n)| n.clone()) else {
                return Err(Error::Docker {
                    action: format!("create container {}", new.name),
                    message: "no such network".into(),
                });
            };
            world.next_id += 1;
            let id = format!("{:012x}", world.next_id);
            let host = u8::try_from(world.next_id % 250 + 2).unwrap_or(2);
            let [a, b, c, _] = network.subnet.octets();
            let script = world.scripter.as_ref().map(|s| s(&new)).unwrap_or_default();
            let info = ContainerInfo {
                id: id.clone(),
                labels: new.labels.clone(),
                running: false,
                exit_code: None,
                error: None,
                addresses: [(new.network.clone(), IpAddr::from([a, b, c, host]))].into(),
            };
            let container = Container {
                name: new.name.clone(),
                info,
                script,
                started: Instant::now(),
                run: 0,
                ready: None,
                changed: watch::channel(0).0,
            };
            world.containers.insert(id.clone(), container);
            id
        };
        self.start_run(&id);
        Ok(Created { id, warnings: Vec::new() })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        let found = {
            let mut world = self.world();
            let found = Fake::find(&world, id);
            let name = found.as_ref().and_then(|f| world.containers.get(f)).map(|c| c.name.clone());
            world.calls.push(format!("start {}", name.unwrap_or_default()));
            found
        };
        let Some(id) = found else {
            return Err(Error::Docker {
                action: format!("start container {id}"),
                message: "no such container".into(),
            });
        };
        let running = self.world().containers.get(&id).is_some_and(|c| c.info.running);
        if !running {
            self.start_run(&id);
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), Error> {
        let mut world = self.world();
        if let Some(id) = Fake::find(&world, id) {
            let name = world.containers.get(&id).map(|c| c.name.clone()).unwrap_or_default();
            world.calls.push(format!("stop {name}"));
            if let Some(c) = world.containers.get_mut(&id) {
                stop(c, 0);
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let mut world = self.world();
        if let Some(id) = Fake::find(&world, id)
            && let Some(c) = world.containers.remove(&id)
        {
            world.calls.push(format!("remove {}", c.name));
        }
        Ok(())
    }

    async fn wait_exit(&self, id: &str) -> Option<i64> {
        loop {
            let mut changed = {
                let world = self.world();
                let c = world.containers.get(&Fake::find(&world, id)?)?;
                if !c.info.running {
                    return c.info.exit_code;
                }
                c.changed.subscribe()
            };
            if changed.changed().await.is_err() {
                // Removed while running.
                let world = self.world();
                Fake::find(&world, id)?;
            }
        }
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<String, Error> {
        let world = self.world();
        let log =
            Fake::find(&world, id).and_then(|id| world.containers.get(&id)).map(|c| c.script.log.clone());
        let log = log.unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        Ok(tail.iter().map(|l| format!("{l}\n")).collect())
    }
}

#[async_trait]
impl Probe for Fake {
    async fn check(&self, ip: IpAddr, route: &Route, _timeout: Duration) -> Result<(), String> {
        let world = self.world();
        let found =
            world.containers.values().find(|c| c.info.running && c.info.addresses.values().any(|a| *a == ip));
        let Some(c) = found else { return Err(format!("connect {ip}: connection refused")) };
        let ok = if route.path == "/live" {
            c.script.live
        } else {
            c.ready.unwrap_or_else(|| {
                c.script.ready_after.is_some_and(|after| Instant::now() >= c.started + after)
            })
        };
        if ok { Ok(()) } else { Err(format!("GET http://{ip}:{}{}: status 503", route.port, route.path)) }
    }
}
