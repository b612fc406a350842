//! The daemon's side of the admin API: routes to [`Node`] operations.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::UnixListener;

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{CreateDeployment, RegenerateKeys, StreamLine, UpdateDeployment, WireError};
use crate::node::ProgressSink;

use crate::admin::WorkspaceUpdate;
use crate::error::Error;
use crate::node::Node;
use crate::spec::endpoint::EndpointSpec;
use crate::spec::workspace::WorkspaceSpec;

type Shared = State<Arc<Node>>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Parse(_) | Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::DaemonDown(_) | Error::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(WireError::from(&self))).into_response()
    }
}

#[derive(Deserialize)]
struct Wait {
    #[serde(default)]
    no_wait: bool,
}

#[derive(Deserialize)]
struct WorkspaceMode {
    #[serde(default)]
    create: bool,
}

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/fleet", get(fleet_status))
        .route("/v1/workspace", get(workspace_show).put(workspace_put))
        .route("/v1/endpoints", get(endpoint_list).post(endpoint_create))
        .route("/v1/endpoints/{endpoint}", get(endpoint_show).put(endpoint_update).delete(endpoint_delete))
        .route("/v1/endpoints/{endpoint}/credentials", get(credentials))
        .route("/v1/endpoints/{endpoint}/regenerate-keys", post(regenerate_keys))
        .route("/v1/endpoints/{endpoint}/deployments", get(deployment_list).post(deployment_create))
        .route(
            "/v1/endpoints/{endpoint}/deployments/{deployment}",
            get(deployment_show).put(deployment_update).delete(deployment_delete),
        )
        .route("/v1/endpoints/{endpoint}/deployments/{deployment}/logs", get(deployment_logs))
        .layer(axum::middleware::map_response_with_state(node.clone(), say_staleness))
        .layer(axum::middleware::from_fn_with_state(node.clone(), refuse_while_standing_by))
        // Past axum's 2 MB default, so that the store's own limit answers, naming itself.
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .with_state(node)
}

/// Every answer says how long since this node heard from its store's authority, when that is
/// long enough to matter: a read then answers from a copy that may be stale.
async fn say_staleness(State(node): Shared, mut response: Response) -> Response {
    let stale = node.freshness().stale.as_secs();
    if stale >= STALE_WORTH_SAYING_S
        && let Ok(value) = axum::http::HeaderValue::from_str(&stale.to_string())
    {
        response.headers_mut().insert(super::STALE_HEADER, value);
    }
    response
}

/// While another daemon takes this one's place, a command would be made by a daemon about
/// to go: it is refused, and made again by the user once the new daemon answers.
async fn refuse_while_standing_by(
    State(node): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if node.reconciler.standing_by() {
        let e = Error::Other(
            "moat serve is handing over to a new process (serve --upgrade); try again in a moment".into(),
        );
        return e.into_response();
    }
    next.run(request).await
}

/// The largest request the admin API reads.
const ADMIN_BODY_LIMIT: usize = 16 << 20;

/// Below this, etcd's own heartbeat gaps: nothing to say.
const STALE_WORTH_SAYING_S: u64 = 3;

async fn fleet_status(State(node): Shared) -> Result<impl IntoResponse, Error> {
    Ok(Json(node.fleet_status().await?))
}

pub async fn serve(
    listener: UnixListener,
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(node)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn workspace_show(State(node): Shared) -> impl IntoResponse {
    let (workspace, revision) = node.workspace_at();
    ([(super::REVISION_HEADER, revision.to_string())], Json::<WorkspaceSpec>(workspace))
}

async fn workspace_put(
    State(node): Shared,
    Query(mode): Query<WorkspaceMode>,
    headers: HeaderMap,
    Json(spec): Json<WorkspaceSpec>,
) -> Result<Json<WorkspaceUpdate>, Error> {
    let update = if mode.create {
        WorkspaceUpdate { workspace: node.create_workspace(spec).await?, warnings: Vec::new() }
    } else {
        node.update_workspace(spec, expected_revision(&headers)?).await?
    };
    Ok(Json(update))
}

async fn endpoint_list(State(node): Shared) -> impl IntoResponse {
    Json(node.endpoints())
}

async fn endpoint_create(
    State(node): Shared,
    Json(spec): Json<EndpointSpec>,
) -> Result<impl IntoResponse, Error> {
    Ok(Json(node.create_endpoint(spec).await?))
}

async fn endpoint_update(
    State(node): Shared,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    Json(spec): Json<EndpointSpec>,
) -> Result<impl IntoResponse, Error> {
    if spec.name != endpoint {
        return Err(Error::Invalid(format!("the spec names endpoint {}, the request {endpoint}", spec.name)));
    }
    Ok(Json(node.update_endpoint(spec, expected_revision(&headers)?).await?))
}

async fn endpoint_show(
    State(node): Shared,
    Path(endpoint): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let (view, revision) = node.endpoint_at(&endpoint)?;
    Ok(([(super::REVISION_HEADER, revision.to_string())], Json(view)))
}

/// The revision an update was based on (from `show`), if the client sent it.
fn expected_revision(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get(super::EXPECT_REVISION_HEADER) else { return Ok(None) };
    let revision = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
    revision.map(Some).ok_or_else(|| {
        Error::Parse(format!("header {}: expected a revision number", super::EXPECT_REVISION_HEADER))
    })
}

async fn endpoint_delete(
    State(node): Shared,
    Path(endpoint): Path<String>,
    Query(w): Query<Wait>,
) -> Result<StatusCode, Error> {
    node.delete_endpoint(&endpoint, !w.no_wait).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn credentials(State(node): Shared, Path(endpoint): Path<String>) -> Result<impl IntoResponse, Error> {
    Ok(Json(node.credentials(&endpoint)?))
}

async fn regenerate_keys(
    State(node): Shared,
    Path(endpoint): Path<String>,
    Json(body): Json<RegenerateKeys>,
) -> Result<StatusCode, Error> {
    node.regenerate_keys(&endpoint, body.key_type, body.key_value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deployment_list(
    State(node): Shared,
    Path(endpoint): Path<String>,
) -> Result<impl IntoResponse, Error> {
    Ok(Json(node.deployments(&endpoint)?))
}

async fn deployment_create(
    State(node): Shared,
    Path(endpoint): Path<String>,
    Json(body): Json<CreateDeployment>,
) -> Result<impl IntoResponse, Error> {
    if body.spec.endpoint_name != endpoint {
        return Err(Error::Invalid(format!(
            "the spec names endpoint {}, the request {endpoint}",
            body.spec.endpoint_name
        )));
    }
    Ok(streamed(move |sink| async move {
        node.create_deployment(body.spec, body.all_traffic, body.wait, &sink).await
    }))
}

async fn deployment_update(
    State(node): Shared,
    Path((endpoint, deployment)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<UpdateDeployment>,
) -> Result<impl IntoResponse, Error> {
    let expected = expected_revision(&headers)?;
    if body.spec.endpoint_name != endpoint || body.spec.name != deployment {
        return Err(Error::Invalid(format!(
            "the spec names {}/{}, the request {endpoint}/{deployment}",
            body.spec.endpoint_name, body.spec.name
        )));
    }
    Ok(streamed(
        move |sink| async move { node.update_deployment(body.spec, expected, body.wait, &sink).await },
    ))
}

/// Runs a long operation and answers with JSON lines: its progress as it comes, then its
/// result or error (see [`StreamLine`]).
fn streamed<F, Fut, T>(work: F) -> Response
where
    F: FnOnce(ProgressSink) -> Fut,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let (sink, mut progress) = mpsc::unbounded_channel::<String>();
    let (lines, body) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
    let work = work(sink);
    tokio::spawn(async move {
        let line = |message: StreamLine| {
            let mut bytes = serde_json::to_vec(&message).unwrap_or_default();
            bytes.push(b'\n');
            let _ = lines.send(Ok(Bytes::from(bytes)));
        };
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                Some(text) = progress.recv() => line(StreamLine::Progress(text)),
            }
        };
        while let Ok(text) = progress.try_recv() {
            line(StreamLine::Progress(text));
        }
        line(match result.and_then(|v| serde_json::to_value(v).map_err(|e| Error::other("encoding", e))) {
            Ok(value) => StreamLine::Result(value),
            Err(e) => StreamLine::Error(WireError::from(&e)),
        });
    });
    let stream =
        futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    ([(CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
    instance: Option<String>,
    /// `storage-initializer`: moat's own log of the image pull or build and the mounts.
    container_type: Option<String>,
}

async fn deployment_logs(
    State(node): Shared,
    Path((endpoint, deployment)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<String, Error> {
    let lines = q.lines.unwrap_or(5000);
    match q.container_type.as_deref() {
        None | Some("inference-server") => {
            node.logs(&endpoint, &deployment, q.instance.as_deref(), lines).await
        }
        Some("storage-initializer") => node.initializer_log(&endpoint, &deployment, lines),
        Some(other) => Err(Error::Invalid(format!(
            "container_type {other:?}: expected inference-server or storage-initializer"
        ))),
    }
}

async fn deployment_show(
    State(node): Shared,
    Path((endpoint, deployment)): Path<(String, String)>,
) -> Result<impl IntoResponse, Error> {
    let (view, revision) = node.deployment_at(&endpoint, &deployment)?;
    Ok(([(super::REVISION_HEADER, revision.to_string())], Json(view)))
}

async fn deployment_delete(
    State(node): Shared,
    Path((endpoint, deployment)): Path<(String, String)>,
    Query(w): Query<Wait>,
) -> Result<StatusCode, Error> {
    node.delete_deployment(&endpoint, &deployment, !w.no_wait).await?;
    Ok(StatusCode::NO_CONTENT)
}
