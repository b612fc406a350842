//! The daemon's listeners, all bound before anything announces the daemon ready: plaintext
//! scoring, TLS scoring (with its certificate reloader) and metrics; and the scoring URI base
//! they make. Under `serve --upgrade` they are not bound but taken over from the running
//! daemon, and must be the ones the config names.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use moat_gateway::tls::Reloader;
use moat_gateway::tls::TlsAcceptor;
use tokio::net::TcpListener;

use super::handover::Role;
use crate::config::Config;
use crate::error::Error;
use crate::views::ScoringBase;

pub struct Listeners {
    pub scoring: Option<TcpListener>,
    pub tls: Option<(TcpListener, TlsAcceptor, Reloader)>,
    pub metrics: Option<TcpListener>,
}

async fn bind(field: &str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| Error::other(&format!("binding {field} {addr}"), e))
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, Error> {
        let scoring = match config.listen {
            Some(addr) => Some(bind("listen", addr).await?),
            None => None,
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind("metrics_listen", addr).await?),
            None => None,
        };
        let tls = match &config.tls {
            Some(tls) => {
                let listener = bind("tls.listen", tls.listen).await?;
                let (acceptor, reloader) = moat_gateway::tls::acceptor(&tls.files).map_err(Error::Invalid)?;
                Some((listener, acceptor, reloader))
            }
            None => None,
        };
        Ok(Listeners { scoring, tls, metrics })
    }

    /// The running daemon's sockets, each checked against the config's address for it: an
    /// upgrade keeps the listeners (a port of 0 matches whatever was bound).
    pub fn inherit(
        config: &Config,
        mut taken: Vec<(Role, std::net::TcpListener)>,
    ) -> Result<Listeners, Error> {
        let mut take = |role: Role, wanted: Option<SocketAddr>| -> Result<Option<TcpListener>, Error> {
            let at = taken.iter().position(|(r, _)| *r == role);
            let listener = at.map(|at| taken.remove(at).1);
            let bound = listener.as_ref().and_then(|l| l.local_addr().ok());
            let fits = match (wanted, bound) {
                (Some(w), Some(b)) => w.ip() == b.ip() && (w.port() == 0 || w.port() == b.port()),
                (None, None) => true,
                _ => false,
            };
            if !fits {
                let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "none".into());
                return Err(Error::Invalid(format!(
                    "serve --upgrade keeps the running daemon's listeners: {} is {} in the config, {} in the running daemon; restart moat serve to change it",
                    role.key(),
                    show(wanted),
                    show(bound)
                )));
            }
            match listener {
                Some(l) => {
                    l.set_nonblocking(true).map_err(|e| Error::other("taking over a listener", e))?;
                    Ok(Some(TcpListener::from_std(l).map_err(|e| Error::other("taking over a listener", e))?))
                }
                None => Ok(None),
            }
        };
        let scoring = take(Role::Scoring, config.listen)?;
        let metrics = take(Role::Metrics, config.metrics_listen)?;
        let tls = match take(Role::Tls, config.tls.as_ref().map(|t| t.listen))? {
            Some(listener) => {
                let tls =
                    config.tls.as_ref().ok_or_else(|| Error::Other("a TLS listener without tls".into()))?;
                let (acceptor, reloader) = moat_gateway::tls::acceptor(&tls.files).map_err(Error::Invalid)?;
                Some((listener, acceptor, reloader))
            }
            None => None,
        };
        Ok(Listeners { scoring, tls, metrics })
    }

    /// Duplicates of the listening sockets, for a later `serve --upgrade` to take over.
    pub fn handover_fds(&self) -> Result<Vec<(Role, OwnedFd)>, Error> {
        let mut fds = Vec::new();
        let all = [
            (Role::Scoring, self.scoring.as_ref()),
            (Role::Tls, self.tls.as_ref().map(|(l, _, _)| l)),
            (Role::Metrics, self.metrics.as_ref()),
        ];
        for (role, listener) in all {
            if let Some(listener) = listener {
                let fd = listener
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| Error::other("keeping a listener for upgrades", e))?;
                fds.push((role, fd));
            }
        }
        Ok(fds)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where clients score: the TLS listener when there is one.
    pub fn scoring_base(&self, config: &Config) -> Result<Option<ScoringBase>, Error> {
        let advertised = match (&self.tls, &self.scoring) {
            (Some((l, _, _)), _) => ("https", l),
            (None, Some(l)) => ("http", l),
            (None, None) => return Ok(None),
        };
        let bound = advertised.1.local_addr().map_err(|e| Error::other("reading the bound address", e))?;
        let host = if bound.ip().is_unspecified() {
            config.advertise_host.clone()
        } else {
            match bound.ip() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            }
        };
        Ok(Some(ScoringBase {
            scheme: advertised.0,
            host,
            port: bound.port(),
            domain: config.domain.clone(),
        }))
    }
}
