//! Translating mcp-agent's `mcp_agent.config.yaml` and the `mcpServers` JSON of Claude Desktop,
//! Cursor, `.mcp.json` and VS Code into agentkit's config tree, and inferring MCP transports.

use serde_yaml_ng::{Mapping, Value};

use super::locate::{KeyPath, closest, key_text};

type Fail = (KeyPath, String);

/// The keys of [`McpServerConfig`](super::McpServerConfig) (`type` is an alias of `transport`).
const SERVER_KEYS: &[&str] = &[
    "transport",
    "type",
    "description",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "bearer_token",
    "connect_timeout_seconds",
    "request_timeout_seconds",
    "roots",
    "allowed_tools",
    "denied_tools",
    "max_concurrency",
    "auth",
];

/// Server keys of mcp-agent that agentkit knowingly ignores (never reported as typos).
const MCP_AGENT_IGNORED: &[&str] = &[
    "name",
    "terminate_on_close",
    "read_transport_sse_timeout_seconds",
    "websocket",
];

/// Server keys of Claude Desktop, Claude Code, Cursor, VS Code, Cline, Roo, Windsurf and Gemini
/// CLI that agentkit knowingly ignores (never reported as typos).
const JSON_IGNORED: &[&str] = &[
    "disabled",
    "autoApprove",
    "alwaysAllow",
    "trust",
    "oauth",
    "authProviderType",
    "envFile",
    "networkTimeout",
    "disabledTools",
    "tools",
    "gallery",
    "version",
    "name",
    "inputs",
    "dev",
    "sandbox",
];

/// Fails on a key of a server entry that is not a known key but is close to one: almost
/// certainly a typo (`comand`), which would otherwise be dropped and leave the server
/// without its `command`.
fn reject_typos(server: &Mapping, ignored: &[&str], p: &KeyPath) -> Result<(), Fail> {
    for k in server.keys() {
        let name = key_text(k);
        if SERVER_KEYS.contains(&name.as_str()) || ignored.contains(&name.as_str()) {
            continue;
        }
        if let Some(best) = closest(&name, SERVER_KEYS) {
            return Err((
                p.key(name.as_str()),
                format!("unknown key `{name}` (did you mean `{best}`?)"),
            ));
        }
    }
    Ok(())
}

/// Keys of [`Config`](super::Config) (and its aliases).
const TOP_KEYS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "mcp",
    "logger",
    "logging",
    "otel",
    "storage",
    "prices",
];

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Removes every key of `map` not in `keep`, logging each at debug level.
fn keep_only(map: &mut Mapping, keep: &[&str], section: &KeyPath, file_kind: &str) {
    map.retain(|k, _| {
        let name = key_text(k);
        let kept = keep.contains(&name.as_str());
        if !kept {
            tracing::debug!(
                key = %section.key(name.as_str()),
                "ignoring {file_kind} setting that agentkit does not use"
            );
        }
        kept
    });
}

/// Removes keys whose value is null (pydantic's `None`), so typed fields take their defaults.
fn drop_nulls(map: &mut Mapping) {
    map.retain(|_, v| !v.is_null());
}

/// Moves `from` to `to` unless `to` is already set.
fn rename(map: &mut Mapping, from: &str, to: &str, section: &KeyPath) {
    if let Some(v) = map.shift_remove(from) {
        if map.contains_key(to) {
            tracing::debug!(key = %section.key(from), "ignored: `{to}` is also set");
        } else {
            map.insert(s(to), v);
        }
    }
}

/// Turns a merged `mcp_agent.config.yaml` (+ secrets) tree into agentkit's shape: unmodelled
/// sections and keys are dropped with a debug log, renamed keys are moved.
pub(crate) fn from_mcp_agent(tree: &mut Value) -> Result<(), Fail> {
    const KIND: &str = "mcp-agent";
    let Value::Mapping(top) = tree else {
        return Ok(());
    };
    let root = KeyPath::root();
    keep_only(top, TOP_KEYS, &root, KIND);
    drop_nulls(top);

    if let Some(Value::Mapping(openai)) = top.get_mut("openai") {
        let p = KeyPath::keys(["openai"]);
        drop_nulls(openai);
        rename(openai, "default_headers", "headers", &p);
        keep_only(
            openai,
            &[
                "api_key",
                "base_url",
                "default_model",
                "organization",
                "project",
                "headers",
                "query",
                "timeout_seconds",
                "max_retries",
                "api",
                "store",
            ],
            &p,
            KIND,
        );
    }
    if let Some(Value::Mapping(anthropic)) = top.get_mut("anthropic") {
        let p = KeyPath::keys(["anthropic"]);
        drop_nulls(anthropic);
        if let Some(provider) = anthropic.get("provider").and_then(Value::as_str)
            && provider != "anthropic"
        {
            tracing::warn!(
                provider,
                "mcp-agent's anthropic.provider `{provider}` is not supported; agentkit \
                 talks to the Anthropic API directly (set anthropic.base_url for a proxy)"
            );
        }
        keep_only(
            anthropic,
            &[
                "api_key",
                "base_url",
                "default_model",
                "version",
                "headers",
                "timeout_seconds",
                "max_retries",
            ],
            &p,
            KIND,
        );
    }
    if let Some(Value::Mapping(google)) = top.get_mut("google") {
        let p = KeyPath::keys(["google"]);
        drop_nulls(google);
        if google.get("vertexai").and_then(Value::as_bool) == Some(true) {
            tracing::warn!(
                "mcp-agent's google.vertexai is not supported; agentkit talks to the Gemini \
                 API with an API key (set google.base_url for a proxy)"
            );
        }
        keep_only(
            google,
            &[
                "api_key",
                "base_url",
                "default_model",
                "headers",
                "timeout_seconds",
                "max_retries",
            ],
            &p,
            KIND,
        );
    }
    for key in ["logger", "logging"] {
        if let Some(Value::Mapping(logger)) = top.get_mut(key) {
            drop_nulls(logger);
            if logger.get("level").and_then(Value::as_str) == Some("warning") {
                logger.insert(s("level"), s("warn"));
            }
            keep_only(logger, &["level", "format"], &KeyPath::keys([key]), KIND);
        }
    }
    if let Some(Value::Mapping(otel)) = top.get_mut("otel") {
        drop_nulls(otel);
        let endpoint = otel
            .get("otlp_settings")
            .and_then(|o| o.get("endpoint"))
            .filter(|e| !e.is_null())
            .cloned();
        if let Some(endpoint) = endpoint
            && !otel.contains_key("endpoint")
        {
            otel.insert(s("endpoint"), endpoint);
        }
        keep_only(
            otel,
            &["enabled", "endpoint", "service_name"],
            &KeyPath::keys(["otel"]),
            KIND,
        );
    }
    if let Some(Value::Mapping(mcp)) = top.get_mut("mcp") {
        let p = KeyPath::keys(["mcp"]);
        drop_nulls(mcp);
        keep_only(mcp, &["servers", "roles"], &p, KIND);
        if let Some(Value::Mapping(servers)) = mcp.get_mut("servers") {
            for (name, server) in servers.iter_mut() {
                if let Value::Mapping(server) = server {
                    mcp_agent_server(server, &p.key("servers").key(key_text(name)))?;
                }
            }
        }
    }
    Ok(())
}

fn mcp_agent_server(server: &mut Mapping, p: &KeyPath) -> Result<(), Fail> {
    const KIND: &str = "mcp-agent";
    drop_nulls(server);
    // `read_timeout_seconds` bounds waiting for a response; `http_timeout_seconds` bounds one
    // HTTP exchange. agentkit has one per-request timeout: the first that is set.
    rename(server, "read_timeout_seconds", "request_timeout_seconds", p);
    rename(server, "http_timeout_seconds", "request_timeout_seconds", p);
    rename(server, "include", "allowed_tools", p);
    rename(server, "include_tools", "allowed_tools", p);
    rename(server, "exclude", "denied_tools", p);
    rename(server, "exclude_tools", "denied_tools", p);
    reject_typos(server, &[MCP_AGENT_IGNORED, &["auth"]].concat(), p)?;
    if let Some(Value::Mapping(mut auth)) = server.shift_remove("auth") {
        if let Some(key) = auth.shift_remove("api_key").filter(|k| !k.is_null()) {
            server.insert(s("bearer_token"), key);
        }
        // mcp-agent's `auth.oauth` (MCPOAuthClientSettings) is used when `enabled`.
        let oauth = match auth.shift_remove("oauth") {
            Some(Value::Mapping(mut o))
                if o.get("enabled").and_then(Value::as_bool) == Some(true) =>
            {
                drop_nulls(&mut o);
                keep_only(
                    &mut o,
                    &["client_id", "client_secret", "scopes"],
                    &p.key("auth").key("oauth"),
                    KIND,
                );
                Some(o)
            }
            _ => None,
        };
        keep_only(&mut auth, &[], &p.key("auth"), KIND);
        if let Some(o) = oauth {
            let mut a = Mapping::new();
            a.insert(s("oauth"), Value::Mapping(o));
            server.insert(s("auth"), Value::Mapping(a));
        }
    }
    if let Some(Value::Sequence(roots)) = server.get_mut("roots") {
        for (i, root) in roots.iter_mut().enumerate() {
            if let Value::Mapping(root) = root {
                drop_nulls(root);
                keep_only(
                    root,
                    &["uri", "name", "server_uri_alias"],
                    &p.key("roots").index(i),
                    KIND,
                );
            }
        }
    }
    keep_only(server, SERVER_KEYS, p, KIND);
    Ok(())
}

/// Turns `{"mcpServers": {...}}` (or VS Code's `{"servers": {...}}`) into
/// `{mcp: {servers: {...}}}`. Disabled servers are left out.
pub(crate) fn from_mcp_servers_json(tree: Value) -> Result<Value, Fail> {
    const KIND: &str = "mcpServers JSON";
    let Value::Mapping(mut top) = tree else {
        return Err((
            KeyPath::root(),
            "expected a JSON object with an `mcpServers` (or VS Code `servers`) object".into(),
        ));
    };
    let mut servers = Mapping::new();
    let mut found = false;
    // VS Code first, so that `mcpServers` wins when a file has both.
    for key in ["servers", "mcpServers"] {
        match top.shift_remove(key) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                found = true;
                for (name, entry) in m {
                    servers.insert(name, entry);
                }
            }
            Some(_) => {
                return Err((
                    KeyPath::keys([key]),
                    "expected an object mapping server names to server settings".into(),
                ));
            }
        }
    }
    if !found {
        return Err((
            KeyPath::root(),
            "no `mcpServers` (or VS Code `servers`) object in this file; expected \
             {\"mcpServers\": {\"name\": {\"command\": ...}}}"
                .into(),
        ));
    }
    // agentkit's role sets may sit beside `mcpServers`.
    let roles = match top.shift_remove("roles") {
        None | Some(Value::Null) => None,
        Some(r) => Some(r),
    };
    keep_only(&mut top, &[], &KeyPath::root(), KIND);

    let base = KeyPath::keys(["mcp", "servers"]);
    let mut out = Mapping::new();
    for (name, entry) in servers {
        let p = base.key(key_text(&name));
        let entry = match entry {
            Value::Mapping(mut m) => {
                if m.get("disabled").and_then(Value::as_bool) == Some(true) {
                    tracing::debug!(server = %key_text(&name), "skipping disabled MCP server");
                    continue;
                }
                json_server(&mut m, &p)?;
                Value::Mapping(m)
            }
            other => other,
        };
        out.insert(name, entry);
    }
    let mut mcp = Mapping::new();
    mcp.insert(s("servers"), Value::Mapping(out));
    if let Some(roles) = roles {
        mcp.insert(s("roles"), roles);
    }
    let mut root = Mapping::new();
    root.insert(s("mcp"), Value::Mapping(mcp));
    Ok(Value::Mapping(root))
}

fn json_server(server: &mut Mapping, p: &KeyPath) -> Result<(), Fail> {
    drop_nulls(server);
    // Gemini CLI: `httpUrl` is streamable HTTP. Windsurf: `serverUrl`.
    if let Some(url) = server.shift_remove("httpUrl") {
        server.insert(s("url"), url);
        if !server.contains_key("type") && !server.contains_key("transport") {
            server.insert(s("transport"), s("streamable_http"));
        }
    }
    rename(server, "serverUrl", "url", p);
    rename(server, "includeTools", "allowed_tools", p);
    rename(server, "excludeTools", "denied_tools", p);
    rename(server, "allowedTools", "allowed_tools", p);
    // Cline: `transportType`; Cline and Claude Code: `timeout` in seconds.
    rename(server, "transportType", "transport", p);
    rename(server, "timeout", "request_timeout_seconds", p);
    reject_typos(server, JSON_IGNORED, p)?;
    // Gemini CLI: `oauth: {enabled, clientId, clientSecret, scopes, ...}`.
    if !server.contains_key("auth")
        && let Some(Value::Mapping(o)) = server.shift_remove("oauth")
        && o.get("enabled").and_then(Value::as_bool) != Some(false)
    {
        let mut oauth = Mapping::new();
        for (from, to) in [
            ("clientId", "client_id"),
            ("clientSecret", "client_secret"),
            ("scopes", "scopes"),
        ] {
            if let Some(v) = o.get(from).filter(|v| !v.is_null()) {
                oauth.insert(s(to), v.clone());
            }
        }
        let mut auth = Mapping::new();
        auth.insert(s("oauth"), Value::Mapping(oauth));
        server.insert(s("auth"), Value::Mapping(auth));
    }
    // agentkit's own server keys (`bearer_token`, `roots`, ...) are accepted here too.
    keep_only(server, SERVER_KEYS, p, "mcpServers JSON");
    Ok(())
}

/// For every server in `mcp.servers`: reads `transport` (or `type`), accepting the spellings
/// used by mcp-agent, Claude Code, Cursor, VS Code and Cline, or infers it from `command` and
/// `url`. Runs after substitution so `${...}` values are resolved.
pub(crate) fn normalize_transports(tree: &mut Value) -> Result<(), Fail> {
    let Some(Value::Mapping(servers)) = tree.get_mut("mcp").and_then(|m| m.get_mut("servers"))
    else {
        return Ok(());
    };
    let base = KeyPath::keys(["mcp", "servers"]);
    for (name, server) in servers.iter_mut() {
        let name = key_text(name);
        let p = base.key(name.as_str());
        let Value::Mapping(server) = server else {
            continue; // typed deserialisation reports it
        };
        let explicit = match (
            server.shift_remove("transport"),
            server.shift_remove("type"),
        ) {
            (Some(t), Some(_)) => {
                tracing::debug!(key = %p.key("type"), "ignored: `transport` is also set");
                Some((t, "transport"))
            }
            (Some(t), None) => Some((t, "transport")),
            (None, Some(t)) => Some((t, "type")),
            (None, None) => None,
        };
        let transport = match explicit {
            Some((Value::String(t), key)) => parse_transport(&t, &name, &p.key(key))?,
            Some((other, key)) => {
                // Put it back so typed deserialisation names the wrong type.
                server.insert(s("transport"), other);
                let _ = key;
                continue;
            }
            None => {
                let has = |k: &str| server.get(k).is_some_and(|v| !v.is_null());
                match (has("command"), has("url")) {
                    (true, false) => "stdio",
                    // A URL ending in `/sse` is the legacy HTTP+SSE transport's stream
                    // (Cursor and Windsurf files name no transport for it).
                    (false, true)
                        if server
                            .get("url")
                            .and_then(Value::as_str)
                            .is_some_and(is_sse_url) =>
                    {
                        "sse"
                    }
                    (false, true) => "streamable_http",
                    (false, false) => {
                        reject_typos(server, &[], &p)?;
                        return Err((
                            p,
                            format!(
                                "MCP server `{name}` has neither `command` (to start it over \
                                 stdio) nor `url` (to reach it over HTTP); set one of them"
                            ),
                        ));
                    }
                    (true, true) => {
                        return Err((
                            p,
                            format!(
                                "MCP server `{name}` has both `command` and `url`; set \
                                 `transport` to stdio, streamable_http or sse to say which to use"
                            ),
                        ));
                    }
                }
            }
        };
        server.insert(s("transport"), s(transport));
    }
    Ok(())
}

/// Whether a URL's path ends in `/sse` (the usual path of a legacy HTTP+SSE server).
pub(crate) fn is_sse_url(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with("/sse")
}

fn parse_transport(t: &str, name: &str, key: &KeyPath) -> Result<&'static str, Fail> {
    let norm: String = t
        .trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    match norm.as_str() {
        "stdio" => Ok("stdio"),
        "http" | "streamablehttp" | "streamable" => Ok("streamable_http"),
        "sse" => Ok("sse"),
        "websocket" | "ws" => Err((
            key.clone(),
            format!(
                "MCP server `{name}` uses the websocket transport, which agentkit does not \
                 support; use stdio, streamable_http or sse"
            ),
        )),
        _ => Err((
            key.clone(),
            format!(
                "MCP server `{name}` has unknown transport `{t}`; expected stdio, \
                 streamable_http (or http) or sse"
            ),
        )),
    }
}

/// Removes `$schema` (editors add it) and `x-*` extension keys (a place for YAML anchors, as
/// in Docker Compose) from the top level.
pub(crate) fn strip_extensions(tree: &mut Value) {
    if let Value::Mapping(top) = tree {
        top.retain(|k, _| {
            k.as_str()
                .is_none_or(|k| k != "$schema" && !k.starts_with("x-"))
        });
    }
}

/// Deep-merges `over` into `base`: maps merge recursively, anything else from `over` wins.
pub(crate) fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing @ Value::Mapping(_)) if v.is_mapping() => deep_merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn yaml(t: &str) -> Value {
        serde_yaml_ng::from_str(t).unwrap()
    }

    #[test]
    fn mcp_agent_google_and_openai_api_sections_keep_what_agentkit_reads() {
        let mut t = yaml(
            "google: {api_key: k, default_model: gemini-2.5-flash, vertexai: false, project: p, \
             location: us-central1}\nopenai: {api: responses, reasoning_effort: low}",
        );
        from_mcp_agent(&mut t).unwrap();
        assert_eq!(
            t["google"],
            yaml("{api_key: k, default_model: gemini-2.5-flash}")
        );
        assert_eq!(t["openai"], yaml("{api: responses}"));
        let config: crate::config::Config = serde_yaml_ng::from_value(t).unwrap();
        let google = config.google.unwrap();
        assert_eq!(google.default_model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(
            config.openai.unwrap().api,
            Some(crate::config::OpenAiApi::Responses)
        );
    }

    #[test]
    fn deep_merge_merges_maps_and_replaces_lists() {
        let mut base = yaml("a: {x: 1, y: [1, 2]}\nb: 2");
        deep_merge(&mut base, yaml("a: {y: [3], z: 4}\nc: 5"));
        assert_eq!(base, yaml("a: {x: 1, y: [3], z: 4}\nb: 2\nc: 5"));
    }

    #[test]
    fn transports_are_inferred_and_spellings_accepted() {
        let mut t = yaml(
            "mcp: {servers: {a: {command: x}, b: {url: u}, c: {type: streamable-http, url: u}, \
             d: {transport: SSE, url: u}, e: {url: 'http://h:1/sse'}, f: {url: 'http://h/a/SSE/?x=1'}, \
             g: {url: 'http://h/sse/mcp'}, h: {type: http, url: 'http://h/sse'}}}",
        );
        normalize_transports(&mut t).unwrap();
        let tr = |n: &str| {
            t["mcp"]["servers"][n]["transport"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(tr("a"), "stdio");
        assert_eq!(tr("b"), "streamable_http");
        assert_eq!(tr("c"), "streamable_http");
        assert_eq!(tr("d"), "sse");
        assert_eq!(tr("e"), "sse");
        assert_eq!(tr("f"), "sse");
        assert_eq!(tr("g"), "streamable_http");
        assert_eq!(tr("h"), "streamable_http");
        let mut both = yaml("mcp: {servers: {z: {command: x, url: u}}}");
        let (key, msg) = normalize_transports(&mut both).unwrap_err();
        assert_eq!(key.to_string(), "mcp.servers.z");
        assert!(msg.contains("both `command` and `url`"), "{msg}");
    }
}
