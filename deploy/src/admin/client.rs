//! The CLI's side of the admin API: one request per connection over the Unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::UnixStream;

use super::{StreamLine, WireError};
use crate::error::Error;

#[derive(Clone)]
pub struct AdminClient {
    socket: PathBuf,
    /// Sent with updates: the revision of the record the change was made to.
    expect_revision: Option<u64>,
}

impl AdminClient {
    pub fn new(socket: &Path) -> AdminClient {
        AdminClient { socket: socket.to_path_buf(), expect_revision: None }
    }

    /// A client whose updates are refused if the record has moved past `revision`.
    pub fn expecting(&self, revision: Option<u64>) -> AdminClient {
        AdminClient { expect_revision: revision, ..self.clone() }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None::<()>).await
    }

    /// A record as `show` answers it, and its revision in the store.
    pub async fn get_at(&self, path: &str) -> Result<(Value, Option<u64>), Error> {
        let response = self.open(Method::GET, path, None::<()>).await?;
        let revision = response
            .headers()
            .get(super::REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = collect(response).await?;
        let value =
            serde_json::from_slice(&body).map_err(|e| Error::other("decoding the daemon's answer", e))?;
        Ok((value, revision))
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::DELETE, path, None::<()>).await
    }

    pub async fn send(&self, method: Method, path: &str, body: impl Serialize) -> Result<Value, Error> {
        self.call(method, path, Some(body)).await
    }

    /// A plain-text answer, as `get-logs` prints it.
    pub async fn get_text(&self, path: &str) -> Result<String, Error> {
        let body = self.exchange(Method::GET, path, None::<()>).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn call(&self, method: Method, path: &str, body: Option<impl Serialize>) -> Result<Value, Error> {
        let body = self.exchange(method, path, body).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| Error::other("decoding the daemon's answer", e))
    }

    /// One request; the body of a success, or the daemon's error as an [`Error`].
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<impl Serialize>,
    ) -> Result<Bytes, Error> {
        let response = self.open(method, path, body).await?;
        let status = response.status();
        let body = collect(response).await?;
        Ok(if status == StatusCode::NO_CONTENT { Bytes::new() } else { body })
    }

    /// A long operation whose answer streams as JSON lines: `{"progress"}` lines, handed to
    /// `on_progress` as they come, then `{"result"}` or `{"error"}`.
    pub async fn send_streamed(
        &self,
        method: Method,
        path: &str,
        body: impl Serialize,
        mut on_progress: impl FnMut(&str),
    ) -> Result<Value, Error> {
        let mut body = self.open(method, path, Some(body)).await?.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::other("reading the daemon's answer", e))?;
            let Ok(data) = frame.into_data() else { continue };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let message: StreamLine = serde_json::from_slice(&line)
                    .map_err(|e| Error::other("decoding the daemon's answer", e))?;
                match message {
                    StreamLine::Progress(text) => on_progress(&text),
                    StreamLine::Result(value) => return Ok(value),
                    StreamLine::Error(wire) => return Err(wire.into()),
                }
            }
        }
        Err(Error::Other("the daemon closed the connection before it answered".into()))
    }

    /// Sends one request; a non-2xx answer becomes the daemon's error.
    async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<impl Serialize>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        let down = || Error::DaemonDown(self.socket.clone());
        let stream = UnixStream::connect(&self.socket).await.map_err(|_| down())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| down())?;
        tokio::spawn(connection);
        let bytes = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(&b).map_err(|e| Error::other("encoding the request", e))?)
            }
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "moat")
            .header("content-type", "application/json");
        if let Some(revision) = self.expect_revision {
            request = request.header(super::EXPECT_REVISION_HEADER, revision.to_string());
        }
        let request = request.body(Full::new(bytes)).map_err(|e| Error::other("building the request", e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::other("the daemon closed the connection", e))?;
        let status = response.status();
        if let Some(stale) = response.headers().get(super::STALE_HEADER).and_then(|v| v.to_str().ok()) {
            eprintln!(
                "warning: this node has not heard from etcd for {stale} s: what it answers may be stale"
            );
        }
        if status.is_success() {
            return Ok(response);
        }
        let body = collect(response).await?;
        match serde_json::from_slice::<WireError>(&body) {
            Ok(wire) => Err(wire.into()),
            Err(_) => {
                Err(Error::Other(format!("the daemon answered {status}: {}", String::from_utf8_lossy(&body))))
            }
        }
    }
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, Error> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::other("reading the daemon's answer", e))?
        .to_bytes())
}
