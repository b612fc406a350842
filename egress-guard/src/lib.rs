//! moat's egress guard: the only way out of a private deployment.
//!
//! A private deployment's containers sit on a Docker internal network of their own; the guard
//! serves that network from the host's side of its bridge:
//!
//! - [`acl`]: the allow/deny decision for a destination (pure);
//! - [`ip_literal`], [`names`]: every spelling of an address or a name, made one;
//! - [`dns`]: the network's DNS, answered from the workspace file alone.

pub mod acl;
pub mod dns;
pub mod ip_literal;
pub mod names;
