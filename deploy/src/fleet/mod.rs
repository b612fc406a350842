//! Many nodes, one service: what a node of a fleet does beyond the one-node daemon.
//!
//! - [`config`]: the `fleet` section of `config.yaml` and the fleet key file.
//! - [`presence`]: the node's record under an etcd lease, with what it has ready.
//! - [`status`]: what `moat fleet status` prints.
//!
//! The fleet's desired state itself is [`crate::store::etcd`]'s.

pub mod config;
pub mod presence;
pub mod status;
