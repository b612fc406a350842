//! A plain hyper server for measuring the load tester itself: it answers every request with
//! a short JSON body, over HTTP/1.1 and HTTP/2 (prior knowledge). `plain-server ADDR
//! [WORKERS]` prints the bound address on stdout and serves until it is killed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    // Read the body as a scorer would before answering.
    let _ = request.into_body().collect().await;
    let mut response =
        hyper::Response::new(Full::new(Bytes::from_static(b"[11055.977245525679,4503.079536107787]")));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(response)
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(1usize);
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("plain-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("plain-server: cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Ok(bound) = listener.local_addr() {
            println!("{bound}");
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
