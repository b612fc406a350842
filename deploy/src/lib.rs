//! moat's deploy crate: the `moat` binary's library. It is the only place that knows the
//! gateway, the supervisor and the egress guard, and translates between them.
//!
//! - [`spec`]: the YAML files (workspace, endpoint, deployment) and their validation.
//! - [`store`]: the durable desired state (get, compare-and-set, watch).
//! - [`state`]: what the store holds, by key, and one read of all of it.
//! - [`plan`]: the reconciler's decisions, a pure function.
//! - [`reconciler`]: acts on the plan (supervisor) and publishes route tables (gateway).
//! - [`container`]: Azure ML's container contract as a supervisor spec.
//! - [`egress`]: a private deployment's network and private endpoints, for the egress guard.
//! - [`routes`]: the gateway's route table from the desired state and the leases.
//! - [`rules`]: the rules that span resources (supported pairs, the workspace switch, name
//!   collisions, capacity, traffic), pure and table-tested.
//! - [`node`]: the operations the admin API offers: read, rule, commit, wait.
//! - [`views`]: what `show` prints.
//! - [`admin`]: the admin API on `admin.sock`, server and client.
//! - [`daemon`]: `moat serve`.
//! - [`metrics_server`]: the Prometheus endpoint; [`readiness`]: what `/readyz` says;
//!   [`usage`]: capacity and container CPU and memory gauges.
//! - [`home`], [`config`], [`logging`], [`keys`]: the node's folder, settings, log, secrets.
//! - [`private_file`]: owner-only files written atomically.
//! - [`cli`]: the command line.

pub mod admin;
pub mod cli;
pub mod config;
pub mod container;
pub mod daemon;
pub mod egress;
pub mod error;
pub mod fleet;
pub mod home;
pub mod keys;
pub mod logging;
pub mod metrics_server;
pub mod node;
pub mod plan;
pub mod private_file;
pub mod readiness;
pub mod reconciler;
pub mod routes;
pub mod rules;
pub mod spec;
pub mod state;
pub mod store;
pub mod usage;
pub mod views;

#[cfg(test)]
mod testing;

pub use error::Error;
