//! [`ServerConfig`]: how to reach one MCP server, built from agentkit's
//! [`McpServerConfig`]; plus role-based server sets ([`ServerSet`]).
//!
//! Files are read by agentkit-core's one config loader
//! ([`ConfigLoader`]): `agentkit.yaml`, mcp-agent's `mcp_agent.config.yaml` (with its secrets
//! file) and the `{"mcpServers": {...}}` JSON of Claude Desktop, Cursor and `.mcp.json`, with
//! `${VAR}` substitution and errors that name the file, key, line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentkit_core::config::{Config, ConfigFormat, ConfigLoader, McpRoot, McpSettings};
use agentkit_core::{Error, McpOAuth, McpServerConfig, McpTransport, Result, ToolFilter};

use crate::inprocess::InProcessServer;

/// How to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTransport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Its environment variables. The child starts with a scrubbed environment: these,
        /// the variables `inherit_env` names, and [`BASE_ENV`](crate::stdio_env::BASE_ENV).
        env: BTreeMap<String, String>,
        /// Variables of this process's environment the child also gets: names (`LANG`) or
        /// prefixes (`LC_*`; `*` passes everything).
        inherit_env: Vec<String>,
        /// Resource limits of the child (Unix; none when empty).
        limits: agentkit_core::McpProcessLimits,
        /// Working directory.
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP.
    StreamableHttp {
        /// Endpoint, e.g. `http://127.0.0.1:3001/mcp`.
        url: String,
        /// Extra HTTP headers.
        headers: BTreeMap<String, String>,
        /// Sent as `Authorization: Bearer <token>`.
        bearer_token: Option<String>,
    },
    /// The legacy HTTP+SSE transport of protocol 2024-11-05 (`transport: sse`): a `GET`
    /// stream for server messages and `POST`s to the endpoint it announces.
    Sse {
        /// The SSE URL, e.g. `http://127.0.0.1:3001/sse`.
        url: String,
        /// Extra HTTP headers (sent with the stream's `GET` and every `POST`).
        headers: BTreeMap<String, String>,
        /// Sent as `Authorization: Bearer <token>`.
        bearer_token: Option<String>,
    },
    /// A server running in this process (see [`InProcessServer`]): no socket, no child
    /// process; messages pass as values over in-memory channels.
    InProcess(InProcessServer),
}

/// One MCP server: its name, how to reach it, its limits, roots and tool filter.
///
/// ```
/// use agentkit_mcp::{ServerConfig, ServerTransport};
/// let fs = ServerConfig::stdio("fs", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"])
///     .with_max_concurrency(4);
/// assert!(matches!(fs.transport, ServerTransport::Stdio { .. }));
/// let remote = ServerConfig::http("issues", "http://127.0.0.1:9000/mcp").with_bearer_token("s3cret");
/// assert_eq!(remote.name, "issues");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Name, used to prefix its tools (`name__tool`) and in errors.
    pub name: String,
    /// How to reach it.
    pub transport: ServerTransport,
    /// What it is for.
    pub description: Option<String>,
    /// Time allowed to start and initialise.
    pub connect_timeout: Duration,
    /// Time allowed for one request, re-armed by progress notifications; `None` waits
    /// forever. Default [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Option<Duration>,
    /// How long a closing stdio server may take to exit after its stdin is closed, before it
    /// is sent SIGTERM (and, after as long again, killed). Default [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// Roots offered to the server (`roots/list`).
    pub roots: Vec<McpRoot>,
    /// Which tools are offered (all when `None`).
    pub tool_filter: Option<ToolFilter>,
    /// At most this many requests in flight at once (unbounded when `None`).
    pub max_concurrency: Option<usize>,
    /// OAuth 2.1 authorization of a streamable HTTP server (`auth: {oauth: ...}`); needs the
    /// `oauth` feature. Takes the place of `bearer_token` when both are set.
    pub oauth: Option<McpOAuth>,
}

/// Default time allowed to connect and initialise (npx may need to unpack a package).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time allowed for one request without a response or a progress notification: a
/// server that never answers fails the call after this long instead of hanging the agent.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a closing stdio server gets to exit on its own after its stdin is closed.
/// Servers normally exit at once; one that keeps running (a timer or an unanswered request
/// keeps node alive) is sent SIGTERM after this.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

impl ServerConfig {
    /// A server with this transport and default limits.
    pub fn new(name: impl Into<String>, transport: ServerTransport) -> Self {
        Self {
            name: name.into(),
            transport,
            description: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            roots: Vec::new(),
            tool_filter: None,
            max_concurrency: None,
            oauth: None,
        }
    }

    /// A stdio server started as `command args...`.
    pub fn stdio<I, S>(name: impl Into<String>, command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            name,
            ServerTransport::Stdio {
                command: command.into(),
                args: args.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                inherit_env: Vec::new(),
                limits: agentkit_core::McpProcessLimits::default(),
                cwd: None,
            },
        )
    }

    /// A streamable HTTP server at `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(
            name,
            ServerTransport::StreamableHttp {
                url: url.into(),
                headers: BTreeMap::new(),
                bearer_token: None,
            },
        )
    }

    /// A server speaking the legacy HTTP+SSE transport (protocol 2024-11-05) at `url`.
    pub fn sse(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(
            name,
            ServerTransport::Sse {
                url: url.into(),
                headers: BTreeMap::new(),
                bearer_token: None,
            },
        )
    }

    /// A server running in this process: an [`McpServer`](crate::McpServer), or any rmcp
    /// [`ServerHandler`](rmcp::ServerHandler) wrapped in [`InProcessServer::new`]. It is
    /// reached over in-memory channels (no socket, no JSON encoding), with everything else
    /// as for other servers: lazy connect, the lifecycle handshake, progress, sampling and
    /// elicitation, reconnect after the connection was lost. The manager's
    /// [`shutdown`](crate::ConnectionManager::shutdown) closes its connections; stop the
    /// server itself with [`InProcessServer::stop`].
    ///
    /// ```
    /// use agentkit_mcp::{McpServerBuilder, ServerConfig, ServerTransport};
    /// let server = McpServerBuilder::new("calc", "1.0.0").build();
    /// let config = ServerConfig::in_process("calc", server);
    /// assert!(matches!(config.transport, ServerTransport::InProcess(_)));
    /// ```
    pub fn in_process(name: impl Into<String>, server: impl Into<InProcessServer>) -> Self {
        Self::new(name, ServerTransport::InProcess(server.into()))
    }

    /// Set an environment variable of a stdio server (ignored for HTTP).
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let ServerTransport::Stdio { env, .. } = &mut self.transport {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Also pass this process's variables `name` (or, ending in `*`, every variable with
    /// that prefix) to a stdio server (ignored for HTTP).
    #[must_use]
    pub fn with_inherited_env(mut self, name: impl Into<String>) -> Self {
        if let ServerTransport::Stdio { inherit_env, .. } = &mut self.transport {
            inherit_env.push(name.into());
        }
        self
    }

    /// Run a stdio server under resource `limits` (ignored for HTTP).
    #[must_use]
    pub fn with_limits(mut self, limits: agentkit_core::McpProcessLimits) -> Self {
        if let ServerTransport::Stdio { limits: l, .. } = &mut self.transport {
            *l = limits;
        }
        self
    }

    /// Set the working directory of a stdio server (ignored for HTTP).
    #[must_use]
    pub fn with_cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        if let ServerTransport::Stdio { cwd, .. } = &mut self.transport {
            *cwd = Some(dir.into());
        }
        self
    }

    /// Add an HTTP header (ignored for stdio).
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let ServerTransport::StreamableHttp { headers, .. }
        | ServerTransport::Sse { headers, .. } = &mut self.transport
        {
            headers.insert(key.into(), value.into());
        }
        self
    }

    /// Send `Authorization: Bearer <token>` (ignored for stdio).
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        if let ServerTransport::StreamableHttp { bearer_token, .. }
        | ServerTransport::Sse { bearer_token, .. } = &mut self.transport
        {
            *bearer_token = Some(token.into());
        }
        self
    }

    /// Authorize with OAuth 2.1 (streamable HTTP servers; needs the `oauth` feature).
    #[must_use]
    pub fn with_oauth(mut self, oauth: McpOAuth) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// Describe the server.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Time allowed to connect and initialise.
    #[must_use]
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time allowed for one request (re-armed by progress notifications).
    #[must_use]
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = Some(t);
        self
    }

    /// Let requests wait for an answer forever (no request timeout).
    #[must_use]
    pub fn without_request_timeout(mut self) -> Self {
        self.request_timeout = None;
        self
    }

    /// How long a closing stdio server may take to exit after its stdin is closed before it
    /// is sent SIGTERM.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Offer a root (`file://` URI).
    #[must_use]
    pub fn with_root(mut self, uri: impl Into<String>, name: Option<String>) -> Self {
        let mut root: McpRoot =
            match serde_json::from_value(serde_json::json!({"uri": uri.into(), "name": name})) {
                Ok(r) => r,
                Err(_) => return self,
            };
        if root.name.as_deref() == Some("") {
            root.name = None;
        }
        self.roots.push(root);
        self
    }

    /// Filter the offered tools.
    #[must_use]
    pub fn with_tool_filter(mut self, filter: ToolFilter) -> Self {
        self.tool_filter = Some(filter);
        self
    }

    /// Whether the server's tool `name` is offered.
    #[must_use]
    pub fn offers_tool(&self, name: &str) -> bool {
        self.tool_filter.as_ref().is_none_or(|f| f.allows(name))
    }

    /// Limit concurrent requests.
    #[must_use]
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Build from agentkit's config type. Fails on a config that names no command (stdio) or
    /// no URL (HTTP, SSE) and on a timeout that is not a positive number of seconds.
    pub fn from_core(name: impl Into<String>, c: &McpServerConfig) -> Result<Self> {
        let name = name.into();
        let key = format!("mcp.servers.{name}");
        let transport = match (c.transport, &c.command, &c.url) {
            (McpTransport::Sse, _, Some(url)) => ServerTransport::Sse {
                url: url.clone(),
                headers: c.headers.clone(),
                bearer_token: c.bearer_token.clone(),
            },
            (McpTransport::Sse, _, None) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "an sse server needs a `url` (its SSE stream, often ending in `/sse`)"
                        .into(),
                });
            }
            (McpTransport::StreamableHttp, _, Some(url)) | (_, None, Some(url)) => {
                ServerTransport::StreamableHttp {
                    url: url.clone(),
                    headers: c.headers.clone(),
                    bearer_token: c.bearer_token.clone(),
                }
            }
            (McpTransport::StreamableHttp, _, None) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "a streamable_http server needs a `url`".into(),
                });
            }
            (_, Some(command), _) => ServerTransport::Stdio {
                command: command.clone(),
                args: c.args.clone(),
                env: c.env.clone(),
                inherit_env: c.inherit_env.clone(),
                limits: c.limits.unwrap_or_default(),
                cwd: c.cwd.clone(),
            },
            (_, None, None) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "set `command` (stdio server) or `url` (streamable HTTP server)"
                        .into(),
                });
            }
        };
        let at_key = |e: Error| match e {
            Error::Config {
                file,
                key: k,
                message,
                ..
            } => Error::Config {
                file,
                key: format!("{key}.{k}"),
                message,
            },
            other => other,
        };
        if c.max_concurrency == Some(0) {
            return Err(Error::Config {
                file: None,
                key: format!("{key}.max_concurrency"),
                message: "expected at least 1 concurrent request; leave it unset for no limit"
                    .into(),
            });
        }
        let oauth = c.auth.as_ref().and_then(|a| a.oauth.clone());
        if oauth.is_some() && !matches!(transport, ServerTransport::StreamableHttp { .. }) {
            return Err(Error::Config {
                file: None,
                key: format!("{key}.auth.oauth"),
                message: "OAuth is supported for streamable_http servers only; a stdio server \
                          gets its credentials from `env`, an sse server from `bearer_token` or \
                          `headers`"
                    .into(),
            });
        }
        let mut out = Self::new(name, transport);
        out.oauth = oauth;
        out.description = c.description.clone();
        if let Some(t) = c.connect_timeout().map_err(at_key)? {
            out.connect_timeout = t;
        }
        if let Some(t) = c.request_timeout().map_err(at_key)? {
            out.request_timeout = Some(t);
        }
        out.roots = c.roots.clone();
        out.tool_filter = tool_filter(c.allowed_tools.as_deref(), &c.denied_tools);
        out.max_concurrency = c.max_concurrency;
        Ok(out)
    }
}

/// A set of configured servers plus named roles (`roles: {dev: [core, issues]}`).
///
/// Read it from agentkit's [`McpSettings`], from `mcp_agent.config.yaml` or from `mcpServers`
/// JSON, then ask which servers an agent gets: the union of its roles and its own list.
///
/// ```
/// use agentkit_mcp::ServerSet;
/// let set = ServerSet::from_mcp_servers_json(r#"{
///   "mcpServers": {
///     "fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]},
///     "issues": {"url": "http://127.0.0.1:9000/mcp"}
///   },
///   "roles": {"dev": ["fs"]}
/// }"#).unwrap();
/// let names: Vec<_> = set.servers_for(&["dev"], &["issues"]).unwrap()
///     .into_iter().map(|s| s.name).collect();
/// assert_eq!(names, ["fs", "issues"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ServerSet {
    /// Servers by name.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Roles: named lists of server names.
    pub roles: BTreeMap<String, Vec<String>>,
}

impl ServerSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a server.
    #[must_use]
    pub fn with_server(mut self, server: ServerConfig) -> Self {
        self.servers.insert(server.name.clone(), server);
        self
    }

    /// Add a role.
    #[must_use]
    pub fn with_role<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        role: impl Into<String>,
        servers: I,
    ) -> Self {
        self.roles
            .insert(role.into(), servers.into_iter().map(Into::into).collect());
        self
    }

    /// From agentkit's `mcp:` settings. Roles naming unknown servers are rejected.
    pub fn from_settings(settings: &McpSettings) -> Result<Self> {
        let mut servers = BTreeMap::new();
        for (name, c) in &settings.servers {
            servers.insert(name.clone(), ServerConfig::from_core(name.clone(), c)?);
        }
        let set = Self {
            servers,
            roles: settings.roles.clone(),
        };
        set.check_roles()?;
        Ok(set)
    }

    /// From a loaded [`Config`]: its `mcp:` section.
    pub fn from_config(config: &Config) -> Result<Self> {
        Self::from_settings(&config.mcp)
    }

    /// From the `{"mcpServers": {...}}` JSON used by Claude Desktop, Cursor and `.mcp.json`
    /// (a `roles` object beside `mcpServers` is accepted too), with `${VAR}` substitution from
    /// the process environment.
    pub fn from_mcp_servers_json(json: &str) -> Result<Self> {
        Self::from_config(&ConfigLoader::new().parse(json, ConfigFormat::McpServersJson, None)?)
    }

    /// From mcp-agent's `mcp_agent.config.yaml` text (`mcp: {servers: {...}}`), with `${VAR}`
    /// substitution; keys of that file agentkit does not use are ignored.
    pub fn from_mcp_agent_yaml(yaml: &str) -> Result<Self> {
        Self::from_config(&ConfigLoader::new().parse(yaml, ConfigFormat::McpAgent, None)?)
    }

    /// Read a file with [`ConfigLoader::load_file`]: the format is chosen by its name
    /// (`*.json` is `mcpServers` JSON, `mcp_agent.config.yaml` is mcp-agent's, other YAML is
    /// `agentkit.yaml`), the secrets file next to a YAML file is merged, `${VAR}` values are
    /// substituted, and every error names the file, key, line and column.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(&ConfigLoader::new(), path)
    }

    /// [`ServerSet::load`] with a configured loader (e.g. its own environment lookup).
    pub fn load_with(loader: &ConfigLoader, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_config(&loader.load_file(path)?).map_err(|e| match e {
            Error::Config {
                file: None,
                key,
                message,
            } => Error::Config {
                file: Some(path.to_owned()),
                key,
                message,
            },
            other => other,
        })
    }

    fn check_roles(&self) -> Result<()> {
        for (role, names) in &self.roles {
            for n in names {
                if !self.servers.contains_key(n) {
                    return Err(Error::Config {
                        file: None,
                        key: format!("roles.{role}"),
                        message: format!(
                            "role `{role}` names server `{n}`, which is not configured; configured servers: {}",
                            self.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The servers of an agent: the union of its roles' servers and its own list, in first-seen
    /// order, without duplicates. Unknown roles or servers are an error naming them.
    pub fn servers_for<R: AsRef<str>, S: AsRef<str>>(
        &self,
        roles: &[R],
        own: &[S],
    ) -> Result<Vec<ServerConfig>> {
        let mut names: Vec<&str> = Vec::new();
        for r in roles {
            let r = r.as_ref();
            let list = self.roles.get(r).ok_or_else(|| Error::Config {
                file: None,
                key: "roles".into(),
                message: format!(
                    "unknown role `{r}`; known roles: {}",
                    self.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            names.extend(list.iter().map(String::as_str));
        }
        names.extend(own.iter().map(AsRef::as_ref));
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            if !seen.insert(n) {
                continue;
            }
            let s = self.servers.get(n).ok_or_else(|| Error::Config {
                file: None,
                key: "mcp.servers".into(),
                message: format!(
                    "unknown MCP server `{n}`; configured servers: {}",
                    self.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            out.push(s.clone());
        }
        Ok(out)
    }
}

/// The filter of `allowed_tools` and `denied_tools`: an allow-list minus the denied names, a
/// deny-list, or none.
fn tool_filter(allow: Option<&[String]>, deny: &[String]) -> Option<ToolFilter> {
    match allow {
        Some(allow) => Some(ToolFilter::allow(
            allow.iter().filter(|n| !deny.contains(n)).cloned(),
        )),
        None if deny.is_empty() => None,
        None => Some(ToolFilter::deny(deny.iter().cloned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn mcp_agent_yaml_is_read_and_extra_keys_ignored() {
        let set = ServerSet::from_mcp_agent_yaml(
            r#"
execution_engine: asyncio
logger: {type: console}
mcp:
  servers:
    fetch:
      command: uvx
      args: [mcp-server-fetch]
      read_timeout_seconds: 30
    remote:
      transport: streamable_http
      url: http://127.0.0.1:1/mcp
      headers: {X-Team: a}
"#,
        )
        .unwrap();
        let fetch = &set.servers["fetch"];
        assert_eq!(fetch.request_timeout, Some(Duration::from_secs(30)));
        assert!(
            matches!(&fetch.transport, ServerTransport::Stdio { command, .. } if command == "uvx")
        );
        assert!(matches!(&set.servers["remote"].transport,
            ServerTransport::StreamableHttp { headers, .. } if headers["X-Team"] == "a"));
    }

    #[test]
    fn roles_union_and_unknown_names_are_errors() {
        let set = ServerSet::new()
            .with_server(ServerConfig::stdio("core", "a", Vec::<String>::new()))
            .with_server(ServerConfig::stdio("issues", "b", Vec::<String>::new()))
            .with_server(ServerConfig::stdio("pipeline", "c", Vec::<String>::new()))
            .with_role("dev", ["core", "pipeline", "issues"])
            .with_role("ops", ["pipeline"]);
        let names: Vec<_> = set
            .servers_for(&["ops", "dev"], &["core"])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["pipeline", "core", "issues"]);
        let err = set.servers_for(&["qa"], &[] as &[&str]).unwrap_err();
        assert!(err.to_string().contains("unknown role `qa`"), "{err}");
        let err = set.servers_for(&[] as &[&str], &["nope"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown MCP server `nope`"),
            "{err}"
        );
    }

    #[test]
    fn sse_is_read_from_every_dialect_and_empty_servers_are_rejected() {
        let json = ServerSet::from_mcp_servers_json(
            r#"{"mcpServers": {"old": {"type": "sse", "url": "http://x/sse", "headers": {"X-A": "1"}}}}"#,
        )
        .unwrap();
        assert!(matches!(&json.servers["old"].transport,
            ServerTransport::Sse { url, headers, .. } if url == "http://x/sse" && headers["X-A"] == "1"));
        let yaml = ServerSet::from_mcp_agent_yaml(
            "mcp:\n  servers:\n    old:\n      transport: sse\n      url: http://x/sse\n      auth: {api_key: k}\n",
        )
        .unwrap();
        assert!(matches!(&yaml.servers["old"].transport,
            ServerTransport::Sse { bearer_token: Some(t), .. } if t == "k"));
        let config = ConfigLoader::new()
            .parse(
                "mcp:\n  servers:\n    old: {transport: sse, url: 'http://x/sse'}\n",
                ConfigFormat::Agentkit,
                None,
            )
            .unwrap();
        let own = ServerSet::from_config(&config).unwrap();
        assert!(matches!(
            &own.servers["old"].transport,
            ServerTransport::Sse { .. }
        ));
        let err =
            ServerConfig::from_core("s", &McpServerConfig::new(McpTransport::Sse)).unwrap_err();
        assert!(err.to_string().contains("needs a `url`"), "{err}");
        let err = ServerSet::from_mcp_servers_json(r#"{"mcpServers": {"x": {}}}"#).unwrap_err();
        assert!(err.to_string().contains("mcpServers.x"), "{err}");
    }

    #[test]
    fn oauth_is_read_from_every_dialect_and_only_for_streamable_http() {
        let own = ServerSet::from_config(
            &ConfigLoader::new()
                .parse(
                    "mcp:\n  servers:\n    api:\n      url: http://x/mcp\n      auth:\n        oauth: {scopes: [a, b], redirect_port: 8765, client_id: c}\n",
                    ConfigFormat::Agentkit,
                    None,
                )
                .unwrap(),
        )
        .unwrap();
        let o = own.servers["api"].oauth.clone().unwrap();
        assert_eq!(
            (o.scopes, o.redirect_port, o.client_id.as_deref()),
            (vec!["a".to_owned(), "b".to_owned()], Some(8765), Some("c"))
        );
        let agent = ServerSet::from_mcp_agent_yaml(
            "mcp:\n  servers:\n    api:\n      transport: streamable_http\n      url: http://x/mcp\n      auth:\n        oauth: {enabled: true, scopes: [s], use_internal_callback: true}\n    off:\n      transport: streamable_http\n      url: http://x/mcp\n      auth: {oauth: {enabled: false}}\n",
        )
        .unwrap();
        assert_eq!(agent.servers["api"].oauth.as_ref().unwrap().scopes, ["s"]);
        assert!(agent.servers["off"].oauth.is_none());
        let json = ServerSet::from_mcp_servers_json(
            r#"{"mcpServers": {"g": {"httpUrl": "http://x/mcp", "oauth": {"enabled": true, "clientId": "gc", "scopes": ["x"]}},
                "k": {"url": "http://x/mcp", "auth": {"oauth": {"client_credentials": true, "client_id": "svc", "client_secret": "s"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            json.servers["g"]
                .oauth
                .as_ref()
                .unwrap()
                .client_id
                .as_deref(),
            Some("gc")
        );
        let k = json.servers["k"].oauth.as_ref().unwrap();
        assert!(k.client_credentials);
        assert!(
            !format!("{k:?}").contains("\"s\""),
            "the secret is redacted"
        );
        let err = ServerSet::from_mcp_servers_json(
            r#"{"mcpServers": {"s": {"command": "x", "auth": {"oauth": {}}}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("streamable_http servers only"),
            "{err}"
        );
        let err = ServerSet::from_mcp_servers_json(
            r#"{"mcpServers": {"s": {"url": "http://x/mcp", "auth": {"oauth": {"scope": "a"}}}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("scope"), "{err}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn loader(vars: &'static [(&'static str, &'static str)]) -> ConfigLoader {
        ConfigLoader::new().with_env(|n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn load_substitutes_env_vars_and_merges_the_secrets_file_like_config_load_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = write(
            dir.path(),
            ".mcp.json",
            r#"{"mcpServers": {"api": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}}}"#,
        );
        let set = ServerSet::load_with(&loader(&[("TOKEN", "s3cret")]), &json).unwrap();
        assert!(matches!(&set.servers["api"].transport,
            ServerTransport::StreamableHttp { headers, .. } if headers["Authorization"] == "Bearer s3cret"));
        // An unset variable is an error naming the file, key and variable.
        let err = ServerSet::load_with(&loader(&[]), &json).unwrap_err();
        let Error::Config { file, key, message } = err else {
            panic!()
        };
        assert_eq!(file.as_deref(), Some(json.as_path()));
        assert!(key.contains("Authorization"), "{key}");
        assert!(message.contains("`TOKEN` is not set"), "{message}");

        let yaml = write(
            dir.path(),
            "mcp_agent.config.yaml",
            "mcp:\n  servers:\n    api:\n      transport: streamable_http\n      url: http://127.0.0.1:9/mcp\n",
        );
        write(
            dir.path(),
            "mcp_agent.secrets.yaml",
            "mcp:\n  servers:\n    api:\n      auth: {api_key: from-secrets}\n",
        );
        let set = ServerSet::load_with(&loader(&[]), &yaml).unwrap();
        assert!(matches!(&set.servers["api"].transport,
            ServerTransport::StreamableHttp { bearer_token: Some(t), .. } if t == "from-secrets"));
    }

    #[test]
    fn load_rejects_what_config_load_file_rejects() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, wanted) in [
            (
                "a.json",
                r#"{"mcpServers": {"s": {"command": "x", "timeout": 1e300}}}"#,
                "greater than 0",
            ),
            (
                "b.json",
                r#"{"mcpServers": {"s": {"command": "x", "timeout": -5}}}"#,
                "greater than 0",
            ),
            (
                "c.json",
                r#"{"mcpServers": {"s": {"command": "x", "timeout": 0}}}"#,
                "greater than 0",
            ),
            (
                "d.json",
                r#"{"mcpServers": {"s": {"command": "x"}, "s": {"command": "y"}}}"#,
                "duplicate key `s`",
            ),
            (
                "e.json",
                r#"{"mcpServers": {"s": {"comand": "x"}}}"#,
                "did you mean `command`?",
            ),
            (
                "mcp_agent.config.yaml",
                "mcp:\n  servers:\n    s: {command: x, request_timeout_seconds: 1e20}\n",
                "greater than 0",
            ),
            (
                "f.yaml",
                "mcp:\n  servers:\n    s: {command: x}\n    s: {command: y}\n",
                "duplicate",
            ),
        ] {
            let path = write(dir.path(), name, text);
            let err = ServerSet::load_with(&loader(&[]), &path).unwrap_err();
            let Error::Config { file, message, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(file.as_deref(), Some(path.as_path()), "{name}");
            assert!(message.contains(wanted), "{name}: {message}");
        }
        // Programmatic configs are checked the same way.
        let c = McpServerConfig::stdio("x").with_request_timeout_seconds(1e20);
        assert!(
            ServerConfig::from_core("s", &c)
                .unwrap_err()
                .to_string()
                .contains("request_timeout_seconds")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever numbers a program puts in a core config, conversion never panics, and
        /// what it accepts is a usable, positive duration.
        #[test]
        fn from_core_never_panics_on_any_number(
            connect in proptest::num::f64::ANY,
            request in proptest::num::f64::ANY,
            max in proptest::prelude::any::<usize>(),
        ) {
            let c = McpServerConfig::stdio("x")
                .with_connect_timeout_seconds(connect)
                .with_request_timeout_seconds(request)
                .with_max_concurrency(max);
            if let Ok(s) = ServerConfig::from_core("s", &c) {
                proptest::prop_assert!(s.connect_timeout > Duration::ZERO);
                proptest::prop_assert!(s.request_timeout.is_some_and(|t| t > Duration::ZERO));
                proptest::prop_assert!(s.max_concurrency.is_some_and(|m| m >= 1));
                let _ = tokio::time::Instant::now().checked_add(s.connect_timeout);
            }
        }
    }

    #[test]
    fn defaults_bound_every_request() {
        let s = ServerConfig::stdio("s", "x", Vec::<String>::new());
        assert_eq!(s.request_timeout, Some(DEFAULT_REQUEST_TIMEOUT));
        let c = ServerConfig::from_core("s", &McpServerConfig::stdio("x")).unwrap();
        assert_eq!(c.request_timeout, Some(DEFAULT_REQUEST_TIMEOUT));
        assert_eq!(s.without_request_timeout().request_timeout, None);
    }

    #[test]
    fn tool_filter_allow_and_deny() {
        let f = tool_filter(Some(&["a".into(), "b".into()]), &["b".into()]).unwrap();
        assert!(f.allows("a"));
        assert!(!f.allows("b"));
        assert!(!f.allows("c"));
        let f = tool_filter(None, &["b".into()]).unwrap();
        assert!(f.allows("a") && !f.allows("b"));
        assert!(tool_filter(None, &[]).is_none());
    }
}
