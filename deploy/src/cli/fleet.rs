//! `moat fleet status`: the fleet this node belongs to, as it sees it.

use clap::Subcommand;

use super::Context;
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The fleet's name, this node's revision and staleness, and the live nodes
    Status,
}

pub async fn run(ctx: &Context, command: FleetCommand) -> Result<(), Error> {
    match command {
        FleetCommand::Status => ctx.print(ctx.admin().get("/v1/fleet").await?),
    }
}
