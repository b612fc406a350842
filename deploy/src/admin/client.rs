//! The CLI's side of the admin API: one request per connection over the Unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::UnixStream;

use super::WireError;
use crate::error::Error;

pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: &Path) -> AdminClient {
        AdminClient { socket: socket.to_path_buf() }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None::<()>).await
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
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "moat")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| Error::other("building the request", e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::other("the daemon closed the connection", e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::other("reading the daemon's answer", e))?
            .to_bytes();
        if status.is_success() {
            return Ok(if status == StatusCode::NO_CONTENT { Bytes::new() } else { body });
        }

        match serde_json::from_slice::<WireError>(&body) {
            Ok(wire) => Err(wire.into()),
            Err(_) => {
                Err(Error::Other(format!("the daemon answered {status}: {}", String::from_utf8_lossy(&body))))
            }
        }
    }
}
