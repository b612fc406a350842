//! `online-endpoint invoke`: the request file POSTed to scoring_uri with the primary key,
//! exactly as an outside client would send it; the body is printed unchanged.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https_connector()?);
    let mut request = Request::post(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    if let Some(d) = deployment {
        request = request.header("azureml-model-deployment", d);
    }
    let request =
        request.body(Full::new(Bytes::from(body))).map_err(|e| Error::other("building the request", e))?;
    let response = client.request(request).await.map_err(|e| Error::other("sending the request", e))?;
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

/// HTTP, or HTTPS trusting the usual public roots plus those in `SSL_CERT_FILE`, as curl
/// and openssl do.
fn https_connector() -> Result<HttpsConnector<HttpConnector>, Error> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let certs = CertificateDer::pem_file_iter(&file)
            .map_err(|e| Error::other(&format!("SSL_CERT_FILE {}", file.to_string_lossy()), e))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| Error::other(&format!("SSL_CERT_FILE {}", file.to_string_lossy()), e))?;
            roots
                .add(cert)
                .map_err(|e| Error::other(&format!("SSL_CERT_FILE {}", file.to_string_lossy()), e))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::other("TLS", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_all_versions()
        .build())
}
