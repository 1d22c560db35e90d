//! Finding, reading, merging, substituting and validating config files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml_ng::Value;

use super::Config;
use super::compat;
use super::env::substitute_tree;
use super::locate::{KeyPath, Seg, humanize, locate, locate_prefix};
use crate::error::{Error, Result};

/// File names looked for in each directory, in order of preference.
const DISCOVERY: &[&str] = &[
    "agentkit.yaml",
    "agentkit.yml",
    "mcp_agent.config.yaml",
    "mcp_agent.config.yml",
    "mcp-agent.config.yaml",
    "mcp-agent.config.yml",
    ".mcp.json",
];

/// The dialect of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigFormat {
    /// agentkit's own `agentkit.yaml`: unknown keys are errors.
    Agentkit,
    /// mcp-agent's `mcp_agent.config.yaml`: keys agentkit does not use are ignored.
    McpAgent,
    /// `{"mcpServers": {...}}` JSON (Claude Desktop, Cursor, `.mcp.json`, VS Code's `servers`).
    McpServersJson,
}

impl ConfigFormat {
    /// The format a file name implies: `*.json` is `mcpServers` JSON, `mcp_agent.*.yaml` (or
    /// `mcp-agent.*`) is mcp-agent's, any other `*.yaml`/`*.yml` is agentkit's.
    ///
    /// ```
    /// use agentkit_core::config::ConfigFormat;
    /// use std::path::Path;
    ///
    /// assert_eq!(ConfigFormat::from_path(Path::new("a/agentkit.yaml")), Some(ConfigFormat::Agentkit));
    /// assert_eq!(ConfigFormat::from_path(Path::new("mcp_agent.config.yaml")), Some(ConfigFormat::McpAgent));
    /// assert_eq!(ConfigFormat::from_path(Path::new(".mcp.json")), Some(ConfigFormat::McpServersJson));
    /// assert_eq!(ConfigFormat::from_path(Path::new("notes.txt")), None);
    /// ```
    #[must_use]
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".json") {
            Some(Self::McpServersJson)
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            if name.starts_with("mcp_agent.") || name.starts_with("mcp-agent.") {
                Some(Self::McpAgent)
            } else {
                Some(Self::Agentkit)
            }
        } else {
            None
        }
    }
}

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Loads configuration, with control over where environment variables come from and where
/// discovery stops. [`Config::load`] and friends use `ConfigLoader::new()`.
///
/// ```
/// use agentkit_core::config::{ConfigFormat, ConfigLoader};
///
/// let loader = ConfigLoader::new().with_env(|name| (name == "TOKEN").then(|| "s3cret".to_owned()));
/// let config = loader.parse(
///     "mcp:\n  servers:\n    api:\n      url: https://mcp.example.com/mcp\n      bearer_token: ${TOKEN}\n",
///     ConfigFormat::Agentkit,
///     None,
/// )?;
/// assert_eq!(config.mcp.servers["api"].bearer_token.as_deref(), Some("s3cret"));
/// # Ok::<_, agentkit_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ConfigLoader {
    env: Arc<EnvFn>,
    ceiling: Option<PathBuf>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigLoader {
    /// A loader reading the process environment, searching up to the filesystem root.
    #[must_use]
    pub fn new() -> Self {
        Self {
            env: Arc::new(|name: &str| std::env::var(name).ok()),
            ceiling: None,
        }
    }

    /// Read `${VAR}` values from `lookup` instead of the process environment.
    #[must_use]
    pub fn with_env<F>(mut self, lookup: F) -> Self
    where
        F: Fn(&str) -> Option<String> + Send + Sync + 'static,
    {
        self.env = Arc::new(lookup);
        self
    }

    /// Stop discovery at `dir`: it is searched, its parents are not.
    #[must_use]
    pub fn with_ceiling(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ceiling = Some(dir.into());
        self
    }

    /// The config file discovery would load, starting at `start` and going up: in each
    /// directory `agentkit.yaml`/`.yml`, then `mcp_agent.config.yaml`/`.yml` (or
    /// `mcp-agent.config.*`), then `.mcp.json`; the first directory with any wins.
    #[must_use]
    pub fn find(&self, start: &Path) -> Option<PathBuf> {
        let start = absolute(start);
        let ceiling = self.ceiling.as_deref().map(absolute);
        for dir in start.ancestors() {
            if let Some(found) = DISCOVERY.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
                return Some(found);
            }
            if ceiling.as_deref() == Some(dir) {
                break;
            }
        }
        None
    }

    /// Discover from the current directory upward and load what is found; with no config
    /// file anywhere, [`Config::default`].
    pub fn load(&self) -> Result<Config> {
        let cwd = std::env::current_dir().map_err(|e| Error::Config {
            file: None,
            key: String::new(),
            message: format!("cannot read the current directory to look for agentkit.yaml: {e}"),
        })?;
        self.load_from_dir(cwd)
    }

    /// Discover from `dir` upward and load what is found; with no config file,
    /// [`Config::default`]. A file that exists but cannot be read or is invalid is an error.
    pub fn load_from_dir(&self, dir: impl AsRef<Path>) -> Result<Config> {
        match self.find(dir.as_ref()) {
            Some(path) => self.load_file(path),
            None => {
                tracing::debug!(dir = %dir.as_ref().display(), "no agentkit config file found; using defaults");
                Ok(Config::default())
            }
        }
    }

    /// Load one file, its format chosen by its name ([`ConfigFormat::from_path`]). For YAML,
    /// the secrets file next to it (`agentkit.secrets.yaml`, `mcp_agent.secrets.yaml`, or
    /// `<name>.secrets.yaml`) is deep-merged over it when it exists.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let format = ConfigFormat::from_path(path).ok_or_else(|| Error::Config {
            file: Some(path.to_path_buf()),
            key: String::new(),
            message: "unknown config file type; expected a .yaml, .yml or .json file".into(),
        })?;
        let mut sources = vec![Source::read(path, format)?];
        if format != ConfigFormat::McpServersJson
            && let Some(secrets) = secrets_path(path)
        {
            tracing::debug!(file = %secrets.display(), "merging secrets");
            sources.push(Source::read(&secrets, format)?);
        }
        tracing::debug!(file = %path.display(), ?format, "loading config");
        build(&sources, &*self.env)
    }

    /// Parse config text. `origin` names the file in errors and is the base of relative
    /// `cwd` paths; no secrets file is read.
    pub fn parse(&self, text: &str, format: ConfigFormat, origin: Option<&Path>) -> Result<Config> {
        parse_with(text, format, origin, &*self.env)
    }

    /// Parse `{"mcpServers": {...}}` JSON and add (or replace) its servers in `config`.
    pub fn merge_mcp_servers_json(
        &self,
        config: &mut Config,
        text: &str,
        origin: Option<&Path>,
    ) -> Result<()> {
        let other = self.parse(text, ConfigFormat::McpServersJson, origin)?;
        config.mcp.servers.extend(other.mcp.servers);
        Ok(())
    }
}

impl Config {
    /// Discover a config file from the current directory upward and load it (see
    /// [`ConfigLoader::find`] for the order). No file anywhere is not an error: the result is
    /// [`Config::default`], so programmatic configuration works without files.
    ///
    /// ```no_run
    /// let config = agentkit_core::Config::load()?;
    /// for (name, server) in &config.mcp.servers {
    ///     println!("{name}: {:?}", server.transport);
    /// }
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn load() -> Result<Self> {
        ConfigLoader::new().load()
    }

    /// Like [`Config::load`], starting at `dir` instead of the current directory.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("agentkit.yaml"), "openai:\n  default_model: gpt-5-mini\n")?;
    /// std::fs::create_dir(dir.path().join("src"))?;
    /// let config = agentkit_core::Config::load_from_dir(dir.path().join("src"))?;
    /// assert_eq!(config.openai.unwrap().default_model.as_deref(), Some("gpt-5-mini"));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        ConfigLoader::new().load_from_dir(dir)
    }

    /// Load one file (YAML or `mcpServers` JSON, by its name), merging its secrets file.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        ConfigLoader::new().load_file(path)
    }

    /// Parse YAML text with the process environment. If `origin` is named like
    /// `mcp_agent.config.yaml` the text is read as mcp-agent's format, otherwise as
    /// `agentkit.yaml`.
    ///
    /// ```
    /// use agentkit_core::{Config, McpTransport};
    ///
    /// let config = Config::from_yaml_str(
    ///     "mcp:\n  servers:\n    fetch:\n      command: uvx\n      args: [mcp-server-fetch]\n",
    ///     None,
    /// )?;
    /// assert_eq!(config.mcp.servers["fetch"].transport, McpTransport::Stdio);
    ///
    /// let err = Config::from_yaml_str("mpc: {}\n", None).unwrap_err();
    /// assert!(err.to_string().contains("did you mean `mcp`?"));
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn from_yaml_str(text: &str, origin: Option<&Path>) -> Result<Self> {
        Self::from_yaml_str_with_env(text, origin, &|name| std::env::var(name).ok())
    }

    /// [`Config::from_yaml_str`] with `${VAR}` values read from `env`.
    pub fn from_yaml_str_with_env(
        text: &str,
        origin: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let format = match origin.and_then(ConfigFormat::from_path) {
            Some(ConfigFormat::McpAgent) => ConfigFormat::McpAgent,
            _ => ConfigFormat::Agentkit,
        };
        parse_with(text, format, origin, env)
    }

    /// Parse `{"mcpServers": {...}}` JSON (Claude Desktop, Cursor, `.mcp.json`; VS Code's
    /// `{"servers": {...}}` too) into a config holding just those servers.
    ///
    /// ```
    /// use agentkit_core::{Config, McpTransport};
    ///
    /// let config = Config::from_mcp_servers_json(
    ///     r#"{"mcpServers": {
    ///         "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
    ///         "docs": {"type": "http", "url": "https://mcp.example.com/mcp"}
    ///     }}"#,
    ///     None,
    /// )?;
    /// assert_eq!(config.mcp.servers["files"].transport, McpTransport::Stdio);
    /// assert_eq!(config.mcp.servers["docs"].transport, McpTransport::StreamableHttp);
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn from_mcp_servers_json(text: &str, origin: Option<&Path>) -> Result<Self> {
        ConfigLoader::new().parse(text, ConfigFormat::McpServersJson, origin)
    }

    /// Add (or replace) the servers of an `mcpServers` JSON text, e.g. a project's `.mcp.json`
    /// on top of an `agentkit.yaml`.
    ///
    /// ```
    /// use agentkit_core::Config;
    ///
    /// let mut config = Config::from_yaml_str("mcp:\n  servers:\n    a: {command: a-server}\n", None)?;
    /// config.merge_mcp_servers_json(r#"{"mcpServers": {"b": {"url": "http://127.0.0.1:9/mcp"}}}"#, None)?;
    /// assert_eq!(config.mcp.servers.keys().collect::<Vec<_>>(), ["a", "b"]);
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn merge_mcp_servers_json(&mut self, text: &str, origin: Option<&Path>) -> Result<()> {
        ConfigLoader::new().merge_mcp_servers_json(self, text, origin)
    }
}

/// The 1-based line and column of the value at `key` (written like `agents.billing.servers[1]`
/// — the `key` of an [`Error::Config`]) in a YAML or JSON config text, or of the longest
/// prefix of it that exists; `None` when not even the first key is there.
///
/// Code that checks a config further than the loader (the server compiles cron expressions and
/// tool globs) uses it to point at the offending line.
///
/// ```
/// let text = "agents:\n  billing:\n    servers: [a, b]\n";
/// assert_eq!(agentkit_core::config::locate_key(text, "agents.billing.servers[1]"), Some((3, 18)));
/// assert_eq!(agentkit_core::config::locate_key(text, "agents.billing.model"), Some((3, 5)));
/// assert_eq!(agentkit_core::config::locate_key(text, "workflows"), None);
/// ```
#[must_use]
pub fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    locate_prefix(text, &KeyPath::root().key_path(key))
}

fn parse_with(
    text: &str,
    format: ConfigFormat,
    origin: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let source = Source {
        path: origin.map(Path::to_path_buf),
        text: text.to_owned(),
        format,
    };
    build(std::slice::from_ref(&source), env)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The secrets file next to `path`, if one exists.
fn secrets_path(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))?;
    let stem = stem.strip_suffix(".config").unwrap_or(stem);
    let mut stems = vec![stem.to_owned()];
    // mcp-agent accepts both spellings.
    if stem == "mcp_agent" || stem == "mcp-agent" {
        stems = vec!["mcp_agent".to_owned(), "mcp-agent".to_owned()];
    }
    stems
        .iter()
        .flat_map(|s| [format!("{s}.secrets.yaml"), format!("{s}.secrets.yml")])
        .map(|n| dir.join(n))
        .find(|p| p.is_file() && p != path)
}

/// One input text: the main file, or the secrets file merged over it.
struct Source {
    path: Option<PathBuf>,
    text: String,
    format: ConfigFormat,
}

impl Source {
    fn read(path: &Path, format: ConfigFormat) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: Some(path.to_path_buf()),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            text,
            format,
        })
    }

    fn error(&self, message: String) -> Error {
        Error::Config {
            file: self.path.clone(),
            key: String::new(),
            message,
        }
    }

    /// Parses the text into a tree; an empty file is an empty map.
    fn tree(&self) -> Result<Value> {
        let tree = match self.format {
            ConfigFormat::McpServersJson => {
                strict_json(&self.text).map_err(|e| self.error(format!("invalid JSON: {e}")))?
            }
            ConfigFormat::Agentkit | ConfigFormat::McpAgent => serde_yaml_ng::from_str(&self.text)
                .map_err(|e| self.error(format!("invalid YAML: {e}")))?,
        };
        let mut tree = tree;
        // `<<: *anchor` merge keys, so shared settings can be written once.
        tree.apply_merge()
            .map_err(|e| self.error(format!("invalid YAML merge key (`<<`): {e}")))?;
        match tree {
            Value::Null => Ok(Value::Mapping(Default::default())),
            Value::Mapping(_) => Ok(tree),
            _ => Err(self.error(
                "expected a map of settings at the top level (e.g. `mcp:`, `openai:`)".into(),
            )),
        }
    }

    /// How `key` (a path in agentkit's tree) is spelled in this file.
    fn spellings(&self, key: &KeyPath) -> Vec<KeyPath> {
        let servers = [Seg::Key("mcp".into()), Seg::Key("servers".into())];
        if self.format == ConfigFormat::McpServersJson && key.0.starts_with(&servers) {
            let rest = &key.0[2..];
            ["mcpServers", "servers"]
                .iter()
                .map(|top| {
                    let mut segs = vec![Seg::Key((*top).to_owned())];
                    segs.extend_from_slice(rest);
                    KeyPath(segs)
                })
                .collect()
        } else {
            vec![key.clone()]
        }
    }
}

/// Parses JSON into a config tree, rejecting duplicate keys (serde_json would keep the last
/// one silently, while YAML rejects them).
fn strict_json(text: &str) -> std::result::Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Builds a [`Value`] from any self-describing format, failing on a duplicate map key.
#[derive(Clone, Copy)]
struct StrictValue;

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = serde_yaml_ng::Mapping::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(key.as_str()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}`; each key may appear once in an object"
                )));
            }
            let v = map.next_value_seed(self)?;
            out.insert(Value::String(key), v);
        }
        Ok(Value::Mapping(out))
    }
}

/// Turns a failure at `key` into an [`Error::Config`] naming the file the value came from (the
/// secrets file wins where it has the key), the key as spelled there, and its line and column.
fn fail(sources: &[Source], (key, message): (KeyPath, String)) -> Error {
    let Some(main) = sources.first() else {
        return Error::Config {
            file: None,
            key: key.to_string(),
            message,
        };
    };
    let mut file = main.path.clone();
    let mut shown = main.spellings(&key).swap_remove(0);
    let mut at = None;
    if !key.is_empty() {
        'found: for src in sources.iter().rev() {
            for spelled in src.spellings(&key) {
                if let Some(loc) = locate(&src.text, &spelled) {
                    (file, shown, at) = (src.path.clone(), spelled, Some(loc));
                    break 'found;
                }
            }
        }
        if at.is_none() {
            at = main
                .spellings(&key)
                .into_iter()
                .find_map(|s| locate_prefix(&main.text, &s).map(|loc| (s, loc)))
                .map(|(s, loc)| {
                    shown = s;
                    loc
                });
        }
    }
    let message = match at {
        Some((line, column)) => format!("{message} (line {line}, column {column})"),
        None => message,
    };
    Error::Config {
        file,
        key: shown.to_string(),
        message,
    }
}

fn build(sources: &[Source], env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let Some(main) = sources.first() else {
        return Ok(Config::default());
    };
    let mut tree = main.tree()?;
    for over in &sources[1..] {
        compat::deep_merge(&mut tree, over.tree()?);
    }
    match main.format {
        ConfigFormat::Agentkit => compat::strip_extensions(&mut tree),
        ConfigFormat::McpAgent => {
            compat::from_mcp_agent(&mut tree).map_err(|f| fail(sources, f))?
        }
        ConfigFormat::McpServersJson => {
            tree = compat::from_mcp_servers_json(tree).map_err(|f| fail(sources, f))?;
        }
    }
    let whole = substitute_tree(&mut tree, env).map_err(|f| fail(sources, f))?;
    compat::normalize_transports(&mut tree).map_err(|f| fail(sources, f))?;
    let mut config = typed(tree, &whole).map_err(|f| fail(sources, f))?;
    if let Some(dir) = main.path.as_deref().and_then(Path::parent) {
        for server in config.mcp.servers.values_mut() {
            if let Some(cwd) = server.cwd.as_mut().filter(|c| c.is_relative()) {
                *cwd = dir.join(&*cwd);
            }
        }
    }
    config.check().map_err(|f| fail(sources, f))?;
    Ok(config)
}

/// Deserialises the tree. A string that was one whole `${VAR}` and sits where a number or
/// boolean is expected is read as that number or boolean.
fn typed(mut tree: Value, whole: &[KeyPath]) -> Result<Config, (KeyPath, String)> {
    loop {
        let err = match serde_path_to_error::deserialize::<_, Config>(tree.clone()) {
            Ok(config) => return Ok(config),
            Err(err) => err,
        };
        let path = KeyPath::from_serde(err.path());
        if whole.contains(&path)
            && let Some(node) = path.get_mut(&mut tree)
            && let Some(v) = node
                .as_str()
                .and_then(|s| serde_yaml_ng::from_str::<Value>(s).ok())
                .filter(|v| v.is_number() || v.is_bool())
        {
            *node = v;
            continue;
        }
        return Err((path, humanize(&err.into_inner().to_string())));
    }
}
