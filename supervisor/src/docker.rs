//! [`Engine`] on the local Docker engine, through bollard. 404 on remove, 304 on stop and 409
//! on create-network mean the object is already as wanted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker as Bollard;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, MountType, NetworkCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::engine::{
    ContainerInfo, Created, Engine, Host, Labels, NetworkInfo, NewContainer, NewImage, PullProgress, Usage,
};
use crate::{Error, names};

/// The only capabilities an instance keeps (CONTRACT.md): enough to drop privileges and own
/// its files, never NET_RAW, NET_ADMIN or SYS_ADMIN.
pub const CAPABILITIES: [&str; 5] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"];
/// Each container's log is kept in files of at most this size, this many of them: a chatty
/// model cannot fill the disk, and `get-logs` still reads the last of it.
pub const LOG_MAX_SIZE: &str = "10m";
pub const LOG_MAX_FILES: &str = "3";

#[derive(Clone)]
pub struct Docker {
    docker: Bollard,
}

fn docker_error(action: impl Into<String>, e: BollardError) -> Error {
    let message = match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{message} (status {status_code})")
        }
        other => other.to_string(),
    };
    Error::Docker { action: action.into(), message }
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's `label=` filters selecting what `labels` name.
fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let values = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), values)])
}

impl Docker {
    /// Connects to the local engine and settles on an API version both sides speak (bollard
    /// asks for a newer one than Debian's Docker 20.10 knows).
    pub async fn connect() -> Result<Docker, Error> {
        let docker = Bollard::connect_with_local_defaults().map_err(|e| Error::Connect(e.to_string()))?;
        let docker = docker.negotiate_version().await.map_err(|e| Error::Connect(e.to_string()))?;
        Ok(Docker { docker })
    }

    async fn inspect_network(&self, name: &str) -> Result<NetworkInfo, Error> {
        let network = self
            .docker
            .inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map_err(|e| docker_error(format!("inspect network {name}"), e))?;
        let id = network.id.unwrap_or_default();
        let bridge = network
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
            .unwrap_or_else(|| format!("br-{}", id.get(..12).unwrap_or(&id)));
        let config = network.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().find_map(|c| {
            let (subnet, prefix) = c.subnet?.split_once('/').map(|(a, p)| (a.to_string(), p.to_string()))?;
            Some((
                subnet.parse::<Ipv4Addr>().ok()?,
                prefix.parse::<u8>().ok()?,
                c.gateway?.parse::<Ipv4Addr>().ok()?,
            ))
        });
        let Some((subnet, prefix, gateway)) = config else {
            return Err(Error::Docker {
                action: format!("inspect network {name}"),
                message: "no IPv4 subnet".into(),
            });
        };
        Ok(NetworkInfo { bridge, subnet, prefix, gateway })
    }

    fn create_body(new: &NewContainer) -> ContainerCreateBody {
        let mounts = new
            .mounts
            .iter()
            .map(|m| bollard::models::Mount {
                target: Some(m.container_path.clone()),
                source: Some(m.host_path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        ContainerCreateBody {
            image: Some(new.image.clone()),
            env: Some(new.env.clone()),
            labels: Some(new.labels.clone()),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                // The deployment's own bridge network; never the host's.
                network_mode: Some(new.network.clone()),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_string()]),
                cap_add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                memory: Some(new.limits.memory_bytes),
                // No swap beyond the memory limit.
                memory_swap: Some(new.limits.memory_bytes),
                nano_cpus: Some(new.limits.nano_cpus),
                pids_limit: Some(new.limits.pids),
                dns: (!new.dns.is_empty()).then(|| new.dns.clone()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_string()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                        ("max-file".to_string(), LOG_MAX_FILES.to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[async_trait]
impl Engine for Docker {
    async fn host(&self) -> Result<Host, Error> {
        let info = self.docker.info().await.map_err(|e| docker_error("read the engine's info", e))?;
        Ok(Host {
            cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1),
            memory_bytes: info.mem_total.and_then(|m| u64::try_from(m).ok()).unwrap_or(0),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, Error> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(docker_error(format!("inspect image {image}"), e)),
        }
    }

    /// Layer downloads are reported when they start and end, not at every tick.
    async fn pull(&self, image: &str, progress: PullProgress<'_>) -> Result<(), Error> {
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        let failed = |message: String| Error::Pull { image: image.to_string(), message };
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| failed(docker_error("pull", e).to_string()))?;
            if let Some(detail) = info.error_detail {
                return Err(failed(detail.message.unwrap_or_else(|| "unknown error".into())));
            }
            let Some(status) = info.status else { continue };
            if status == "Downloading" || status == "Extracting" {
                continue;
            }
            progress(match info.id {
                Some(id) => format!("{id}: {status}"),
                None => status,
            });
        }
        Ok(())
    }

    /// The classic builder (the API's default): it needs no session and runs `RUN` steps on
    /// the network named, which BuildKit through this API does not offer.
    async fn build(&self, new: NewImage, progress: PullProgress<'_>) -> Result<(), Error> {
        let args: HashMap<String, String> = new.args.into_iter().collect();
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(&new.dockerfile)
            .t(&new.tag)
            .rm(true)
            .forcerm(true)
            .labels(&new.labels)
            .buildargs(&args)
            .networkmode(&new.network)
            .build();
        let failed = |message: String| Error::Build { image: new.tag.clone(), message };
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(new.context)));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                // The builder's own words (a step that failed), as bollard hands them on.
                BollardError::DockerStreamError { error } => failed(error),
                other => failed(docker_error("build", other).to_string()),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(failed(detail.message.unwrap_or_else(|| "unknown error".into())));
            }
            for line in info.stream.iter().chain(&info.status).flat_map(|text| text.lines()) {
                if !line.trim().is_empty() {
                    progress(line.trim_end().to_string());
                }
            }
        }
        Ok(())
    }

    async fn images(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error> {
        let options = ListImagesOptionsBuilder::default().filters(&label_filters(labels)).build();
        let summaries =
            self.docker.list_images(Some(options)).await.map_err(|e| docker_error("list images", e))?;
        Ok(summaries
            .into_iter()
            .flat_map(|image| {
                let labels = image.labels;
                let tags = image.repo_tags.into_iter().filter(|t| t != "<none>:<none>");
                tags.map(move |tag| (tag, labels.clone()))
            })
            .collect())
    }

    async fn remove_image(&self, tag: &str) -> Result<(), Error> {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(tag, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error(format!("remove image {tag}"), e)),
        }
    }

    async fn network(&self, name: &str, labels: &Labels, internal: bool) -> Result<NetworkInfo, Error> {
        // Docker 20.10 lets two networks share a name unless asked not to, and bollard's
        // request type no longer has that flag: look before creating.
        let options = ListNetworksOptionsBuilder::default()
            .filters(&HashMap::from([("name".to_string(), vec![name.to_string()])]))
            .build();
        let existing =
            self.docker.list_networks(Some(options)).await.map_err(|e| docker_error("list networks", e))?;
        if !existing.iter().any(|n| n.name.as_deref() == Some(name)) {
            let request = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                internal: Some(internal),
                labels: Some(labels.clone()),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(409) => {}
                Err(e) => return Err(docker_error(format!("create network {name}"), e)),
            }
        }
        self.inspect_network(name).await
    }

    async fn remove_network(&self, name: &str) -> Result<(), Error> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error(format!("remove network {name}"), e)),
        }
    }

    async fn networks(&self, labels: &[(&str, &str)]) -> Result<Vec<(String, Labels)>, Error> {
        let options = ListNetworksOptionsBuilder::default().filters(&label_filters(labels)).build();
        let networks =
            self.docker.list_networks(Some(options)).await.map_err(|e| docker_error("list networks", e))?;
        Ok(networks.into_iter().filter_map(|n| Some((n.name?, n.labels.unwrap_or_default()))).collect())
    }

    async fn containers(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, Error> {
        let options =
            ListContainersOptionsBuilder::default().all(true).filters(&label_filters(labels)).build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("list containers", e))?;
        let mut found = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            // The summary lacks exit codes and errors; inspect gives the whole picture.
            if let Some(info) = self.inspect(&id).await? {
                found.push(info);
            }
        }
        Ok(found)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, Error> {
        let response = match self.docker.inspect_container(id, None).await {
            Ok(r) => r,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(docker_error(format!("inspect container {id}"), e)),
        };
        let state = response.state.unwrap_or_default();
        let addresses = response
            .network_settings
            .and_then(|s| s.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(net, ep)| Some((net, ep.ip_address?.parse().ok()?)))
            .collect();
        let running = state.running.unwrap_or(false);
        let mut error = state.error.filter(|e| !e.is_empty());
        if state.oom_killed == Some(true) {
            error = Some("killed: out of memory".to_string());
        }
        Ok(Some(ContainerInfo {
            id: response.id.unwrap_or_else(|| id.to_string()),
            labels: response.config.and_then(|c| c.labels).unwrap_or_default(),
            running,
            exit_code: if running { None } else { state.exit_code },
            error,
            addresses,
        }))
    }

    async fn create_and_start(&self, new: NewContainer) -> Result<Created, Error> {
        let body = Docker::create_body(&new);
        let options = CreateContainerOptionsBuilder::default().name(&new.name).build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            Err(e) if status_of(&e) == Some(409) => {
                // Replace the leftover only if it is this very instance's; a name taken by
                // anything else is not ours to remove.
                let ours = self.inspect(&new.name).await?.is_some_and(|old| {
                    [names::HOME, names::ENDPOINT, names::DEPLOYMENT, names::INSTANCE]
                        .iter()
                        .all(|k| old.labels.get(*k) == new.labels.get(*k))
                });
                if !ours {
                    return Err(Error::Docker {
                        action: format!("create container {}", new.name),
                        message: "the name is taken by a container that is not this instance's".into(),
                    });
                }
                self.remove(&new.name).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        }
        .map_err(|e| docker_error(format!("create container {}", new.name), e))?;
        if let Err(e) = self.start(&created.id).await {
            let _ = self.remove(&created.id).await;
            return Err(e);
        }
        Ok(Created { id: created.id, warnings: created.warnings })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            Err(e) => Err(docker_error(format!("start container {id}"), e)),
        }
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(docker_error(format!("stop container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 409: removal already in progress.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(docker_error(format!("remove container {id}"), e)),
        }
    }

    /// Docker's wait request can time out on a long-lived container; then wait again.
    async fn wait_exit(&self, id: &str) -> Option<i64> {
        loop {
            let mut stream = self.docker.wait_container(id, None);
            match stream.next().await {
                Some(Ok(response)) => return Some(response.status_code),
                // bollard reports a non-zero exit as an error value: it is an exit all the same.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => return Some(code),
                Some(Err(e)) if status_of(&e) == Some(404) => return None,
                _ => match self.inspect(id).await {
                    Ok(None) => return None,
                    Ok(Some(info)) if !info.running => return info.exit_code,
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                },
            }
        }
    }

    async fn usage(&self, id: &str) -> Option<Usage> {
        // One sample with the one before it (Docker waits about a second for it), for a rate.
        let options = StatsOptionsBuilder::default().stream(false).one_shot(false).build();
        let stats = self.docker.stats(id, Some(options)).next().await?.ok()?;
        usage_of(&stats)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<String, Error> {
        let options =
            LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(output) => text.push_str(&output.to_string()),
                Err(e) if status_of(&e) == Some(404) => break,
                Err(e) => return Err(docker_error(format!("logs of container {id}"), e)),
            }
        }
        Ok(text)
    }
}

/// CPU as `docker stats` reckons it: the container's share of the machine's CPU time between
/// two samples, times the CPUs online; memory without the reclaimable page cache.
fn usage_of(stats: &bollard::models::ContainerStatsResponse) -> Option<Usage> {
    let (cpu, pre) = (stats.cpu_stats.as_ref()?, stats.precpu_stats.as_ref()?);
    let used = cpu.cpu_usage.as_ref()?.total_usage?.checked_sub(pre.cpu_usage.as_ref()?.total_usage?)?;
    let system = cpu.system_cpu_usage?.checked_sub(pre.system_cpu_usage?)?;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
    let cpu_cores = if system == 0 { 0.0 } else { used as f64 / system as f64 * cpus };
    let memory = stats.memory_stats.as_ref()?;
    let cache =
        memory.stats.as_ref().and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")));
    let memory_bytes = memory.usage?.saturating_sub(cache.copied().unwrap_or(0));
    Some(Usage { cpu_cores, memory_bytes, memory_limit_bytes: memory.limit.unwrap_or(0) })
}
