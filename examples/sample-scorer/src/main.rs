//! moat's sample scorer: the seed's model-1 behind the Azure ML inference-server contract.
//!
//! - `GET /` answers 200 `Healthy` (liveness and readiness).
//! - `POST /score` takes `{"data": [[...], ...]}` and returns the list of predictions; a body
//!   that is not that gets 400 with a message saying what was expected.
//! - `GET /swagger.json` describes the scoring route.
//!
//! It listens on port 5001 (`AZUREML_SCORER_PORT` overrides) and reads its model from
//! `AZUREML_MODEL_DIR`, exiting with a clear message when that holds no model file or several.
//!
//! `sample-scorer --try-write PATH` only tries to create PATH and says whether it could: the
//! image has no shell, and this is how a check sees that the model mount is read-only.

mod model;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use model::Model;

const MAX_BODY: usize = 16 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path] = args.as_slice()
        && flag == "--try-write"
    {
        match std::fs::write(path, b"x") {
            Ok(()) => println!("wrote {path}"),
            Err(e) => fail(&format!("cannot write {path}: {e}")),
        }
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(serve());
}

fn fail(message: &str) -> ! {
    eprintln!("sample-scorer: {message}");
    std::process::exit(1);
}

async fn serve() {
    let Some(dir) = std::env::var_os("AZUREML_MODEL_DIR") else {
        fail("AZUREML_MODEL_DIR is not set");
    };
    let (model, path) = Model::load(&PathBuf::from(dir)).unwrap_or_else(|e| fail(&e));
    println!("sample-scorer: loaded {} ({} features)", path.display(), model.features());
    let port = match std::env::var("AZUREML_SCORER_PORT") {
        Ok(p) => {
            p.parse::<u16>().unwrap_or_else(|_| fail(&format!("AZUREML_SCORER_PORT={p:?} is not a port")))
        }
        Err(_) => 5001,
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    println!("sample-scorer: listening on {addr}");
    let model = Arc::new(model);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| fail(&format!("cannot watch SIGTERM: {e}")));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("sample-scorer: accept: {e}");
                    continue;
                }
            },
            // PID 1 in a container gets no default signal handling: exit on SIGTERM ourselves.
            _ = terminate.recv() => {
                println!("sample-scorer: SIGTERM, exiting");
                return;
            }
        };
        let model = model.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(model.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(model: Arc<Model>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => text(StatusCode::OK, "Healthy"),
        (&Method::GET, "/swagger.json") => json(StatusCode::OK, swagger(model.features())),
        (&Method::POST, "/score") => match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => match model.score(&body.to_bytes()) {
                Ok(predictions) => json(StatusCode::OK, serde_json::json!(predictions)),
                Err(message) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "message": message })),
            },
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "message": format!("cannot read body: {e}") }),
            ),
        },
        (_, "/" | "/score" | "/swagger.json") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn swagger(features: usize) -> serde_json::Value {
    serde_json::json!({
        "swagger": "2.0",
        "info": {"title": "moat sample scorer (model-1)", "version": "1.0"},
        "paths": {"/score": {"post": {
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "parameters": [{"name": "body", "in": "body", "required": true, "schema": {
                "type": "object",
                "properties": {"data": {"type": "array", "items": {
                    "type": "array", "minItems": features, "maxItems": features,
                    "items": {"type": "number"}}}}}}],
            "responses": {"200": {"description": "one prediction per row",
                "schema": {"type": "array", "items": {"type": "number"}}}}
        }}}
    })
}
