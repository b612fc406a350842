//! What several gateway tests (and the decision benchmark) build the same way; each uses
//! part of it.
#![allow(dead_code)]

pub mod harness;
pub mod keys;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_gateway::{Admissions, Credentials, DeploymentRoute, EndpointRoute, Limits, RouteTable, Upstream};
use tokio::net::TcpListener;

/// A container stand-in that answers 200 with `body` to every request.
pub async fn upstream(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                    // One field of its own, and one that is moat's to set.
                    let fields = response.headers_mut();
                    fields.insert("x-model-version", hyper::header::HeaderValue::from_static("7"));
                    fields.insert(
                        "x-request-id",
                        hyper::header::HeaderValue::from_static("container-made-this"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Endpoint `name` with one deployment, `blue` (scoring path `/score`, all the traffic), whose
/// only instance listens at `up`.
pub fn endpoint(
    admissions: &Admissions,
    name: &str,
    up: SocketAddr,
    credentials: Credentials,
    public_access: bool,
) -> (String, EndpointRoute) {
    let limits = Limits { max_per_instance: 16, max_queue_wait: Duration::from_secs(1), instance_count: 1 };
    let instances = vec![Upstream::new(format!("{name}-0"), up, Default::default())];
    let admission = admissions.get(&moat_id::DeploymentId::new(name, "blue"), limits);
    let route = DeploymentRoute::new("blue", "/score", Duration::from_secs(5), admission, instances, limits);
    let route = EndpointRoute {
        name: name.into(),
        public_access,
        credentials,
        traffic: vec![("blue".into(), 100)],
        mirror: None,
        deployments: HashMap::from_iter([("blue".to_string(), Arc::new(route))]),
    };
    (name.to_string(), route)
}

/// A route table of endpoint `ep` alone (public, as [`endpoint`] makes it) with `credentials`,
/// its only instance the container at `up`.
pub fn table_of_one(up: SocketAddr, credentials: Credentials) -> RouteTable {
    RouteTable {
        moat_networks: Vec::new(),
        endpoints: HashMap::from_iter([endpoint(&Admissions::default(), "ep", up, credentials, true)]),
    }
}
