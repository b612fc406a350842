//! Every way moat ends a request itself, each with its status and a message for the client.
//! The one function that turns them into responses is [`Reject::into_response`].

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("no such route; score at /endpoints/<endpoint>/score")]
    NoRoute,
    #[error("method not allowed: score with POST, read swagger.json with GET")]
    MethodNotAllowed,
    #[error("endpoint {0} not found")]
    UnknownEndpoint(String),
    #[error("public network access to endpoint {0} is disabled; use its private endpoint")]
    PublicAccessDisabled(String),
    #[error("missing or invalid credential: send Authorization: Bearer <endpoint key or token>")]
    Unauthorized,
    #[error(
        "the token is valid, but its principal is not allowed to score this endpoint; ask the endpoint's owner to allow its object id, application id or an app role of it"
    )]
    PrincipalNotAllowed,
    #[error("the identity provider's signing keys cannot be fetched; retry later")]
    KeysUnavailable,
    #[error("endpoint {0} has no deployment with a positive traffic weight")]
    NoTraffic(String),
    #[error("endpoint {endpoint} has no deployment named {asked:?} (header azureml-model-deployment)")]
    UnknownDeployment { endpoint: String, asked: String },
    #[error("deployment {0} has no ready instance; retry later")]
    NoReadyInstance(String),
    #[error("deployment {0} has too many requests in flight; retry later")]
    TooManyRequests(String),
    #[error("deployment {0} had no free instance within max_queue_wait_ms ({1} ms); retry later")]
    QueueTimeout(String, u128),
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("the model did not answer within request_timeout_ms ({0} ms)")]
    Timeout(u128),
    /// The detail (which names the container's address) goes to the access log, not the client.
    #[error("lost the connection to the model container; retry")]
    InstanceLost(String),
    #[error("the model's answer is larger than max_response_bytes ({0} bytes)")]
    ResponseTooLarge(u64),
    #[error("moat is holding too many request bodies at once; retry later")]
    BodyBudgetFull,
    #[error("the request body did not arrive within header_read_timeout_ms ({0} ms)")]
    BodyTimeout(u128),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::NoRoute
            | Reject::UnknownEndpoint(_)
            | Reject::NoTraffic(_)
            | Reject::UnknownDeployment { .. } => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reject::Unauthorized => StatusCode::UNAUTHORIZED,
            Reject::PublicAccessDisabled(_) | Reject::PrincipalNotAllowed => StatusCode::FORBIDDEN,
            Reject::NoReadyInstance(_) | Reject::KeysUnavailable | Reject::BodyBudgetFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reject::TooManyRequests(_) | Reject::QueueTimeout(..) => StatusCode::TOO_MANY_REQUESTS,
            Reject::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BadBody(_) => StatusCode::BAD_REQUEST,
            Reject::Timeout(_) | Reject::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Reject::InstanceLost(_) | Reject::ResponseTooLarge(_) => StatusCode::BAD_GATEWAY,
            Reject::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the access log says: the client's message, with details kept from the client.
    pub fn log_text(&self) -> String {
        match self {
            Reject::InstanceLost(detail) => format!("{self}: {detail}"),
            _ => self.to_string(),
        }
    }

    /// moat's JSON error body, `{"message", "request_id"}`.
    pub fn into_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "message": self.to_string(), "request_id": request_id });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self.status(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
