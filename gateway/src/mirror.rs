//! Mirror traffic: a copy of a live request sent to the endpoint's mirror deployment, off the
//! request's path. Copies share a bounded budget (`mirror_max_in_flight`) and never wait for
//! room; their answers are discarded, so nothing about them reaches the live response.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};

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
        let _permit = permit;
        let call = Call { method: &copy.method, path: &copy.path, headers: &copy.headers, body: copy.body };
        let forwarded = forward::forward(&deployment, slot, call, &copy.request_id).await;
        let result = match forwarded.answer {
            Ok(response) if response.status().is_success() => MirrorResult::Sent,
            _ => MirrorResult::Failed,
        };
        metrics::mirror(&copy.endpoint, &deployment.name, result);
    });
}
