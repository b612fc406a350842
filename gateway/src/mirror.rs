//! Mirror traffic: a copy of a live request sent to the endpoint's mirror deployment, off the
//! request's path. Copies share a bounded budget (`mirror_max_in_flight`) and never wait for
//! room; their answers are read to their end (so the connection can be used again) and
//! discarded, so nothing about them reaches the live response. A copy's body is the live
//! request's own bytes, counted once against the node's body budget until both are done.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

use tokio::sync::Semaphore;

use crate::context::RequestId;
use crate::forward::{self, Call};
use crate::metrics::{self, MirrorResult};
use crate::table::DeploymentRoute;

/// What a copy needs, owned, since it outlives the live request.
pub struct Copy {
    pub endpoint: String,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: RequestId,
    pub max_response_bytes: u64,
}

/// Sends `copy` to `deployment` if the budget and one of its instances have room right now;
/// else it is dropped (and counted).
pub fn send(budget: &Arc<Semaphore>, deployment: Arc<DeploymentRoute>, copy: Copy) {
    let dropped = || metrics::mirror(&copy.endpoint, &deployment.name, MirrorResult::Dropped);
    let Ok(permit) = budget.clone().try_acquire_owned() else {
        return dropped();
    };
    let Some(slot) = deployment.admission.try_admit() else {
        return dropped();
    };
    tokio::spawn(async move {
        let (_permit, mut slot) = (permit, slot);
        let Copy { method, path, headers, body, request_id, max_response_bytes, .. } = &copy;
        let max_response_bytes = *max_response_bytes;
        let call =
            Call { method, path, fields: headers, body: body.clone(), max_response_bytes, trace: None };
        let forwarded = forward::forward(&deployment, &mut slot, call, request_id).await;
        let result = match forwarded.answer {
            Ok(response) if response.status().is_success() => {
                // Read to its end within the deployment's time, like a live answer.
                let read =
                    tokio::time::timeout(deployment.request_timeout, response.into_body().body.collect());
                match read.await {
                    Ok(Ok(_)) => MirrorResult::Sent,
                    _ => MirrorResult::Failed,
                }
            }
            _ => MirrorResult::Failed,
        };
        metrics::mirror(&copy.endpoint, &deployment.name, result);
    });
}
