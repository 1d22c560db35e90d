//! `agentkit mcp serve|tools|bridge`.

use std::sync::Arc;

use agentkit_core::AugmentedLlm;
use agentkit_mcp::{ConnectionManager, HttpOptions, ServerSet};
use agentkit_server::spec::{Catalog, ModelFactory};

use crate::Remote;
use crate::client::{Failure, exit};
use crate::serve::{ConfigArgs, load};

/// `agentkit mcp …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum McpCmd {
    /// Serve the config's agents and workflows as MCP tools over stdio (for Claude Desktop,
    /// Cursor, any MCP client).
    Serve(ConfigArgs),
    /// List the tools of the config's MCP servers (or of one).
    Tools {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this server (its name in the config's `mcp.servers`).
        #[arg(id = "mcp_server", value_name = "SERVER")]
        server: Option<String>,
    },
    /// Serve one of the config's MCP servers (e.g. a stdio one) over streamable HTTP.
    Bridge {
        #[command(flatten)]
        config: ConfigArgs,
        /// The server to bridge (its name in the config's `mcp.servers`).
        #[arg(id = "mcp_server", value_name = "SERVER")]
        server: String,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: String,
    },
}

fn failed(e: agentkit_core::Error) -> Failure {
    Failure::from(e)
}

fn manager(config: &agentkit_core::Config) -> Result<ConnectionManager, Failure> {
    let set = ServerSet::from_settings(&config.mcp).map_err(failed)?;
    Ok(ConnectionManager::from_set(&set))
}

/// Run an `agentkit mcp` command.
pub(crate) async fn mcp(remote: &Remote, cmd: McpCmd) -> Result<(), Failure> {
    match cmd {
        McpCmd::Serve(args) => {
            let (config, source) = load(&args, true)?;
            let models = ModelFactory::from_config(&config);
            if models.is_offline() {
                eprintln!(
                    "agentkit: scripted model (offline): set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY for a real one"
                );
            }
            let catalog = Catalog::new(config, models).map_err(failed)?;
            let agents: Vec<Arc<dyn AugmentedLlm>> = catalog
                .names()
                .into_iter()
                .map(|n| catalog.build(n))
                .collect::<Result<_, _>>()
                .map_err(failed)?;
            eprintln!(
                "agentkit: serving {} agent(s) from {source} as MCP tools on stdio",
                agents.len()
            );
            agentkit_mcp::expose_as_mcp_server("agentkit", agents)
                .build()
                .serve_stdio()
                .await
                .map_err(failed)
        }
        McpCmd::Tools { config, server } => {
            let (config, _) = load(&config, false)?;
            let m = manager(&config)?;
            let names = match server {
                Some(s) => vec![s],
                None => m.server_names(),
            };
            let mut rows = Vec::new();
            for name in names {
                let conn = m.connection(&name).await.map_err(failed)?;
                for t in conn.list_tools().await.map_err(failed)? {
                    rows.push(serde_json::json!({
                        "server": name,
                        "tool": t.name,
                        "description": t.description.as_deref().unwrap_or(""),
                    }));
                }
            }
            m.shutdown().await;
            if remote.json {
                outln!("{}", serde_json::Value::Array(rows));
            } else {
                for r in &rows {
                    let d = r["description"].as_str().unwrap_or("");
                    let d: String = d.lines().next().unwrap_or("").chars().take(80).collect();
                    outln!(
                        "{}__{}  {d}",
                        r["server"].as_str().unwrap_or(""),
                        r["tool"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        McpCmd::Bridge {
            config,
            server,
            bind,
        } => {
            let (config, _) = load(&config, false)?;
            let m = manager(&config)?;
            let built = agentkit_mcp::bridge::bridge_server(&m, &server)
                .await
                .map_err(failed)?
                .build();
            let app = axum::Router::new()
                .nest_service("/mcp", built.into_http_service(HttpOptions::new()));
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .map_err(|e| Failure::new(exit::FAILED, format!("cannot listen on {bind}: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
            // Like `agentkit dev`'s banner: a closed stdout does not stop the bridge.
            crate::output::lines_or_ignore(&[format!(
                "agentkit: MCP server `{server}` at http://{addr}/mcp"
            )]);
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
            m.shutdown().await;
            Ok(())
        }
    }
}
