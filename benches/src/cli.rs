//! The command line, checked into a [`Plan`]: every bad flag is one error that names it.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method};

use crate::slo::Bound;

/// Load for a scoring endpoint: closed loop (each connection sends its next request when the
/// last one is answered) or open loop at a constant rate (`-q`), where latency counts from the
/// moment a request was due, so a stall shows in the percentiles.
#[derive(Debug, Parser)]
#[command(name = "moat-bench", version)]
pub struct Args {
    /// Connections, each with one request in flight
    #[arg(short = 'c', value_name = "N", default_value_t = 16)]
    pub connections: usize,
    /// Stop after N requests
    #[arg(short = 'n', value_name = "N", conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Stop after this long (500ms, 10s, 2m) [default: 10s]
    #[arg(short = 'z', value_name = "DURATION")]
    pub duration: Option<String>,
    /// Requests per second in total, at a constant rate (open loop); unset: closed loop
    #[arg(short = 'q', value_name = "RPS")]
    pub rate: Option<f64>,
    /// HTTP method [default: POST with a body, else GET]
    #[arg(short = 'm', value_name = "METHOD")]
    pub method: Option<String>,
    /// A request header, `K: V`; repeatable
    #[arg(short = 'H', value_name = "K: V")]
    pub headers: Vec<String>,
    /// The request body
    #[arg(short = 'd', value_name = "BODY", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// The request body, from a file
    #[arg(short = 'D', value_name = "FILE", conflicts_with = "bodies")]
    pub body_file: Option<PathBuf>,
    /// Request bodies, one a line, sent in turn
    #[arg(long, value_name = "FILE", conflicts_with = "body")]
    pub bodies: Option<PathBuf>,
    /// Open loop at each rate in turn, for -z each: one result per step (R1,R2,...)
    #[arg(long, value_name = "R1,R2,...", conflicts_with_all = ["rate", "requests"])]
    pub rates: Option<String>,
    /// Bounds the run must keep, e.g. 'p99<250ms,p50<20ms,errors<0.1%': exit 3 naming the one broken
    #[arg(long, value_name = "BOUNDS")]
    pub slo: Option<String>,
    /// Write one JSON line per second of the run to FILE ({t, requests, errors, p50_us, p99_us})
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Print the latency distribution as wrk2 does (HdrHistogram percentiles)
    #[arg(long)]
    pub hist: bool,
    /// With --http2: requests in flight on each connection
    #[arg(long, value_name = "N", default_value_t = 1, requires = "http2")]
    pub streams: usize,
    /// HTTP/2 (ALPN h2 over TLS, prior knowledge over plain TCP)
    #[arg(long)]
    pub http2: bool,
    /// Accept any TLS certificate
    #[arg(long)]
    pub insecure: bool,
    /// Give up on a request (and its connection) after this long
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// http:// or https:// URL
    pub url: String,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(u64),
    At(Duration),
}

/// A run, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub connections: usize,
    pub stop: Stop,
    pub rate: Option<f64>,
    /// `--rates`: the open loop's steps, in order.
    pub rates: Vec<f64>,
    pub slo: Vec<Bound>,
    pub timeline: Option<PathBuf>,
    pub hist: bool,
    /// Requests in flight on each HTTP/2 connection.
    pub streams: usize,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent in turn; one, usually (maybe empty).
    pub bodies: Vec<Bytes>,
    pub http2: bool,
    pub insecure: bool,
    pub timeout: Duration,
    pub json: bool,
    pub url: http::Uri,
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{flag} {text:?}: expected a duration such as 500ms, 10s or 2m ({e})"))?;
    if d.is_zero() {
        return Err(format!("{flag} {text:?}: must be more than zero"));
    }
    Ok(d)
}

fn header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let bad = |why: &str| format!("-H {text:?}: {why}");
    let (name, value) = text.split_once(':').ok_or_else(|| bad("expected `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("not a header name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("not a header value"))?;
    Ok((name, value))
}

impl Args {
    pub fn plan(self) -> Result<Plan, String> {
        if self.connections == 0 {
            return Err("-c 0: at least one connection".into());
        }
        let stop = match (self.requests, &self.duration) {
            (Some(0), _) => return Err("-n 0: at least one request".into()),
            (Some(n), _) => Stop::After(n),
            (None, Some(text)) => Stop::At(duration("-z", text)?),
            (None, None) => Stop::At(Duration::from_secs(10)),
        };
        if let Some(q) = self.rate
            && !(q.is_finite() && q > 0.0)
        {
            return Err(format!("-q {q}: expected a positive rate in requests per second"));
        }
        let rates = match &self.rates {
            None => Vec::new(),
            Some(text) => text
                .split(',')
                .map(|r| match r.trim().parse::<f64>() {
                    Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
                    _ => {
                        Err(format!("--rates {text:?}: {r:?} is not a positive rate in requests per second"))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let slo = match &self.slo {
            None => Vec::new(),
            Some(text) => crate::slo::parse(text)?,
        };
        if self.streams == 0 {
            return Err("--streams 0: at least one stream per connection".into());
        }
        let bodies = match (&self.body, &self.body_file, &self.bodies) {
            (Some(text), _, _) => vec![Bytes::from(text.clone())],
            (None, Some(file), _) => vec![Bytes::from(
                std::fs::read(file).map_err(|e| format!("-D {}: cannot read it: {e}", file.display()))?,
            )],
            (None, None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("--bodies {}: cannot read it: {e}", file.display()))?;
                let lines: Vec<Bytes> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| Bytes::from(l.to_string()))
                    .collect();
                if lines.is_empty() {
                    return Err(format!("--bodies {}: no body in it (one a line)", file.display()));
                }
                lines
            }
            (None, None, None) => vec![Bytes::new()],
        };
        let method = match &self.method {
            Some(m) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| format!("-m {m:?}: not an HTTP method"))?
            }
            None if bodies.iter().all(Bytes::is_empty) => Method::GET,
            None => Method::POST,
        };
        let url: http::Uri = self.url.parse().map_err(|e| format!("URL {:?}: {e}", self.url))?;
        match url.scheme_str() {
            Some("http" | "https") if url.host().is_some() => {}
            _ => return Err(format!("URL {:?}: expected http://HOST[:PORT]/PATH or https://...", self.url)),
        }
        Ok(Plan {
            connections: self.connections,
            stop,
            rate: self.rate,
            rates,
            slo,
            timeline: self.timeline,
            hist: self.hist,
            streams: self.streams,
            method,
            headers: self.headers.iter().map(|h| header(h)).collect::<Result<_, _>>()?,
            bodies,
            http2: self.http2,
            insecure: self.insecure,
            timeout: duration("--timeout", &self.timeout)?,
            json: self.json,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(line: &str) -> Result<Plan, String> {
        let args = Args::try_parse_from(std::iter::once("moat-bench").chain(line.split_whitespace()))
            .map_err(|e| e.to_string())?;
        args.plan()
    }

    #[test]
    fn defaults_are_sixteen_connections_for_ten_seconds_closed_loop() {
        let p = plan("http://127.0.0.1:8080/score").expect("plan");
        assert_eq!((p.connections, p.stop, p.rate), (16, Stop::At(Duration::from_secs(10)), None));
        assert_eq!(p.method, Method::GET);
        let p = plan("-d {} -z 500ms -q 200 http://h/score").expect("plan");
        assert_eq!(
            (p.method, p.stop, p.rate),
            (Method::POST, Stop::At(Duration::from_millis(500)), Some(200.0))
        );
        assert_eq!(plan("-n 5 -z 2m http://h/").err().map(|e| e.contains("cannot be used with")), Some(true));
    }

    #[test]
    fn each_bad_flag_is_named() {
        for (line, flag) in [
            ("-z 10 http://h/", "-z"),
            ("-q NaN http://h/", "-q"),
            ("-q 0 http://h/", "-q"),
            ("-c 0 http://h/", "-c"),
            ("-H nocolon http://h/", "-H"),
            ("-D /no/such/file http://h/", "-D"),
            ("-m BAD\u{7f} http://h/", "-m"),
            ("ftp://h/", "URL"),
            ("--timeout 0s http://h/", "--timeout"),
            ("--rates 100,x http://h/", "--rates"),
            ("--rates 100,0 http://h/", "--rates"),
            ("--slo p99<fast http://h/", "--slo"),
            ("--bodies /no/such/file http://h/", "--bodies"),
            ("--http2 --streams 0 http://h/", "--streams"),
        ] {
            let error = plan(line).expect_err(line);
            assert!(error.contains(flag), "{line}: {error}");
        }
    }
}
