//! moat's egress guard: the only way out of a private deployment.
//!
//! A private deployment's containers sit on a Docker internal network of their own; the guard
//! serves that network from the host's side of its bridge:
//!
//! - [`acl`]: the allow/deny decision for a destination (pure);
//! - [`ip_literal`], [`names`]: every spelling of an address or a name, made one;
//! - [`dns`]: the network's DNS, answered from the workspace file alone;
//! - [`sni`]: the server name of a TLS ClientHello, however it is split (pure);
//! - [`hello`]: a TLS port's opening, read whole and judged against the endpoint's names;
//! - [`relay`]: both ways at once, until done or idle;
//! - [`host`]: the guard's addresses on the deployment's bridge;
//! - [`forward`]: one listener per private endpoint, dialling its listed address (SNI checked);
//! - [`proxy`]: the explicit CONNECT and forward proxy;
//! - [`nft`]: the kernel rules, in the home's own nftables table: a fence for every moat
//!   network, public or private;
//! - [`sockets`]: the guard's listening sockets, marked so that only they pass the rules;
//! - [`scope`]: one deployment as the guard knows it (endpoints, instances, decision sink),
//!   and what it may take: connections at once, time per exchange, log lines a second;
//! - [`decision_log`]: one JSON line and the metrics per decision;
//! - [`guard`]: attach and detach a private deployment, on the guard's own runtime.

pub mod acl;
pub mod decision_log;
pub mod dns;
pub mod forward;
pub mod guard;
pub mod hello;
pub mod host;
pub mod ip_literal;
pub mod names;
pub mod nft;
pub mod proxy;
pub mod relay;
pub mod scope;
pub mod sni;
pub mod sockets;

pub use acl::Endpoint;
pub use decision_log::{Decision, DecisionSink};
pub use guard::{Attachment, Guard, Network};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("egress guard: {0}")]
    Setup(String),
    #[error("egress guard: the kernel rules cannot be installed: {0}")]
    Rules(String),
}
