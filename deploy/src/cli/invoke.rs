//! `online-endpoint invoke`: the request file POSTed to scoring_uri with the primary key,
//! exactly as an outside client would send it; the body is printed unchanged.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Context;
use crate::error::Error;

pub async fn invoke(
    ctx: &Context,
    endpoint: &str,
    request_file: &Path,
    deployment: Option<&str>,
) -> Result<(), Error> {
    let body = std::fs::read(request_file)
        .map_err(|e| Error::Parse(format!("--request-file {}: {e}", request_file.display())))?;
    let admin = ctx.admin();
    let view = admin.get(&format!("/v1/endpoints/{endpoint}")).await?;
    let uri = view["scoring_uri"]
        .as_str()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "endpoint {endpoint} has no scoring_uri: the daemon's scoring listener is off"
            ))
        })?
        .to_string();
    let credentials = admin.get(&format!("/v1/endpoints/{endpoint}/credentials")).await?;
    // Key mode gives keys; aml_token mode a fresh token.
    let key = credentials["primaryKey"]
        .as_str()
        .or(credentials["accessToken"].as_str())
        .unwrap_or_default()
        .to_string();

    let uri: Uri = uri.parse().map_err(|e| Error::other(&format!("scoring_uri {uri}"), e))?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Invalid(format!(
            "invoke over {} is not supported yet",
            uri.scheme_str().unwrap_or("?")
        )));
    }
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let stream = TcpStream::connect(&authority)
        .await
        .map_err(|e| Error::other(&format!("connecting to {authority}"), e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::other(&format!("connecting to {authority}"), e))?;
    tokio::spawn(connection);
    let mut request = Request::post(uri.path())
        .header("host", &authority)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    if let Some(d) = deployment {
        request = request.header("azureml-model-deployment", d);
    }
    let request =
        request.body(Full::new(Bytes::from(body))).map_err(|e| Error::other("building the request", e))?;
    let response = sender.send_request(request).await.map_err(|e| Error::other("sending the request", e))?;
    let status = response.status();
    let body =
        response.into_body().collect().await.map_err(|e| Error::other("reading the response", e))?.to_bytes();
    if status.is_success() {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&body).and_then(|_| stdout.flush()).map_err(|e| Error::other("writing output", e))
    } else {
        Err(Error::Other(format!("scoring answered {status}: {}", String::from_utf8_lossy(&body))))
    }
}
