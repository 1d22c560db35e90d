//! `agentkit dev` / `serve`, `validate`, `init`.

use std::path::PathBuf;
use std::sync::Arc;

use agentkit_core::Config;
use agentkit_runtime::Store;
use agentkit_server::Server;

use crate::client::{Failure, exit};

/// The demo config `agentkit dev` serves when no agentkit.yaml is found (and `init` writes).
pub(crate) const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// Which config file.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The config file (default: agentkit.yaml found from the current directory up).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// `agentkit dev` / `agentkit serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// The store: a SQLite file path (`sqlite://path` or a plain path), `postgres://…`, or
    /// `memory` (nothing kept after exit) (default: `./.agentkit/agentkit.db`).
    #[arg(long, env = "AGENTKIT_DATABASE")]
    database: Option<String>,
}

pub(crate) fn load(args: &ConfigArgs, dev: bool) -> Result<(Config, String), Failure> {
    if let Some(path) = &args.config {
        let c = Config::load_file(path).map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
        return Ok((c, path.display().to_string()));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::new(exit::FAILED, format!("no current directory: {e}")))?;
    let loader = agentkit_core::config::ConfigLoader::new();
    if let Some(found) = loader.find(&cwd) {
        let c = loader
            .load_file(&found)
            .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
        return Ok((c, found.display().to_string()));
    }
    if dev {
        let c = Config::from_yaml_str(DEMO_CONFIG, None)
            .map_err(|e| Failure::new(exit::FAILED, format!("the built-in demo config: {e}")))?;
        return Ok((
            c,
            "the built-in demo (no agentkit.yaml found; `agentkit init` writes one)".into(),
        ));
    }
    Err(Failure::new(
        exit::INVALID,
        "no agentkit.yaml found from the current directory up; pass --config FILE, run \
         `agentkit init`, or use `agentkit dev` for the demo agents",
    ))
}

async fn open_store(database: &str) -> Result<Arc<dyn Store>, Failure> {
    let fail = |e: agentkit_core::Error| Failure::new(exit::FAILED, e.to_string());
    if database == "memory" || database == ":memory:" || database == "sqlite::memory:" {
        // Nothing survives the process: for tests and throwaway demos.
        return Ok(Arc::new(agentkit_runtime::MemoryStore::new()));
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let s = agentkit_runtime::PostgresStore::connect(database)
                .await
                .map_err(fail)?;
            return Ok(Arc::new(s));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(Failure::new(
            exit::INVALID,
            "this agentkit was built without PostgreSQL; rebuild with `--features postgres`",
        ));
    }
    #[cfg(feature = "sqlite")]
    {
        let path = PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
        let s = agentkit_runtime::SqliteStore::open(&path)
            .await
            .map_err(fail)?;
        Ok(Arc::new(s))
    }
    #[cfg(not(feature = "sqlite"))]
    Err(Failure::new(
        exit::INVALID,
        "this agentkit was built without SQLite; pass --database postgres://…",
    ))
}

/// The vault's master key: `AGENTKIT_MASTER_KEY` / `AGENTKIT_MASTER_KEY_FILE`; for `dev`
/// without them, `master.key` beside a SQLite database (made on first start, mode 0600) or a
/// fresh one for a memory store. Also the line `serve` prints about it.
fn master_key(
    dev: bool,
    database: &str,
) -> Result<(Option<agentkit_server::vault::MasterKey>, String), Failure> {
    use agentkit_server::vault::{MASTER_KEY_ENV, MasterKey};
    let bad = |e: agentkit_core::Error| Failure::new(exit::INVALID, e.to_string());
    if let Some(k) = MasterKey::from_env().map_err(bad)? {
        return Ok((Some(k), "master key from the environment".into()));
    }
    if !dev {
        return Ok((
            None,
            format!("off: set {MASTER_KEY_ENV} (64 hex digits) to keep secrets for MCP servers"),
        ));
    }
    let path = database
        .strip_prefix("sqlite://")
        .unwrap_or(database)
        .split('?')
        .next()
        .filter(|p| *p != "memory" && !p.starts_with("postgres") && !p.contains(":memory:"))
        .map(|p| {
            std::path::Path::new(p)
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("master.key")
        });
    let Some(path) = path else {
        let k = MasterKey::generate().map_err(bad)?;
        return Ok((
            Some(k),
            "fresh master key for this run (memory store)".into(),
        ));
    };
    if path.exists() {
        let k = MasterKey::from_file(&path).map_err(bad)?;
        return Ok((Some(k), format!("master key from {}", path.display())));
    }
    let k = MasterKey::generate().map_err(bad)?;
    write_private(&path, &k.to_hex()).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!(
                "cannot write the vault's master key to {}: {e}",
                path.display()
            ),
        )
    })?;
    Ok((
        Some(k),
        format!(
            "new master key in {} (keep it with the database)",
            path.display()
        ),
    ))
}

/// Write `text` to a new file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Start the server and serve until Ctrl-C (or SIGTERM).
pub(crate) async fn serve(args: ServeArgs, dev: bool) -> Result<(), Failure> {
    let (config, source) = load(&args.config, dev)?;
    #[cfg(feature = "otel")]
    let traces = init_tracing(&config)?;
    #[cfg(not(feature = "otel"))]
    init_tracing(&config)?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| "./.agentkit/agentkit.db".to_owned());
    let store = open_store(&database).await?;
    let key = std::env::var("AGENTKIT_ADMIN_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .unwrap_or_else(agentkit_server::generate_key);
    let (master, vault_note) = master_key(dev, &database)?;
    let previous = agentkit_server::vault::MasterKey::previous_from_env()
        .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    let vault_note = match (&master, previous.len()) {
        (_, 0) => vault_note,
        (Some(_), n) => {
            format!("{vault_note}; {n} previous key(s): their secrets are re-sealed under it now")
        }
        (None, _) => {
            return Err(Failure::new(
                exit::INVALID,
                format!(
                    "{} is set but no current master key: set {} to the new key",
                    agentkit_server::vault::PREVIOUS_KEYS_ENV,
                    agentkit_server::vault::MASTER_KEY_ENV
                ),
            ));
        }
    };
    let mut builder = Server::builder(store).previous_master_keys(previous);
    if let Some(k) = master {
        builder = builder.master_key(k);
    }
    let (builder, offline) = agentkit_server::spec::server_builder(builder, &config)
        .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    let server = builder
        .admin_key(key.clone())
        .build()
        .await
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("cannot listen on {}: {e}; pass --bind ADDR", args.bind),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let agents = server
        .platform()
        .registry()
        .list()
        .await
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let workflows = agents
        .iter()
        .filter(|e| e.kind == agentkit_server::EntryKind::Workflow)
        .count();
    // What the config declares besides agents and workflows, named only when it has some.
    let webhooks = config
        .triggers
        .values()
        .filter(|t| matches!(t, agentkit_core::config::TriggerSpec::Webhook(_)))
        .count();
    let mut serving = vec![
        counted(agents.len() - workflows, "agent"),
        counted(workflows, "workflow"),
    ];
    for (n, thing) in [
        (config.schedules.len(), "schedule"),
        (webhooks, "webhook"),
        (config.triggers.len() - webhooks, "event trigger"),
    ] {
        if n > 0 {
            serving.push(counted(n, thing));
        }
    }
    let mut banner = vec![
        format!("agentkit serving {} from {source}", serving.join(", ")),
        format!("  API      http://{addr}/v1   (OpenAPI: http://{addr}/openapi.json)"),
        format!("  MCP      http://{addr}/mcp  (streamable HTTP; every agent is a tool)"),
    ];
    #[cfg(feature = "dashboard")]
    banner.push(format!(
        "  web      http://{addr}/     (the dashboard; sign in with an API key)"
    ));
    banner.push(format!("  store    {database}"));
    banner.push(format!("  vault    {vault_note}"));
    if std::env::var("AGENTKIT_ADMIN_KEY").is_err() {
        banner.push(format!(
            "  key      {key}   (set AGENTKIT_ADMIN_KEY to choose it)"
        ));
    }
    if offline {
        banner.push(
            "  model    scripted (offline): set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY for a real one".to_owned()
        );
    }
    #[cfg(feature = "otel")]
    if let Some(otel) = &traces {
        banner.push(format!(
            "  traces   {} (OTLP/HTTP, service.name {})",
            otel.config().traces_endpoint,
            otel.config().service_name
        ));
    }
    banner.push(format!(
        "Try:  curl -s -H 'x-api-key: <key>' http://{addr}/v1/agents"
    ));
    // The server keeps serving when nobody reads its stdout (`agentkit dev | head -3`).
    crate::output::lines_or_ignore(&banner);
    let served = server
        .serve(listener, shutdown_signal())
        .await
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()));
    #[cfg(feature = "otel")]
    if let Some(otel) = traces
        && let Err(e) = otel.shutdown().await
    {
        eprintln!("agentkit: the last traces could not be exported: {e}");
    }
    served
}

/// Logs to stderr (`RUST_LOG`, default `warn,agentkit=info`) and, with the `otel` feature
/// and `otel:` / `OTEL_*` asking for it, trace export over OTLP.
#[cfg(feature = "otel")]
fn init_tracing(
    config: &agentkit_core::Config,
) -> Result<Option<agentkit_server::observe::otel::Otel>, Failure> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let otel = agentkit_server::observe::otel::Otel::from_settings(&config.otel)
        .map_err(|e| Failure::new(exit::INVALID, format!("otel: {e}")))?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .with_filter(log_filter());
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel.as_ref().map(|o| o.layer()))
        .try_init();
    Ok(otel)
}

/// Colours in the logs only on a terminal (and not with `NO_COLOR`): a log file or a log
/// collector gets plain text.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to stderr (`RUST_LOG`, default `warn,agentkit=info`). This build has no `otel`
/// feature: an `otel:` section that turns export on is reported, not silently ignored.
#[cfg(not(feature = "otel"))]
fn init_tracing(config: &agentkit_core::Config) -> Result<(), Failure> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .try_init();
    if config.otel.enabled || config.otel.endpoint.is_some() {
        tracing::warn!(
            "agentkit.yaml asks for OpenTelemetry traces (`otel:`), but this agentkit was built \
             without the `otel` feature; rebuild with `--features otel` to export them"
        );
    }
    Ok(())
}

/// The log filter: `RUST_LOG`, default `warn,agentkit=info`.
///
/// rmcp logs whole MCP messages (tool arguments and results, unredacted): requests and
/// responses at `debug`, notifications (an upstream's log messages and progress included) at
/// `info`. Unless `RUST_LOG` names `rmcp` itself, it is held at `warn`, so neither the
/// default nor `RUST_LOG=trace` for a troubleshooting session writes credentials into the
/// logs.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let given = std::env::var("RUST_LOG").unwrap_or_default();
    let mut spec = if given.trim().is_empty() {
        "warn,agentkit=info".to_owned()
    } else {
        given
    };
    if !spec.contains("rmcp") {
        spec.push_str(",rmcp=warn");
    }
    tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,agentkit=info,rmcp=warn"))
}

/// `n` things: `1 agent`, `2 agents`, `0 workflows`.
fn counted(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!(
        "agentkit: stopping: no new requests; in-flight runs get 10 s, then resume on the next start"
    );
}

/// `agentkit validate`.
pub(crate) fn validate(args: &ConfigArgs, json: bool) -> Result<(), Failure> {
    let (config, source) = load(args, false)?;
    agentkit_server::spec::server_builder(
        Server::builder(Arc::new(agentkit_runtime::MemoryStore::new())),
        &config,
    )
    .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    if json {
        crate::commands::print_json(&serde_json::json!({
            "valid": true,
            "source": source.to_string(),
            "agents": config.agents.len(),
            "workflows": config.workflows.len(),
            "mcp_servers": config.mcp.servers.len(),
        }));
        return Ok(());
    }
    outln!(
        "{source}: ok ({} agent(s) and workflow(s), {} MCP server(s))",
        config.agents.len() + config.workflows.len(),
        config.mcp.servers.len()
    );
    Ok(())
}

/// `agentkit init`.
pub(crate) fn init(force: bool) -> Result<(), Failure> {
    let path = PathBuf::from("agentkit.yaml");
    if path.exists() && !force {
        return Err(Failure::new(
            exit::CONFLICT,
            "agentkit.yaml exists; pass --force to overwrite it",
        ));
    }
    std::fs::write(&path, DEMO_CONFIG)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot write agentkit.yaml: {e}")))?;
    outln!("wrote agentkit.yaml; start it with `agentkit dev`");
    Ok(())
}

/// A server running inside this process (for `agentkit run` without `--server`).
pub(crate) struct InProcess {
    pub(crate) url: String,
    pub(crate) key: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Stop serving and wait for the server to finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serve the config's agents (or the demo's) on an in-memory store on a loopback port.
pub(crate) async fn in_process(config: Option<PathBuf>) -> Result<InProcess, Failure> {
    let (config, _) = load(&ConfigArgs { config }, true)?;
    let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
    let key = agentkit_server::generate_key();
    let (builder, offline) = agentkit_server::spec::server_builder(Server::builder(store), &config)
        .map_err(|e| Failure::new(exit::INVALID, e.to_string()))?;
    if offline {
        eprintln!(
            "agentkit: scripted model (offline): set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY for a real one"
        );
    }
    let server = builder
        .admin_key(key.clone())
        .build()
        .await
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot listen on loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(InProcess {
        url: format!("http://{addr}"),
        key,
        stop: tx,
        task,
    })
}
