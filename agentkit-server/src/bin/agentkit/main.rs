//! The `agentkit` command line: run the server (`dev`, `serve`), run agents, and manage the
//! registry, runs and schedules of a running server.
//!
//! Exit codes: 0 success, 1 failure (a run failed, a server error), 2 invalid input,
//! 3 not found, 4 conflict, 5 server unreachable or key refused. Output closed early (piped
//! into `head`) ends a command quietly with 0.

#[macro_use]
mod output;

mod approvals;
mod client;
mod commands;
mod mcp;
mod schedules;
mod serve;
mod tenancy;
mod top;
mod triggers;

use clap::{Parser, Subcommand};

use client::Failure;

/// The server allocates and frees many small buffers per request and per run from many
/// threads at once; mimalloc does that with far less contention than glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// agentkit: build, deploy and operate MCP-native agents.
#[derive(Debug, Parser)]
#[command(name = "agentkit", version, about, long_about = None, after_help = "Exit codes: 0 success, 1 failure, 2 invalid input, 3 not found, 4 conflict, 5 server unreachable or key refused. Output closed early (`| head`) ends a command quietly with 0.")]
struct Cli {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: Command,
}

/// Where the server is, for commands that talk to one.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Remote {
    /// The server's URL (default http://127.0.0.1:8080; `agentkit run` without it runs the
    /// agent in this process).
    #[arg(long, env = "AGENTKIT_URL", global = true)]
    pub(crate) server: Option<String>,
    /// The API key (`agentkit dev` prints it).
    #[arg(long, env = "AGENTKIT_API_KEY", hide_env_values = true, global = true)]
    pub(crate) key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server for development: SQLite under ./.agentkit/, the demo agents when no
    /// config is found, the scripted model when no provider key is set.
    Dev(serve::ServeArgs),
    /// Start the server.
    Serve(serve::ServeArgs),
    /// Run an agent once and print its answer, time, tokens and cost.
    Run(commands::RunArgs),
    /// Agents and workflows in the registry.
    #[command(subcommand)]
    Agents(commands::AgentsCmd),
    /// Runs: list, inspect, follow, control.
    #[command(subcommand)]
    Runs(commands::RunsCmd),
    /// MCP: serve the agents over stdio, list or bridge the config's MCP servers.
    #[command(subcommand)]
    Mcp(mcp::McpCmd),
    /// Schedules: list, pause, resume, trigger now, history.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCmd),
    /// API keys: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Keys(tenancy::KeysCmd),
    /// The approval queue: list, claim, approve, reject tool calls waiting for a human.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCmd),
    /// Workspaces: list, create.
    #[command(subcommand)]
    Workspaces(tenancy::WorkspacesCmd),
    /// The credential vault of the key's workspace: set, list, delete.
    #[command(subcommand)]
    Secrets(tenancy::SecretsCmd),
    /// The webhooks of the key's workspace: create (the secret is shown once), list, rotate,
    /// delete.
    #[command(subcommand)]
    Webhooks(tenancy::WebhooksCmd),
    /// The event triggers of the key's workspace: create, list, delete.
    #[command(subcommand)]
    Triggers(triggers::TriggersCmd),
    /// Events: emit one in the key's workspace (its triggers start runs).
    #[command(subcommand)]
    Events(triggers::EventsCmd),
    /// The server's realtime metrics, refreshed every second (an admin key).
    Top(top::TopArgs),
    /// Check an agentkit.yaml and say what is wrong, with file, key and line.
    Validate(serve::ConfigArgs),
    /// Write a working agentkit.yaml in the current directory.
    Init {
        /// Overwrite an existing agentkit.yaml.
        #[arg(long)]
        force: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(client::exit::FAILED);
        }
    };
    let result: Result<(), Failure> = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => serve::serve(args, true).await,
            Command::Serve(args) => serve::serve(args, false).await,
            Command::Run(args) => commands::run(&cli.remote, args).await,
            Command::Agents(cmd) => commands::agents(&cli.remote, cmd).await,
            Command::Runs(cmd) => commands::runs(&cli.remote, cmd).await,
            Command::Mcp(cmd) => mcp::mcp(&cli.remote, cmd).await,
            Command::Schedules(cmd) => schedules::schedules(&cli.remote, cmd).await,
            Command::Keys(cmd) => tenancy::keys(&cli.remote, cmd).await,
            Command::Approvals(cmd) => approvals::approvals(&cli.remote, cmd).await,
            Command::Workspaces(cmd) => tenancy::workspaces(&cli.remote, cmd).await,
            Command::Secrets(cmd) => tenancy::secrets(&cli.remote, cmd).await,
            Command::Webhooks(cmd) => tenancy::webhooks(&cli.remote, cmd).await,
            Command::Triggers(cmd) => triggers::triggers(&cli.remote, cmd).await,
            Command::Events(cmd) => triggers::events(&cli.remote, cmd).await,
            Command::Top(args) => top::top(&cli.remote, args).await,
            Command::Validate(args) => serve::validate(&args, cli.remote.json),
            Command::Init { force } => serve::init(force),
        }
    });
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
