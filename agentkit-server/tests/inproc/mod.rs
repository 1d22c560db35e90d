//! An agentkit server served in this test's process on a free 127.0.0.1 port, stopped when
//! the handle is dropped (`mod inproc;` in a test file).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use agentkit_server::Server;

/// A served server; dropping it stops the server.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    /// Stop the server and wait until it has shut down (its streams ended, its requests
    /// drained, its runs given their grace and released).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serve `server` on a free 127.0.0.1 port.
pub async fn serve(server: Server) -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    InProcess {
        base,
        stop: Some(stop),
        served: Some(served),
    }
}

/// Send `method path` to the server at `base` with `body` as JSON, authenticated with `key`
/// (`Authorization: Bearer`); returns the status and the body as JSON (a body that is not JSON
/// as a JSON string).
pub async fn call_as(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {key}");
    let (status, _, body) = request(base, method, path, body, &[("authorization", &auth)]).await;
    (status, body)
}

/// [`call_as`], the key sent as `x-api-key` (as LangGraph clients send it) instead of
/// `Authorization: Bearer`.
pub async fn call_with_api_key(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, _, body) = request(base, method, path, body, &[("x-api-key", key)]).await;
    (status, body)
}

/// Send `method path` to the server at `base` with `body` as JSON and `headers` (credentials
/// included, if any); returns the status, the response's headers and its body as JSON (a body
/// that is not JSON as a JSON string).
pub async fn request(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The audit entries `GET /v1/audit{query}` lists to `key` (`query`: empty, or say
/// `?workspace=acme/prod&limit=10000`), which must answer 200.
pub async fn audit_entries(base: &str, key: &str, query: &str) -> Vec<serde_json::Value> {
    let path = format!("/v1/audit{query}");
    let (s, page) = call_as(base, key, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}

/// `POST /v1/workspaces` for `org/ws` on the server at `base`, as its admin key `admin`: the
/// status (201 made, 409 there already) and the body.
pub async fn create_workspace(
    base: &str,
    admin: &str,
    org: &str,
    ws: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"org": org, "workspace": ws});
    call_as(
        base,
        admin,
        reqwest::Method::POST,
        "/v1/workspaces",
        Some(body),
    )
    .await
}

/// A new API key: `POST /v1/keys` with `body` (`role`, and `workspace`, `name`, `policy` as
/// wanted) as `admin`, which must answer 201; the key's secret and id.
pub async fn create_key(base: &str, admin: &str, body: serde_json::Value) -> (String, String) {
    let (s, b) = call_as(base, admin, reqwest::Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    (
        b["key"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    )
}

/// Workspace `org/ws` (made now, or before: 201 or 409) and the secret of a new key of it
/// with `role`, named `name`.
pub async fn workspace_key(
    base: &str,
    admin: &str,
    org: &str,
    ws: &str,
    role: &str,
    name: &str,
) -> String {
    workspace_key_and_id(base, admin, org, ws, role, name)
        .await
        .0
}

/// [`workspace_key`], with the key's id: (secret, id).
pub async fn workspace_key_and_id(
    base: &str,
    admin: &str,
    org: &str,
    ws: &str,
    role: &str,
    name: &str,
) -> (String, String) {
    let (s, b) = create_workspace(base, admin, org, ws).await;
    assert!(s == 201 || s == 409, "{b}");
    let body = serde_json::json!({"name": name, "role": role, "workspace": format!("{org}/{ws}")});
    create_key(base, admin, body).await
}

/// A SQLite store in file `a.db` of `dir`.
pub async fn sqlite(dir: &std::path::Path) -> std::sync::Arc<dyn agentkit_runtime::Store> {
    std::sync::Arc::new(
        agentkit_runtime::SqliteStore::open(dir.join("a.db"))
            .await
            .unwrap(),
    )
}

/// A server on a SQLite database in `dir` with admin key `admin`, agent `echo` ("Repeats what
/// it was told": the scripted model that repeats the message, keeping its conversations in
/// the store) and polling every 50 ms: add what else the test needs, then build.
pub async fn echo_server(dir: &std::path::Path, admin: &str) -> agentkit_server::ServerBuilder {
    echo_server_on(sqlite(dir).await, admin)
}

/// [`echo_server`] on `store`.
pub fn echo_server_on(
    store: std::sync::Arc<dyn agentkit_runtime::Store>,
    admin: &str,
) -> agentkit_server::ServerBuilder {
    let echo = agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("echo", "Repeat."),
        agentkit_core::ScriptedProvider::echo(),
    )
    .with_memory(Server::memory_for(std::sync::Arc::clone(&store)));
    Server::builder(store)
        .admin_key(admin)
        .agent_llm(
            "echo",
            std::sync::Arc::new(echo),
            "Repeats what it was told",
        )
        .poll_interval(std::time::Duration::from_millis(50))
}

/// A server on a SQLite database in `dir` with admin key `admin` that runs declarative agents
/// (`POST /v1/agents`) on the offline models and polls every 50 ms: add what else the test
/// needs, then build.
pub async fn declarative(dir: &std::path::Path, admin: &str) -> agentkit_server::ServerBuilder {
    declarative_on(dir, admin, agentkit_server::spec::ModelFactory::offline()).await
}

/// [`declarative`], its agents' models made by `models` (the offline ones plus, say, a
/// provider of the test's own).
pub async fn declarative_on(
    dir: &std::path::Path,
    admin: &str,
    models: agentkit_server::spec::ModelFactory,
) -> agentkit_server::ServerBuilder {
    let store = sqlite(dir).await;
    let builder =
        agentkit_server::spec::DeclarativeBuilder::new(&agentkit_core::Config::new(), models);
    agentkit_server::Server::builder(store)
        .admin_key(admin)
        .spec_builder(std::sync::Arc::new(builder))
        .poll_interval(std::time::Duration::from_millis(50))
}

/// An in-process tool `name` that answers `answer` (whatever its arguments) and counts in
/// `calls` the calls it really ran.
pub fn counted_tool(
    name: &str,
    description: &str,
    answer: &'static str,
    calls: &std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> agentkit_core::FnTool {
    let calls = std::sync::Arc::clone(calls);
    agentkit_core::FnTool::new(name, description, move |_: serde_json::Value| {
        let calls = std::sync::Arc::clone(&calls);
        async move {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, String>(answer)
        }
    })
}

/// Deploy `name`, an agent on the scripted model, into `key`'s workspace.
pub async fn deploy_scripted(base: &str, key: &str, name: &str) {
    let (s, b) = call_as(
        base,
        key,
        reqwest::Method::POST,
        "/v1/agents",
        Some(serde_json::json!({"name": name, "kind": "agent",
                                "spec": {"model": "scripted", "instructions": "Repeat."}})),
    )
    .await;
    assert!(s == 201 || s == 200, "{s} {b}");
}

/// The audit log of `workspace` (`org/ws`), read as `admin` at once (no waiting): its CSV
/// export and its JSON entries.
pub async fn audit_exports(
    base: &str,
    admin: &str,
    workspace: &str,
) -> (String, Vec<serde_json::Value>) {
    let csv = reqwest::Client::new()
        .get(format!(
            "{base}/v1/audit?workspace={workspace}&limit=10000&format=csv"
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let query = format!("?workspace={workspace}&limit=10000");
    (csv, audit_entries(base, admin, &query).await)
}

/// The audit chain of `workspace` verifies (`GET /v1/audit/verify` as `admin`).
pub async fn assert_audit_verifies(base: &str, admin: &str, workspace: &str) {
    let path = format!("/v1/audit/verify?workspace={workspace}");
    let (s, v) = call_as(base, admin, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

/// An rmcp client of `/mcp` (see [`mcp_session`]).
pub type McpClient = agentkit_mcp::rmcp::service::RunningService<
    agentkit_mcp::rmcp::RoleClient,
    agentkit_mcp::rmcp::model::ClientConfig,
>;

/// The streamable HTTP transport to `/mcp` of the server at `base`, authenticated with `key`
/// (none: no `Authorization` header), sending `headers` with every request.
pub fn mcp_transport(
    base: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> agentkit_mcp::rmcp::transport::StreamableHttpClientTransport<reqwest::Client> {
    use agentkit_mcp::rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"));
    if let Some(k) = key {
        config = config.auth_header(k);
    }
    if !headers.is_empty() {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect();
        config = config.custom_headers(headers);
    }
    agentkit_mcp::rmcp::transport::StreamableHttpClientTransport::from_config(config)
}

/// A 2026-07-28 client of `/mcp` of the server at `base` as `key` that declared MCP Tasks,
/// sending `headers` with every request.
pub async fn tasks_client(base: &str, key: &str, headers: &[(&str, &str)]) -> McpClient {
    use agentkit_mcp::rmcp::model::{
        ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    };
    use agentkit_mcp::rmcp::{ClientLifecycleMode, ClientServiceExt};
    ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("gateway-tasks-test", "0.0.0"),
    )
    .serve_with_lifecycle(
        mcp_transport(base, Some(key), headers),
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    )
    .await
    .unwrap()
}

/// Call `params` as `client` and expect a task; the call must be answered while the
/// upstream call is still held (the guard only keeps a broken build from hanging).
pub async fn call_as_task(
    client: &McpClient,
    params: agentkit_mcp::rmcp::model::CallToolRequestParams,
) -> agentkit_mcp::rmcp::model::Task {
    use agentkit_mcp::rmcp::model::CallToolResponse;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.call_tool_once(params),
    )
    .await
    .expect("a tasks client is answered while the upstream call is held")
    .unwrap();
    match response {
        CallToolResponse::Task(created) => created.task,
        other => panic!("a tasks client gets a task, got {other:?}"),
    }
}

/// Poll `tasks/get` until the task is terminal, for up to 30 s, asserting it is `working`
/// until then; `context` adds to the failure message (a server's log, say).
pub async fn wait_terminal(
    client: &McpClient,
    task_id: &str,
    context: impl Fn() -> String,
) -> agentkit_mcp::rmcp::model::DetailedTask {
    use agentkit_mcp::rmcp::model::{GetTaskParams, TaskStatus};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = client
            .get_task(GetTaskParams::new(task_id))
            .await
            .unwrap()
            .task;
        if t.status().is_terminal() {
            return t;
        }
        assert_eq!(t.status(), TaskStatus::Working, "{t:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "task {task_id} never ended: {t:?}\n{}",
            context()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An rmcp client on a legacy (2025-11-25, `initialize`) session of `/mcp` as `key`, sending
/// `headers` with every request.
pub async fn mcp_session(base: &str, key: &str, headers: &[(&str, &str)]) -> McpClient {
    use agentkit_mcp::rmcp::ServiceExt;
    agentkit_mcp::rmcp::model::ClientConfig::default()
        .serve(mcp_transport(base, Some(key), headers))
        .await
        .unwrap()
}

/// A stateless 2026-07-28 `tools/call` of `tool` with `args` POSTed to `/mcp` as `key`, with
/// every header a 2026-07-28 client sends and `extra`: the HTTP status and the JSON body (a
/// body that is not JSON as a JSON string). The request's id is 3.
pub async fn mcp_post(
    base: &str,
    key: &str,
    tool: &str,
    args: serde_json::Value,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": tool, "arguments": args, "_meta": meta}});
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
    ];
    headers.extend_from_slice(extra);
    let (status, _, body) =
        request(base, reqwest::Method::POST, "/mcp", Some(body), &headers).await;
    (status, body)
}

/// A server builder on `store` with admin key `admin` whose gateway `gateway` reaches the MCP
/// servers `servers` (name, streamable HTTP URL): add what else the test needs, then build
/// (or use [`serve_gateway`]).
pub fn gateway_builder(
    store: std::sync::Arc<dyn agentkit_runtime::Store>,
    admin: &str,
    servers: &[(&str, &str)],
    gateway: agentkit_server::gatewayops::GatewayConfig,
) -> agentkit_server::ServerBuilder {
    let servers = servers
        .iter()
        .map(|(name, url)| agentkit_mcp::ServerConfig::http(*name, *url));
    Server::builder(store)
        .admin_key(admin)
        .mcp_servers(agentkit_mcp::ConnectionManager::new(servers))
        .gateway(gateway)
}

/// [`gateway_builder`], built and served.
pub async fn serve_gateway(
    store: std::sync::Arc<dyn agentkit_runtime::Store>,
    admin: &str,
    servers: &[(&str, &str)],
    gateway: agentkit_server::gatewayops::GatewayConfig,
) -> InProcess {
    serve(
        gateway_builder(store, admin, servers, gateway)
            .build()
            .await
            .unwrap(),
    )
    .await
}

/// A model that never answers (its runs stay live until they are paused or cancelled).
pub struct Stuck;

#[async_trait::async_trait]
impl agentkit_core::LlmProvider for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    async fn complete(
        &self,
        _: agentkit_core::CompletionRequest,
    ) -> agentkit_core::Result<agentkit_core::CompletionResponse> {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Ok(agentkit_core::CompletionResponse::new(
            agentkit_core::Message::assistant("late"),
            agentkit_core::Usage::default(),
            agentkit_core::StopReason::EndTurn,
            "stuck",
        ))
    }
}

/// Poll `GET /v1/runs/{run_id}` as `key` (every 50 ms, each answering 200) until the run is in
/// `status`, for up to 30 s: the run.
pub async fn wait_run(base: &str, key: &str, run_id: &str, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let path = format!("/v1/runs/{run_id}");
    loop {
        let (s, run) = call_as(base, key, reqwest::Method::GET, &path, None).await;
        assert_eq!(s, 200, "{run}");
        if run["status"] == status {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {run_id} never became {status}: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The entry with `id` in the `results` of a `/v1/execute` answer (which must have it).
pub fn result_by_id<'a>(answer: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
}

/// The gateway's agent WebSocket, as a test opens it.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `GET /v1/agents/{id}` of the server at `base` as a WebSocket with `key`: the socket,
/// or the HTTP status that refused it.
pub async fn open_socket(base: &str, key: &str, id: &str) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/v1/agents/{id}", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// A new WebSocket of `key` to the server at `base`: a connection id from
/// `POST /v1/agents/connect`, opened at once.
pub async fn connect_socket(base: &str, key: &str) -> Socket {
    let (s, c) = call_as(base, key, reqwest::Method::POST, "/v1/agents/connect", None).await;
    assert_eq!(s, 200, "{c}");
    open_socket(base, key, c["connection_id"].as_str().unwrap())
        .await
        .unwrap()
}

/// An agent that starts only once the test opens its gate (adds a permit; it stays open), so
/// the test can attach to its run first, or hold the run open.
pub struct Gated {
    inner: agentkit_core::AgentLlm,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Gated {
    /// `inner`, held until `gate` has a permit.
    pub fn new(
        inner: agentkit_core::AgentLlm,
        gate: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self { inner, gate }
    }

    async fn open(&self) {
        let _permit = self.gate.acquire().await.unwrap();
    }
}

#[async_trait::async_trait]
impl agentkit_core::AugmentedLlm for Gated {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn generate(
        &self,
        request: agentkit_core::GenerateRequest,
        ctx: &agentkit_core::RunContext,
    ) -> agentkit_core::Result<agentkit_core::Generation> {
        self.open().await;
        self.inner.generate(request, ctx).await
    }

    fn generate_stream<'a>(
        &'a self,
        request: agentkit_core::GenerateRequest,
        ctx: &'a agentkit_core::RunContext,
    ) -> agentkit_core::GenerationStream<'a> {
        agentkit_core::stream_generation(move |emitter| async move {
            self.open().await;
            emitter.forward(&self.inner, request, ctx).await
        })
    }
}

/// Agent `holder`: told "hold", it calls its `hold` tool, which returns only after a minute
/// (a test cancels the run long before); told anything else, it answers "done".
pub fn holder() -> agentkit_core::AgentLlm {
    use agentkit_core::{CompletionResponse, Content, Message, Role, StopReason, Usage};
    let model = agentkit_core::ScriptedProvider::from_fn(|req| {
        let said = req
            .messages
            .iter()
            .rfind(|m| m.role == Role::User)
            .map(Message::text)
            .unwrap_or_default();
        let (message, stop) = if said == "hold" {
            let call = vec![Content::tool_call("call_0", "hold", serde_json::json!({}))];
            (Message::new(Role::Assistant, call), StopReason::ToolUse)
        } else {
            (Message::assistant("done"), StopReason::EndTurn)
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(1, 1),
            stop,
            "holder",
        ))
    });
    let hold = agentkit_core::FnTool::new("hold", "Holds the run", |_: serde_json::Value| async {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        Ok::<_, String>("held")
    });
    agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("holder", "Hold.").with_tool(hold),
        model,
    )
}
