//! The daemon's listeners, all bound before anything announces the daemon ready: plaintext
//! scoring, TLS scoring (with its certificate reloader) and metrics; and the scoring URI base
//! they make.

use std::net::{IpAddr, SocketAddr};

use moat_gateway::tls::Reloader;
use moat_gateway::tls::TlsAcceptor;
use tokio::net::TcpListener;

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
