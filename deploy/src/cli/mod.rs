//! The `moat` command line, shaped like `az ml online-endpoint` / `online-deployment`.
//!
//! - [`output`]: `-o` formats and `--query`.
//! - [`workspace`], [`endpoint`], [`deployment`], [`fleet`]: one command group each; all of
//!   them talk to the daemon through the admin socket, except `serve` and `validate`.
//! - [`invoke`]: scoring as any client would.
//! - [`shell`]: completion scripts and the man page, made from these definitions.

pub mod deployment;
pub mod endpoint;
pub mod fleet;
pub mod invoke;
pub mod output;
pub mod shell;
pub mod workspace;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::admin::client::AdminClient;
use crate::config::Overrides;
use crate::error::Error;
use crate::home::Home;
use crate::spec::{self, Document, Kind};
use output::Format;

#[derive(Debug, Parser)]
#[command(name = "moat", version, about = "A managed online-endpoint data plane with network isolation")]
pub struct Cli {
    /// The node's state folder [env: MOAT_HOME; default: ~/.moat]
    #[arg(long, global = true, env = "MOAT_HOME", value_name = "DIR", hide_env = true)]
    pub home: Option<PathBuf>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value = "json")]
    pub output: Format,
    /// JMESPath query applied to the output
    #[arg(long, global = true, value_name = "JMESPATH")]
    pub query: Option<String>,
    /// Azure's resource group: accepted for az scripts, and ignored (a home is the whole scope)
    #[arg(short = 'g', long = "resource-group", global = true, value_name = "NAME")]
    pub resource_group: Option<String>,
    /// The workspace: accepted for az scripts; it must be the home's
    #[arg(short = 'w', long = "workspace-name", global = true, value_name = "NAME")]
    pub workspace_name: Option<String>,
    /// az's local endpoints: every moat endpoint is local to its node; accepted and ignored
    #[arg(long, global = true)]
    pub local: bool,
    /// az's scoring script check at create: moat runs images as they are; accepted and ignored
    #[arg(long = "skip-script-validation", global = true)]
    pub skip_script_validation: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this node's daemon in the foreground
    Serve(ServeArgs),
    /// Check a workspace, endpoint or deployment file offline
    Validate {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// The home's workspace
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCommand),
    /// Online endpoints
    #[command(name = "online-endpoint", subcommand)]
    OnlineEndpoint(endpoint::EndpointCommand),
    /// Online deployments
    #[command(name = "online-deployment", subcommand)]
    OnlineDeployment(deployment::DeploymentCommand),
    /// The fleet of nodes that share this node's desired state
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Print a completion script for a shell (e.g. `moat completion bash > /etc/bash_completion.d/moat`)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The node's config file (default: config.yaml in the home)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where scoring requests are served (host:port; port 0 picks one)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Where /metrics is served
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The host name scoring URIs carry
    #[arg(long = "advertise-host", value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Gateway threads serving scoring connections, one event loop each (0: one per CPU)
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where the daemon's, access and egress decision logs go (default: stderr)
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Take the place of the home's running daemon: its listening sockets, containers and
    /// rules change hands without a refused connection, and it exits once this one serves
    #[arg(long)]
    pub upgrade: bool,
}

// Not a doc comment: clap would take it as the about of every command that flattens this.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetArgs {
    /// Change a field of the file: `KEY=VALUE` with a dotted path; repeatable, several per flag
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1.., action = clap::ArgAction::Append)]
    pub set: Vec<String>,
}

/// What a command needs: where the daemon is and how to print.
pub struct Context {
    pub home: Home,
    pub format: Format,
    pub query: Option<String>,
}

impl Context {
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.home.socket())
    }

    /// Prints data on stdout in the chosen format.
    pub fn print(&self, value: Value) -> Result<(), Error> {
        use std::io::IsTerminal;
        let mut stdout = std::io::stdout().lock();
        let text = output::render(value, self.format, self.query.as_deref(), stdout.is_terminal())?;
        stdout
            .write_all(text.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::other("writing output", e))
    }
}

/// Runs a command; `main` prints the error and exits with its code.
pub fn run(cli: Cli) -> Result<(), Error> {
    // These describe the binary, not a home: they work wherever it runs.
    match cli.command {
        Command::Completion { shell } => return shell::completion(shell),
        Command::Man => return shell::man(),
        _ => {}
    }
    let home = Home::resolve(cli.home)?;
    let ctx = Context { home, format: cli.output, query: cli.query };
    if cli.resource_group.is_some() {
        eprintln!(
            "note: --resource-group is ignored: a moat home holds one workspace and no resource groups"
        );
    }
    if cli.local {
        eprintln!("note: --local is ignored: every moat endpoint runs on its own nodes");
    }
    if cli.skip_script_validation {
        eprintln!("note: --skip-script-validation is ignored: moat does not validate scoring scripts");
    }
    let daemon_command = !matches!(cli.command, Command::Serve(_) | Command::Validate { .. });
    match &cli.workspace_name {
        Some(name) if daemon_command => block_on(same_workspace(&ctx, name))?,
        Some(_) => eprintln!("note: --workspace-name is ignored by this command"),
        None => {}
    }
    match cli.command {
        Command::Serve(a) => crate::daemon::serve(
            &ctx.home,
            &Overrides {
                config: a.config,
                listen: a.listen,
                metrics_listen: a.metrics_listen,
                advertise_host: a.advertise_host,
                workers: a.workers,
                log_file: a.log_file,
            },
            a.upgrade,
        ),
        Command::Validate { file } => validate(&ctx, &file),
        Command::Workspace(c) => block_on(workspace::run(&ctx, c)),
        Command::OnlineEndpoint(c) => block_on(endpoint::run(&ctx, c)),
        Command::OnlineDeployment(c) => block_on(deployment::run(&ctx, c)),
        Command::Fleet(c) => block_on(fleet::run(&ctx, c)),
        Command::Completion { .. } | Command::Man => Ok(()),
    }
}

/// `-w NAME` names the home's workspace, or the command goes no further (exit 3, as az's for a
/// workspace it cannot find).
async fn same_workspace(ctx: &Context, name: &str) -> Result<(), Error> {
    let workspace = ctx.admin().get("/v1/workspace").await?;
    let home_has = workspace["name"].as_str().unwrap_or_default();
    if home_has == name {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "--workspace-name {name}: this home's workspace is {home_has} (see moat workspace show)"
    )))
}

fn block_on(future: impl std::future::Future<Output = Result<(), Error>>) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::other("starting the runtime", e))?
        .block_on(future)
}

/// `moat validate -f FILE`: parses and validates as create would, prints the result.
fn validate(ctx: &Context, file: &std::path::Path) -> Result<(), Error> {
    let doc = Document::load(file, &[])?;
    use spec::read_only::Resource;
    let value = match Kind::of(&doc) {
        Kind::Workspace => serde_json::to_value(spec::workspace::validate(&doc)?),
        Kind::Endpoint => {
            let doc = without_read_only(doc, Resource::Endpoint)?;
            serde_json::to_value(spec::endpoint::validate(&doc, None)?)
        }
        Kind::Deployment => {
            let doc = without_read_only(doc, Resource::Deployment)?;
            serde_json::to_value(spec::deployment::validate(&doc, spec::deployment::Names::default())?)
        }
    }
    .map_err(|e| Error::other("encoding", e))?;
    eprintln!("{}: valid", file.display());
    ctx.print(value)
}

/// Asks before a delete when a person is at the terminal; never prompts otherwise.
pub fn confirm(question: &str, yes: bool) -> Result<(), Error> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{question} (y/n): ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::other("reading the answer", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") { Ok(()) } else { Err(Error::Other("cancelled".into())) }
}

/// A read-modify-write on the daemon's record: `attempt` reads the record (and its revision)
/// and sends the changed record expecting that revision. When another command changed the
/// record in between, the change is made again to the new record, so that neither is lost.
pub async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    // Many commands on one record at once take turns: a jittered wait that grows, for up to
    // about ten seconds in all.
    const ATTEMPTS: u32 = 40;
    let mut ceiling = std::time::Duration::from_millis(10);
    for tried in 1.. {
        match attempt().await {
            Err(Error::Conflict(message))
                if (message.contains(crate::admin::MOVED) || message.contains(crate::admin::RACED))
                    && tried < ATTEMPTS =>
            {
                let wait = fastrand::u64(1..=ceiling.as_millis() as u64);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                ceiling = (ceiling * 2).min(std::time::Duration::from_millis(400));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

/// A file without the fields `show` prints (read-only: never applied), with a note on stderr
/// for each kind that was there.
pub fn without_read_only(mut doc: Document, resource: spec::read_only::Resource) -> Result<Document, Error> {
    for note in spec::read_only::take(&mut doc, resource)? {
        eprintln!("{note}");
    }
    Ok(doc)
}

/// The spec document of a create or update: the file with `--set` applied, or the words alone.
pub fn document(file: Option<&std::path::Path>, set: &SetArgs) -> Result<Document, Error> {
    match file {
        Some(f) => Document::load(f, &set.set),
        None => Document::from_sets(&set.set),
    }
}
