//! Which endpoint, and which of its operations, a request names: by path
//! (`/endpoints/<endpoint>/score`) or, with a domain, by host (`<endpoint>.<domain>/score`).

use http::{Method, Request};

use crate::fields::Fields;
use crate::reject::Reject;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Score,
    Swagger,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub endpoint: String,
    pub operation: Operation,
}

pub fn resolve<B>(req: &Request<B>, fields: &impl Fields, domain: Option<&str>) -> Result<Target, Reject> {
    let path = req.uri().path();
    let (endpoint, rest) = match path.strip_prefix("/endpoints/").and_then(|p| p.split_once('/')) {
        Some((endpoint, rest)) => (endpoint.to_string(), rest),
        None => match domain.and_then(|d| endpoint_from_host(req, fields, d)) {
            Some(endpoint) => (endpoint, path.trim_start_matches('/')),
            None => return Err(Reject::NoRoute),
        },
    };
    let operation = match rest {
        "score" => Operation::Score,
        "swagger.json" => Operation::Swagger,
        _ => return Err(Reject::NoRoute),
    };
    let allowed = match operation {
        Operation::Score => req.method() == Method::POST,
        Operation::Swagger => req.method() == Method::GET,
    };
    if !allowed {
        return Err(Reject::MethodNotAllowed);
    }
    Ok(Target { endpoint, operation })
}

fn endpoint_from_host<B>(req: &Request<B>, fields: &impl Fields, domain: &str) -> Option<String> {
    let host = req.uri().host().or_else(|| fields.text(&http::header::HOST))?;
    let host = host
        .rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let host = host.trim_end_matches('.');
    let prefix = host.len().checked_sub(domain.len() + 1)?;
    let (name, rest) = host.split_at(prefix);
    (!name.is_empty()
        && rest.len() == domain.len() + 1
        && rest[1..].eq_ignore_ascii_case(domain)
        && rest.starts_with('.'))
    .then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(req: &Request<()>, domain: Option<&str>) -> Result<Target, Reject> {
        super::resolve(req, req.headers(), domain)
    }

    fn req(method: Method, uri: &str, host: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).header("host", host).body(()).expect("request")
    }

    #[test]
    fn path_names_endpoint_and_operation() {
        let t = resolve(&req(Method::POST, "/endpoints/my-ep/score", "x"), None).expect("score");
        assert_eq!(t, Target { endpoint: "my-ep".into(), operation: Operation::Score });
        let t = resolve(&req(Method::GET, "/endpoints/my-ep/swagger.json", "x"), None).expect("swagger");
        assert_eq!(t.operation, Operation::Swagger);
    }

    #[test]
    fn wrong_method_and_unknown_path_are_refused() {
        assert_eq!(
            resolve(&req(Method::GET, "/endpoints/e/score", "x"), None),
            Err(Reject::MethodNotAllowed)
        );
        assert_eq!(resolve(&req(Method::POST, "/endpoints/e/other", "x"), None), Err(Reject::NoRoute));
        assert_eq!(resolve(&req(Method::POST, "/score", "x"), None), Err(Reject::NoRoute));
    }

    #[test]
    fn host_under_the_domain_names_the_endpoint() {
        let d = Some("ml.example.test");
        let t = resolve(&req(Method::POST, "/score", "My-Ep.ml.example.test:8080"), d).expect("host");
        assert_eq!(t.endpoint, "my-ep");
        assert!(resolve(&req(Method::POST, "/score", "my-ep.ml.example.test."), d).is_ok());
        assert_eq!(
            resolve(&req(Method::POST, "/score", "my-ep.evil-ml.example.test"), d),
            Err(Reject::NoRoute)
        );
        assert_eq!(resolve(&req(Method::POST, "/score", "ml.example.test"), d), Err(Reject::NoRoute));
    }
}
