#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Configuration loading as a user meets it: files found from a subdirectory, secrets merged,
//! `${VAR}` substituted, mcp-agent and `mcpServers` JSON files read unchanged, and errors that
//! say which file, which key and what was expected.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use agentkit_core::config::{
    AnthropicSettings, Config, ConfigFormat, ConfigLoader, LoggerSettings, McpRoot,
    McpServerConfig, McpTransport, OpenAiSettings, OtelSettings, StorageSettings,
};
use agentkit_core::{Error, ModelInfo};

/// A loader whose environment is exactly `vars` (never the machine's), and which never looks
/// above `ceiling`.
fn loader(ceiling: &Path, vars: &[(&str, &str)]) -> ConfigLoader {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ConfigLoader::new()
        .with_env(move |name| vars.get(name).cloned())
        .with_ceiling(ceiling)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

/// (file, key, message) of a config error.
fn config_error(err: Error) -> (Option<PathBuf>, String, String) {
    match err {
        Error::Config { file, key, message } => (file, key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn discovery_walks_up_from_a_nested_subdirectory() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "agentkit.yaml",
        "openai:\n  default_model: gpt-5-mini\n",
    );
    // Same directory: agentkit.yaml is preferred over mcp-agent's file.
    write(
        root.path(),
        "mcp_agent.config.yaml",
        "openai:\n  default_model: from-mcp-agent\n",
    );
    let deep = root.path().join("crates/app/src");
    fs::create_dir_all(&deep).unwrap();

    let l = loader(root.path(), &[]);
    assert_eq!(l.find(&deep).unwrap().file_name().unwrap(), "agentkit.yaml");
    let config = l.load_from_dir(&deep).unwrap();
    assert_eq!(
        config.openai.unwrap().default_model.as_deref(),
        Some("gpt-5-mini")
    );

    // A nearer directory with any config file wins, even a .mcp.json.
    write(
        &root.path().join("crates/app"),
        ".mcp.json",
        r#"{"mcpServers": {"near": {"command": "near-server"}}}"#,
    );
    let config = l.load_from_dir(&deep).unwrap();
    assert!(config.openai.is_none());
    assert_eq!(
        config.mcp.servers["near"].command.as_deref(),
        Some("near-server")
    );
}

#[test]
fn no_config_file_is_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    let l = loader(root.path(), &[]);
    assert_eq!(l.find(root.path()), None);
    assert_eq!(l.load_from_dir(root.path()).unwrap(), Config::default());
}

#[test]
fn an_invalid_discovered_file_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let path = write(root.path(), "agentkit.yml", "mcp:\n  servers: [oops\n");
    let err = loader(root.path(), &[])
        .load_from_dir(root.path())
        .unwrap_err();
    let text = err.to_string();
    let (file, _, message) = config_error(err);
    assert_eq!(file.as_deref(), Some(path.as_path()));
    assert!(message.starts_with("invalid YAML"), "{text}");
    assert!(text.contains("line"), "{text}");
}

#[test]
fn secrets_file_is_deep_merged_over_the_main_file() {
    let root = tempfile::tempdir().unwrap();
    let main = write(
        root.path(),
        "agentkit.yaml",
        "openai:\n  default_model: gpt-5\n  headers: {X-Team: agents}\n\
         mcp:\n  servers:\n    github:\n      url: https://api.example.com/mcp\n      \
         denied_tools: [delete_repo, push]\n",
    );
    write(
        root.path(),
        "agentkit.secrets.yaml",
        "openai:\n  api_key: sk-secret\n  headers: {X-Key: k}\n\
         mcp:\n  servers:\n    github:\n      bearer_token: ghp_secret\n      \
         denied_tools: [delete_repo]\n",
    );
    let config = loader(root.path(), &[]).load_file(&main).unwrap();
    let openai = config.openai.unwrap();
    assert_eq!(openai.api_key.as_deref(), Some("sk-secret"));
    assert_eq!(openai.default_model.as_deref(), Some("gpt-5"));
    // Maps merge key by key.
    assert_eq!(openai.headers.len(), 2);
    let github = &config.mcp.servers["github"];
    assert_eq!(github.url.as_deref(), Some("https://api.example.com/mcp"));
    assert_eq!(github.bearer_token.as_deref(), Some("ghp_secret"));
    assert_eq!(github.transport, McpTransport::StreamableHttp);
    // Lists from the secrets file replace the main file's.
    assert_eq!(github.denied_tools, ["delete_repo"]);
}

#[test]
fn env_vars_defaults_and_escapes_are_substituted() {
    let root = tempfile::tempdir().unwrap();
    let config = loader(root.path(), &[("HOME", "/home/me"), ("TIMEOUT", "45")])
        .parse(
            "mcp:\n  servers:\n    files:\n      command: npx\n      \
             args: [\"${HOME}/projects\", \"--mode=${MODE:-read}\", \"$${NOT_A_VAR}\"]\n      \
             request_timeout_seconds: ${TIMEOUT}\n      \
             connect_timeout_seconds: ${CONNECT_TIMEOUT:-2.5}\n      \
             description: \"costs $5\"\n\
             otel:\n  enabled: ${OTEL_ON:-true}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap();
    let files = &config.mcp.servers["files"];
    assert_eq!(
        files.args,
        ["/home/me/projects", "--mode=read", "${NOT_A_VAR}"]
    );
    // A whole `${...}` value fills number and boolean fields.
    assert_eq!(files.request_timeout_seconds, Some(45.0));
    assert_eq!(files.connect_timeout_seconds, Some(2.5));
    assert!(config.otel.enabled);
    assert_eq!(files.description.as_deref(), Some("costs $5"));
}

#[test]
fn missing_env_var_error_names_file_key_and_variable() {
    let root = tempfile::tempdir().unwrap();
    let path = write(
        root.path(),
        "agentkit.yaml",
        "mcp:\n  servers:\n    github:\n      url: https://api.example.com/mcp\n      \
         headers:\n        Authorization: Bearer ${GITHUB_TOKEN}\n",
    );
    let err = loader(root.path(), &[]).load_file(&path).unwrap_err();
    let text = err.to_string();
    let (file, key, message) = config_error(err);
    assert_eq!(file.as_deref(), Some(path.as_path()));
    assert_eq!(key, "mcp.servers.github.headers.Authorization");
    assert!(message.contains("`GITHUB_TOKEN` is not set"), "{text}");
    assert!(message.contains("line 6"), "{text}");
}

const MCP_AGENT_CONFIG: &str = r#"$schema: ../../schema/mcp-agent.config.schema.json

execution_engine: asyncio
logger:
  transports: [console, file]
  level: warning
  progress_display: true
  path_settings:
    path_pattern: "logs/mcp-agent-{unique_id}.jsonl"
    unique_id: "timestamp"

usage_telemetry:
  enabled: false

mcp:
  servers:
    fetch:
      command: "uvx"
      args: ["mcp-server-fetch"]
      description: "Fetch content at URLs from the world wide web"
    filesystem:
      command: "npx"
      args: ["-y", "@modelcontextprotocol/server-filesystem", "."]
      read_timeout_seconds: 30
      roots:
        - uri: "file:///home/me/data"
          name: "data"
          server_uri_alias: "file:///data"
    remote:
      transport: streamable_http
      url: "https://mcp.example.com/mcp"
      http_timeout_seconds: 20
      terminate_on_close: true
      allowed_tools: [search]

openai:
  default_model: gpt-4o-mini
  reasoning_effort: medium

anthropic:
  default_model: claude-sonnet-4-5
  provider: anthropic

otel:
  enabled: true
  exporters: [otlp]
  service_name: research-agent
  otlp_settings:
    endpoint: http://127.0.0.1:4318/v1/traces

temporal:
  host: localhost:7233
  task_queue: agents

agents:
  search_paths: [".claude/agents"]
"#;

const MCP_AGENT_SECRETS: &str = r#"openai:
  api_key: sk-from-secrets
anthropic:
  api_key: sk-ant-from-secrets
mcp:
  servers:
    remote:
      auth:
        api_key: remote-token
"#;

#[test]
fn mcp_agent_config_and_secrets_load_unchanged() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "mcp_agent.config.yaml", MCP_AGENT_CONFIG);
    write(root.path(), "mcp_agent.secrets.yaml", MCP_AGENT_SECRETS);
    let sub = root.path().join("src");
    fs::create_dir_all(&sub).unwrap();

    let config = loader(root.path(), &[]).load_from_dir(&sub).unwrap();

    let openai = config.openai.as_ref().unwrap();
    assert_eq!(openai.default_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(openai.api_key.as_deref(), Some("sk-from-secrets"));
    let anthropic = config.anthropic.as_ref().unwrap();
    assert_eq!(anthropic.api_key.as_deref(), Some("sk-ant-from-secrets"));
    assert_eq!(config.logger.level.as_deref(), Some("warn"));
    assert!(config.otel.enabled);
    assert_eq!(
        config.otel.endpoint.as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(config.otel.service_name.as_deref(), Some("research-agent"));

    let fetch = &config.mcp.servers["fetch"];
    assert_eq!(fetch.transport, McpTransport::Stdio);
    assert_eq!(fetch.command.as_deref(), Some("uvx"));
    assert_eq!(fetch.args, ["mcp-server-fetch"]);

    let fs_server = &config.mcp.servers["filesystem"];
    assert_eq!(fs_server.request_timeout_seconds, Some(30.0));
    assert_eq!(
        fs_server.roots,
        [McpRoot::new("file:///home/me/data")
            .with_name("data")
            .with_server_uri_alias("file:///data")]
    );

    let remote = &config.mcp.servers["remote"];
    assert_eq!(remote.transport, McpTransport::StreamableHttp);
    assert_eq!(remote.bearer_token.as_deref(), Some("remote-token"));
    assert_eq!(remote.request_timeout_seconds, Some(20.0));
    assert_eq!(
        remote.allowed_tools.as_deref(),
        Some(&["search".to_owned()][..])
    );
}

#[test]
fn mcp_agent_websocket_server_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let path = write(
        root.path(),
        "mcp_agent.config.yaml",
        "mcp:\n  servers:\n    live:\n      transport: websocket\n      url: ws://127.0.0.1:9000\n",
    );
    let (file, key, message) = config_error(loader(root.path(), &[]).load_file(&path).unwrap_err());
    assert_eq!(file.as_deref(), Some(path.as_path()));
    assert_eq!(key, "mcp.servers.live.transport");
    assert!(message.contains("`live`"), "{message}");
    assert!(message.contains("websocket"), "{message}");
}

#[test]
fn claude_desktop_config_json() {
    let root = tempfile::tempdir().unwrap();
    let path = write(
        root.path(),
        "claude_desktop_config.json",
        r#"{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"]
    },
    "github": {
      "command": "docker",
      "args": ["run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "ghcr.io/github/github-mcp-server"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GH_TOKEN}"}
    },
    "old": {"command": "old-server", "disabled": true}
  }
}"#,
    );
    let config = loader(root.path(), &[("GH_TOKEN", "ghp_x")])
        .load_file(&path)
        .unwrap();
    assert_eq!(
        config.mcp.servers.keys().collect::<Vec<_>>(),
        ["filesystem", "github"]
    );
    let github = &config.mcp.servers["github"];
    assert_eq!(github.transport, McpTransport::Stdio);
    assert_eq!(github.env["GITHUB_PERSONAL_ACCESS_TOKEN"], "ghp_x");
    assert_eq!(
        config.mcp.servers["filesystem"].args[2],
        "/Users/me/Desktop"
    );
}

#[test]
fn dot_mcp_json_with_http_and_stdio_servers_merges_over_yaml() {
    let root = tempfile::tempdir().unwrap();
    let l = loader(root.path(), &[("DOCS_KEY", "k1")]);
    let json = r#"{
  "mcpServers": {
    "docs": {"type": "http", "url": "https://mcp.example.com/mcp", "headers": {"X-Key": "${DOCS_KEY}"}},
    "events": {"type": "sse", "url": "http://127.0.0.1:8931/sse"},
    "inferred": {"url": "http://127.0.0.1:8080/mcp"},
    "local": {"command": "python", "args": ["server.py"], "cwd": "tools"}
  }
}"#;
    let path = write(root.path(), ".mcp.json", json);
    let from_file = l.load_file(&path).unwrap();
    let servers = &from_file.mcp.servers;
    assert_eq!(servers["docs"].transport, McpTransport::StreamableHttp);
    assert_eq!(servers["docs"].headers["X-Key"], "k1");
    assert_eq!(servers["events"].transport, McpTransport::Sse);
    assert_eq!(servers["inferred"].transport, McpTransport::StreamableHttp);
    assert_eq!(servers["local"].transport, McpTransport::Stdio);
    // A relative cwd is relative to the file that says it.
    assert_eq!(
        servers["local"].cwd.as_deref(),
        Some(root.path().join("tools").as_path())
    );

    // On top of an agentkit.yaml: JSON servers are added, same names replaced.
    let mut config = l
        .parse(
            "mcp:\n  servers:\n    docs: {command: old-docs}\n    keep: {command: keep}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap();
    l.merge_mcp_servers_json(&mut config, json, Some(&path))
        .unwrap();
    assert_eq!(config.mcp.servers.len(), 5);
    assert_eq!(config.mcp.servers["keep"].command.as_deref(), Some("keep"));
    assert_eq!(
        config.mcp.servers["docs"].url.as_deref(),
        Some("https://mcp.example.com/mcp")
    );

    // VS Code spells the key `servers`.
    let vscode = l
        .parse(
            r#"{"servers": {"gh": {"type": "http", "url": "https://api.example.com/mcp"}}, "inputs": []}"#,
            ConfigFormat::McpServersJson,
            None,
        )
        .unwrap();
    assert_eq!(
        vscode.mcp.servers["gh"].transport,
        McpTransport::StreamableHttp
    );
}

#[test]
fn wrong_type_deep_inside_names_file_dotted_key_and_expectation() {
    let root = tempfile::tempdir().unwrap();
    let path = write(
        root.path(),
        "agentkit.yaml",
        "mcp:\n  servers:\n    github:\n      command: gh-mcp\n      args:\n        - serve\n        - {verbose: true}\n",
    );
    let err = loader(root.path(), &[]).load_file(&path).unwrap_err();
    let text = err.to_string();
    let (file, key, message) = config_error(err);
    assert_eq!(file.as_deref(), Some(path.as_path()));
    assert_eq!(key, "mcp.servers.github.args[1]");
    assert!(
        message.starts_with("expected a string, found a map"),
        "{text}"
    );
    assert!(message.contains("line 7, column 11"), "{text}");

    // Same in JSON: the key is spelled as in the file.
    let json = write(
        root.path(),
        "servers.json",
        r#"{"mcpServers": {"x": {"command": "x", "args": {"a": 1}}}}"#,
    );
    let (file, key, message) = config_error(loader(root.path(), &[]).load_file(&json).unwrap_err());
    assert_eq!(file.as_deref(), Some(json.as_path()));
    assert_eq!(key, "mcpServers.x.args");
    assert!(
        message.starts_with("expected a list, found a map"),
        "{message}"
    );
}

#[test]
fn a_bad_value_in_the_secrets_file_names_the_secrets_file() {
    let root = tempfile::tempdir().unwrap();
    let main = write(
        root.path(),
        "agentkit.yaml",
        "openai:\n  default_model: gpt-5\n",
    );
    let secrets = write(
        root.path(),
        "agentkit.secrets.yaml",
        "openai:\n  max_retries: lots\n",
    );
    let (file, key, message) = config_error(loader(root.path(), &[]).load_file(&main).unwrap_err());
    assert_eq!(file.as_deref(), Some(secrets.as_path()));
    assert_eq!(key, "openai.max_retries");
    assert!(
        message.starts_with("expected a whole number (0 or more), found the string \"lots\""),
        "{message}"
    );
}

#[test]
fn unknown_key_in_agentkit_yaml_is_named_with_the_valid_ones() {
    let root = tempfile::tempdir().unwrap();
    let path = write(
        root.path(),
        "agentkit.yaml",
        "mcp:\n  servers:\n    fetch:\n      comand: uvx\n      url: http://127.0.0.1:1/mcp\n",
    );
    let err = loader(root.path(), &[]).load_file(&path).unwrap_err();
    let text = err.to_string();
    let (_, key, message) = config_error(err);
    assert_eq!(key, "mcp.servers.fetch.comand");
    assert!(message.contains("unknown key `comand`"), "{text}");
    assert!(message.contains("did you mean `command`?"), "{text}");
    assert!(message.contains("url"), "valid keys are listed: {text}");

    let (_, key, message) = config_error(
        loader(root.path(), &[])
            .parse("opanai:\n  api_key: x\n", ConfigFormat::Agentkit, None)
            .unwrap_err(),
    );
    assert_eq!(key, "opanai");
    assert!(message.contains("did you mean `openai`?"), "{message}");
}

#[test]
fn transport_must_be_inferable() {
    let l = loader(Path::new("/"), &[]);
    let (_, key, message) = config_error(
        l.parse(
            "mcp:\n  servers:\n    odd: {description: nothing to start}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap_err(),
    );
    assert_eq!(key, "mcp.servers.odd");
    assert!(message.contains("neither `command`"), "{message}");
    let (_, _, message) = config_error(
        l.parse(
            "mcp:\n  servers:\n    both: {command: x, url: http://127.0.0.1:1/mcp}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap_err(),
    );
    assert!(message.contains("`both` has both"), "{message}");
}

#[test]
fn roles_resolve_to_a_deduplicated_union() {
    let root = tempfile::tempdir().unwrap();
    let config = loader(root.path(), &[])
        .parse(
            "mcp:\n  servers:\n    core: {command: core}\n    issues: {command: issues}\n    \
             docs: {url: http://127.0.0.1:1/mcp}\n  roles:\n    dev: [core, issues]\n    \
             writer: [docs, core]\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap();
    assert_eq!(
        config
            .resolve_servers(&["dev", "writer"], &["issues"])
            .unwrap(),
        ["core", "issues", "docs"]
    );
    assert_eq!(config.resolve_servers(&[], &["docs"]).unwrap(), ["docs"]);

    let err = config
        .resolve_servers(&["ops"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown role `ops`"), "{err}");
    assert!(err.contains("`dev`, `writer`"), "{err}");
    let err = config
        .resolve_servers(&[], &["jira"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown MCP server `jira`"), "{err}");
    assert!(err.contains("`core`, `docs`, `issues`"), "{err}");

    // A role naming a server that does not exist is caught at load time.
    let (_, key, message) = config_error(
        loader(root.path(), &[])
            .parse(
                "mcp:\n  servers:\n    core: {command: core}\n  roles:\n    dev: [core, jira]\n",
                ConfigFormat::Agentkit,
                None,
            )
            .unwrap_err(),
    );
    assert_eq!(key, "mcp.roles.dev[1]");
    assert!(message.contains("unknown MCP server `jira`"), "{message}");
}

#[test]
fn provider_settings_fall_back_to_standard_env_vars() {
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-env".to_owned()),
        "OPENAI_BASE_URL" => Some("http://127.0.0.1:11434/v1".to_owned()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-env".to_owned()),
        _ => None,
    };
    let config = Config::new().with_anthropic(AnthropicSettings::new().with_api_key("sk-ant-file"));
    let openai = config.openai_settings_with_env(&env);
    assert_eq!(openai.api_key.as_deref(), Some("sk-env"));
    assert_eq!(
        openai.base_url.as_deref(),
        Some("http://127.0.0.1:11434/v1")
    );
    let anthropic = config.anthropic_settings_with_env(&env);
    assert_eq!(anthropic.api_key.as_deref(), Some("sk-ant-file"));
    assert_eq!(anthropic.base_url, None);
}

#[test]
fn prices_from_config_extend_the_builtin_table() {
    let config = Config::from_yaml_str_with_env(
        "prices:\n  - {id: local-llama, provider: openai, input_per_mtok: 0.0, output_per_mtok: 0.0, \
         cache_read_per_mtok: 0.0, cache_write_per_mtok: 0.0, speed: 0.9, intelligence: 0.3}\n  \
         - {id: gpt-5, provider: openai, input_per_mtok: 9.0, output_per_mtok: 9.0, \
         cache_read_per_mtok: 9.0, cache_write_per_mtok: 9.0, speed: 0.5, intelligence: 0.9}\n",
        None,
        &|_| None,
    )
    .unwrap();
    let table = config.price_table();
    assert!(table.get("local-llama").is_some());
    assert_eq!(table.get("gpt-5").unwrap().input_per_mtok, 9.0);
    assert!(table.get("claude-sonnet-4-5").is_some());
}

#[test]
fn programmatic_config_round_trips_through_yaml_and_json() {
    let config = Config::new()
        .with_openai(
            OpenAiSettings::new()
                .with_base_url("http://127.0.0.1:11434/v1")
                .with_default_model("llama3.2")
                .with_query("api-version", "2024-10-21")
                .with_timeout_seconds(30.0),
        )
        .with_anthropic(AnthropicSettings::new().with_version("2023-06-01"))
        .with_server(
            "files",
            McpServerConfig::stdio("npx")
                .with_args(["-y", "@modelcontextprotocol/server-filesystem"])
                .with_env("DEBUG", "1")
                .with_cwd("/srv")
                .with_root(McpRoot::new("file:///srv").with_name("srv"))
                .with_denied_tools(["write_file"]),
        )
        .with_server(
            "docs",
            McpServerConfig::streamable_http("https://mcp.example.com/mcp")
                .with_bearer_token("t")
                .with_header("X-Team", "a")
                .with_allowed_tools(["search"])
                .with_request_timeout_seconds(12.5)
                .with_max_concurrency(4),
        )
        .with_server("events", McpServerConfig::sse("http://127.0.0.1:8931/sse"))
        .with_role("dev", ["files", "docs"])
        .with_logger(
            LoggerSettings::new()
                .with_level("agentkit=debug")
                .with_format("json"),
        )
        .with_otel(
            OtelSettings::new()
                .with_enabled(true)
                .with_service_name("svc"),
        )
        .with_storage(StorageSettings::new().with_url("sqlite://runs.db"))
        .with_price(ModelInfo::new("local", "openai", 0.0, 0.0));
    config.validate().unwrap();

    let yaml = serde_yaml_ng::to_string(&config).unwrap();
    let back = Config::from_yaml_str_with_env(&yaml, None, &|_| None).unwrap();
    assert_eq!(back, config);

    let json = serde_json::to_string(&config).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);

    let empty: Config = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, Config::default());
}

#[test]
fn yaml_anchors_and_merge_keys_share_server_settings() {
    // `x-*` top-level keys are ignored, so they can hold anchors (as in Docker Compose).
    let config = loader(Path::new("/"), &[])
        .parse(
            "x-http: &http\n  request_timeout_seconds: 15\n  headers: {X-Team: agents}\n\
             mcp:\n  servers:\n    a:\n      <<: *http\n      url: http://127.0.0.1:1/mcp\n    \
             b:\n      <<: *http\n      url: http://127.0.0.1:2/mcp\n      request_timeout_seconds: 5\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap();
    let (a, b) = (&config.mcp.servers["a"], &config.mcp.servers["b"]);
    assert_eq!(a.request_timeout_seconds, Some(15.0));
    assert_eq!(a.headers["X-Team"], "agents");
    assert_eq!(a.transport, McpTransport::StreamableHttp);
    assert_eq!(b.request_timeout_seconds, Some(5.0));
    assert_eq!(b.url.as_deref(), Some("http://127.0.0.1:2/mcp"));
}

/// Every file format a user may write the same mistake in.
const FORMATS: &[(ConfigFormat, &str)] = &[
    (ConfigFormat::Agentkit, "agentkit.yaml"),
    (ConfigFormat::McpAgent, "mcp_agent.config.yaml"),
    (ConfigFormat::McpServersJson, ".mcp.json"),
];

/// One server `s` with these extra settings, written in `format`.
fn one_server(format: ConfigFormat, settings: &str) -> String {
    match format {
        ConfigFormat::McpServersJson => format!(r#"{{"mcpServers": {{"s": {{{settings}}}}}}}"#),
        _ => {
            let yaml = settings.replace('"', "");
            format!("mcp:\n  servers:\n    s: {{{yaml}}}\n")
        }
    }
}

#[test]
fn timeouts_out_of_range_are_located_errors_in_every_format() {
    let l = ConfigLoader::new().with_env(|_| None);
    for &(format, file) in FORMATS {
        for (key, value) in [
            ("request_timeout_seconds", "1e20"),
            ("connect_timeout_seconds", "1e300"),
            ("request_timeout_seconds", "-5"),
            ("connect_timeout_seconds", "0"),
            ("timeout", "1e300"),
        ] {
            if key == "timeout" && format != ConfigFormat::McpServersJson {
                continue;
            }
            let text = one_server(format, &format!(r#""command": "x", "{key}": {value}"#));
            let err = l
                .parse(&text, format, Some(Path::new(file)))
                .expect_err(&format!("{file}: {key}: {value} must be rejected"));
            let (_, k, message) = config_error(err);
            assert!(
                k.ends_with("_seconds") || k.ends_with("timeout"),
                "{file}: {k}"
            );
            assert!(k.contains(".s."), "{file}: the key names the server: {k}");
            assert!(
                message.contains("greater than 0") && message.contains("(line "),
                "{file}: {message}"
            );
        }
    }
    // In range: accepted and exact.
    let c = l
        .parse(
            &one_server(
                ConfigFormat::McpServersJson,
                r#""command": "x", "timeout": 2.5"#,
            ),
            ConfigFormat::McpServersJson,
            None,
        )
        .unwrap();
    let s = &c.mcp.servers["s"];
    assert_eq!(
        s.request_timeout().unwrap(),
        Some(std::time::Duration::from_millis(2500))
    );
}

#[test]
fn zero_max_concurrency_and_bad_provider_timeouts_are_errors() {
    let l = ConfigLoader::new().with_env(|_| None);
    let err = l
        .parse(
            "mcp:\n  servers:\n    s: {command: x, max_concurrency: 0}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap_err();
    let (_, key, message) = config_error(err);
    assert_eq!(key, "mcp.servers.s.max_concurrency");
    assert!(message.contains("at least 1"), "{message}");
    let err = l
        .parse(
            "openai:\n  timeout_seconds: 1e20\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap_err();
    assert_eq!(config_error(err).1, "openai.timeout_seconds");
}

#[test]
fn a_typo_of_a_server_key_is_named_with_a_suggestion_in_every_format() {
    let l = ConfigLoader::new().with_env(|_| None);
    for &(format, file) in FORMATS {
        let text = one_server(format, r#""comand": "npx", "args": ["-y", "x"]"#);
        let err = l.parse(&text, format, Some(Path::new(file))).unwrap_err();
        let (_, key, message) = config_error(err);
        assert!(key.ends_with("s.comand"), "{file}: {key}");
        assert!(
            message.contains("`comand`") && message.contains("did you mean `command`?"),
            "{file}: {message}"
        );
    }
    // Keys other tools write are not typos.
    let c = l
        .parse(
            r#"{"mcpServers": {"s": {"command": "x", "trust": true, "disabled": false, "autoApprove": []}}}"#,
            ConfigFormat::McpServersJson,
            None,
        )
        .unwrap();
    assert_eq!(c.mcp.servers["s"].command.as_deref(), Some("x"));
}

#[test]
fn a_duplicate_server_key_is_an_error_in_json_as_in_yaml() {
    let l = ConfigLoader::new().with_env(|_| None);
    let err = l
        .parse(
            r#"{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}"#,
            ConfigFormat::McpServersJson,
            Some(Path::new(".mcp.json")),
        )
        .unwrap_err();
    let (file, _, message) = config_error(err);
    assert_eq!(file.as_deref(), Some(Path::new(".mcp.json")));
    assert!(message.contains("duplicate key `a`"), "{message}");
    assert!(message.contains("line 1"), "{message}");
    let err = l
        .parse(
            "mcp:\n  servers:\n    a: {command: x}\n    a: {command: y}\n",
            ConfigFormat::Agentkit,
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
}

#[test]
fn mcp_servers_json_takes_roles_and_agentkit_server_keys() {
    let c = ConfigLoader::new()
        .with_env(|n| (n == "TOKEN").then(|| "s3cret".to_owned()))
        .parse(
            r#"{"mcpServers": {
                "a": {"command": "x"},
                "b": {"httpUrl": "http://127.0.0.1:1/mcp", "bearer_token": "${TOKEN}", "includeTools": ["t"]}
            }, "roles": {"dev": ["a", "b"]}}"#,
            ConfigFormat::McpServersJson,
            None,
        )
        .unwrap();
    assert_eq!(c.resolve_servers(&["dev"], &[]).unwrap(), ["a", "b"]);
    let b = &c.mcp.servers["b"];
    assert_eq!(b.transport, McpTransport::StreamableHttp);
    assert_eq!(b.bearer_token.as_deref(), Some("s3cret"));
    assert_eq!(b.allowed_tools.as_deref(), Some(&["t".to_owned()][..]));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(text: &str) {
        let l = ConfigLoader::new().with_env(|n| (n == "SET").then(|| "1".to_owned()));
        for &(format, file) in FORMATS {
            // No panic; an error is a config error with a message.
            if let Err(e) = l.parse(text, format, Some(Path::new(file))) {
                let (_, _, message) = config_error(e);
                assert!(!message.is_empty());
            }
        }
    }

    /// Numbers at the edges of f64, u64 and usize, as they would be written in a file.
    fn edge_number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|f| format!("{f:e}")),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            Just("1e400".to_owned()),
            Just("-0".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("\"${SET}\"".to_owned()),
            Just("\"${UNSET}\"".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            parse_all(&text);
        }

        #[test]
        fn yaml_and_json_like_text_never_panics(
            text in "[{}\\[\\]:,\" a-z0-9_$\\n-]{0,120}"
        ) {
            parse_all(&text);
            parse_all(&format!("mcp:\n  servers:\n    s: {text}\n"));
            parse_all(&format!(r#"{{"mcpServers": {{"s": {text}}}}}"#));
        }

        #[test]
        fn numbers_at_the_edges_are_accepted_or_rejected_cleanly(
            key in prop_oneof![
                Just("request_timeout_seconds"),
                Just("connect_timeout_seconds"),
                Just("max_concurrency"),
                Just("timeout"),
            ],
            value in edge_number(),
        ) {
            let settings = format!(r#""command": "x", "{key}": {value}"#);
            let l = ConfigLoader::new().with_env(|n| (n == "SET").then(|| "1".to_owned()));
            for &(format, file) in FORMATS {
                match l.parse(&one_server(format, &settings), format, Some(Path::new(file))) {
                    Ok(c) => {
                        if let Some(s) = c.mcp.servers.get("s") {
                            // What loads converts without panicking.
                            s.connect_timeout().unwrap();
                            s.request_timeout().unwrap();
                            prop_assert_ne!(s.max_concurrency, Some(0));
                        }
                    }
                    Err(e) => {
                        let (_, key, message) = config_error(e);
                        prop_assert!(!message.is_empty());
                        prop_assert!(!key.is_empty() || message.contains("JSON") || message.contains("YAML"), "{key}: {message}");
                    }
                }
            }
        }
    }
}
