//! HTTP/1.1 to the clients: moat's own server codec (HTTP/2 stays hyper's).
//!
//! - [`head`]: request heads parsed, answer heads written;
//! - [`body`]: a request's body, read off the connection when the request life asks;
//! - [`connection`]: one connection's requests, one after the other, each answer streamed
//!   out as its body comes.
//!
//! Why not hyper's server: per proxied request its dispatch, head parsing and encoding cost
//! about two fifths of the gateway's user time (BENCHMARKS.md), for what a proxy needs of
//! HTTP/1.1: one request at a time per connection, bodies by length or chunks, answers by
//! length or chunks.

pub mod body;
pub mod connection;
pub mod head;

pub use body::{ClientIo, RequestBody};
pub use connection::{BodyFields, Http1, Serve, serve_connection};
