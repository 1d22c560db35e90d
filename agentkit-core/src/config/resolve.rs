//! Checks and derived values: server sets from roles, provider settings with environment
//! fallbacks, the price table.

use crate::cost::PriceTable;
use crate::error::{Error, Result};

use super::locate::KeyPath;
use super::{AnthropicSettings, Config, McpTransport, OpenAiSettings};

fn known(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{}`", n.as_ref())).collect();
    if names.is_empty() {
        "none are configured".to_owned()
    } else {
        names.join(", ")
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Checks that every server has what its transport needs (`command` for stdio, `url` for
    /// HTTP) and that roles name only configured servers. Loading runs this; call it for a
    /// configuration built in code.
    ///
    /// ```
    /// use agentkit_core::config::{Config, McpServerConfig, McpTransport};
    ///
    /// let config = Config::new().with_server("api", McpServerConfig::new(McpTransport::StreamableHttp));
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("needs a `url`"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, message)| Error::Config {
            file: None,
            key: key.to_string(),
            message,
        })
    }

    pub(crate) fn check(&self) -> Result<(), (KeyPath, String)> {
        let base = KeyPath::keys(["mcp", "servers"]);
        for (name, server) in &self.mcp.servers {
            let p = base.key(name.as_str());
            match server.transport {
                McpTransport::Stdio => {
                    if server
                        .command
                        .as_deref()
                        .is_none_or(|c| c.trim().is_empty())
                    {
                        return Err((
                            p,
                            format!(
                                "stdio MCP server `{name}` needs a `command` to start (or a \
                                 `url` and an HTTP `transport`)"
                            ),
                        ));
                    }
                }
                McpTransport::StreamableHttp | McpTransport::Sse => {
                    if server.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
                        return Err((
                            p,
                            format!("HTTP MCP server `{name}` needs a `url` to connect to"),
                        ));
                    }
                }
            }
        }
        for (role, servers) in &self.mcp.roles {
            for (i, server) in servers.iter().enumerate() {
                if !self.mcp.servers.contains_key(server) {
                    return Err((
                        KeyPath::keys(["mcp", "roles", role.as_str()]).index(i),
                        format!(
                            "role `{role}` names unknown MCP server `{server}`; configured \
                             servers: {}",
                            known(self.mcp.servers.keys())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The servers an agent gets: the union of the `roles`' server lists and the explicit
    /// `servers`, in that order, without duplicates. An unknown role or server is an error
    /// listing the known ones.
    ///
    /// ```
    /// use agentkit_core::config::{Config, McpServerConfig};
    ///
    /// let config = Config::new()
    ///     .with_server("core", McpServerConfig::stdio("core-mcp"))
    ///     .with_server("issues", McpServerConfig::stdio("issues-mcp"))
    ///     .with_server("docs", McpServerConfig::streamable_http("http://127.0.0.1:8080/mcp"))
    ///     .with_role("dev", ["core", "issues"])
    ///     .with_role("writer", ["docs", "core"]);
    /// let servers = config.resolve_servers(&["dev", "writer"], &["issues"])?;
    /// assert_eq!(servers, ["core", "issues", "docs"]);
    /// assert!(config.resolve_servers(&["ops"], &[]).is_err());
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn resolve_servers(&self, roles: &[&str], servers: &[&str]) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |name: &str, key: String| -> Result<()> {
            if !self.mcp.servers.contains_key(name) {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: format!(
                        "unknown MCP server `{name}`; configured servers: {}",
                        known(self.mcp.servers.keys())
                    ),
                });
            }
            if !out.iter().any(|s| s == name) {
                out.push(name.to_owned());
            }
            Ok(())
        };
        for role in roles {
            let members = self.mcp.roles.get(*role).ok_or_else(|| Error::Config {
                file: None,
                key: format!("mcp.roles.{role}"),
                message: format!(
                    "unknown role `{role}`; configured roles: {}",
                    known(self.mcp.roles.keys())
                ),
            })?;
            for (i, name) in members.iter().enumerate() {
                add(name, format!("mcp.roles.{role}[{i}]"))?;
            }
        }
        for name in servers {
            add(name, format!("mcp.servers.{name}"))?;
        }
        Ok(out)
    }

    /// The OpenAI settings with environment fallbacks applied: `api_key` from
    /// `OPENAI_API_KEY` and `base_url` from `OPENAI_BASE_URL` when the config sets none.
    #[must_use]
    pub fn openai_settings(&self) -> OpenAiSettings {
        self.openai_settings_with_env(&process_env)
    }

    /// [`Config::openai_settings`] reading the environment through `env`.
    ///
    /// ```
    /// use agentkit_core::config::{Config, OpenAiSettings};
    ///
    /// let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-env".to_owned());
    /// let settings = Config::new().openai_settings_with_env(&env);
    /// assert_eq!(settings.api_key.as_deref(), Some("sk-env"));
    /// let config = Config::new().with_openai(OpenAiSettings::new().with_api_key("sk-file"));
    /// assert_eq!(config.openai_settings_with_env(&env).api_key.as_deref(), Some("sk-file"));
    /// ```
    #[must_use]
    pub fn openai_settings_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> OpenAiSettings {
        let mut s = self.openai.clone().unwrap_or_default();
        fallback(&mut s.api_key, env, "OPENAI_API_KEY");
        fallback(&mut s.base_url, env, "OPENAI_BASE_URL");
        s
    }

    /// The Anthropic settings with environment fallbacks applied: `api_key` from
    /// `ANTHROPIC_API_KEY` and `base_url` from `ANTHROPIC_BASE_URL` when the config sets none.
    #[must_use]
    pub fn anthropic_settings(&self) -> AnthropicSettings {
        self.anthropic_settings_with_env(&process_env)
    }

    /// [`Config::anthropic_settings`] reading the environment through `env`.
    #[must_use]
    pub fn anthropic_settings_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> AnthropicSettings {
        let mut s = self.anthropic.clone().unwrap_or_default();
        fallback(&mut s.api_key, env, "ANTHROPIC_API_KEY");
        fallback(&mut s.base_url, env, "ANTHROPIC_BASE_URL");
        s
    }

    /// The built-in [`PriceTable`] with this config's `prices` added (same id replaces).
    ///
    /// ```
    /// use agentkit_core::{Config, ModelInfo, Usage};
    ///
    /// let config = Config::new().with_price(ModelInfo::new("my-llama", "openai", 0.1, 0.2));
    /// let table = config.price_table();
    /// assert!(table.get("my-llama").is_some());
    /// assert!(table.get("gpt-5").is_some());
    /// ```
    #[must_use]
    pub fn price_table(&self) -> PriceTable {
        self.prices
            .iter()
            .cloned()
            .fold(PriceTable::default(), PriceTable::with_model)
    }
}

fn fallback(slot: &mut Option<String>, env: &dyn Fn(&str) -> Option<String>, var: &str) {
    if slot.as_deref().is_none_or(str::is_empty)
        && let Some(v) = env(var).filter(|v| !v.is_empty())
    {
        *slot = Some(v);
    }
}
