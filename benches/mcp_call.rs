//! A tool call through `McpAggregator` + `ConnectionManager` versus the same call with a raw
//! rmcp client, against the same in-process streamable HTTP server, in the same run; plus 1,000
//! concurrent calls on one managed connection; plus a whole connect -> list -> call -> close
//! cycle against server-everything over stdio, agentkit's connection versus a raw rmcp client
//! (needs `bash scripts/install-mcp-peers.sh`; skipped without it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentkit_core::{RunContext, ToolSource};
use agentkit_mcp::rmcp::ServiceExt;
use agentkit_mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use agentkit_mcp::rmcp::transport::StreamableHttpClientTransport;
use agentkit_mcp::{ConnectionManager, HttpOptions, McpAggregator, McpServerBuilder, ServerConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn echo_server() -> agentkit_mcp::McpServer {
    McpServerBuilder::new("bench", "1")
        .tool_fn(
            "echo",
            "Echo",
            json!({"type": "object"}),
            |args, _call| async move {
                let text = args
                    .get("text")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
            },
        )
        .build()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let svc = echo_server().into_http_service(HttpOptions::new());
        let app = axum::Router::new().nest_service("/mcp", svc);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/mcp")
    });

    let raw = rt.block_on(async {
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .unwrap()
    });
    let manager = ConnectionManager::new([ServerConfig::http("bench", url.clone())]);
    let tools = Arc::new(McpAggregator::new(manager.clone(), ["bench"]));
    rt.block_on(async { tools.list_tools().await.unwrap() });
    let args = json!({"text": "hello"});
    let raw_args = args.as_object().cloned().unwrap();

    let mut group = c.benchmark_group("mcp_tool_call");
    group.bench_function("raw_rmcp_call_tool", |b| {
        b.iter(|| {
            rt.block_on(async {
                raw.call_tool(CallToolRequestParams::new("echo").with_arguments(raw_args.clone()))
                    .await
                    .unwrap()
            })
        })
    });
    group.bench_function("agentkit_aggregator_call_tool", |b| {
        let ctx = RunContext::new();
        b.iter(|| {
            rt.block_on(async {
                tools
                    .call_tool("bench__echo", args.clone(), &ctx)
                    .await
                    .unwrap()
            })
        })
    });
    group.finish();

    // 1,000 concurrent calls on the one managed connection, none may fail.
    rt.block_on(async {
        let started = std::time::Instant::now();
        let calls = (0..1000).map(|i| {
            let tools = Arc::clone(&tools);
            tokio::spawn(async move {
                tools
                    .call_tool(
                        "bench__echo",
                        json!({"text": format!("n{i}")}),
                        &RunContext::new(),
                    )
                    .await
            })
        });
        let results = futures::future::join_all(calls).await;
        let ok = results
            .into_iter()
            .enumerate()
            .filter(|(i, r)| matches!(r, Ok(Ok(out)) if out.text_content() == format!("n{i}")))
            .count();
        println!(
            "1000 concurrent calls on one connection: {ok} ok in {:?} (connects: {})",
            started.elapsed(),
            manager.connect_count("bench").unwrap()
        );
        assert_eq!(ok, 1000);
        assert_eq!(manager.connect_count("bench").unwrap(), 1);
    });
    rt.block_on(async {
        manager.shutdown().await;
        let _ = raw.cancel().await;
    });
}

/// node and server-everything from tests/peers, when installed.
fn everything() -> Option<(String, String)> {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node_modules");
    let node = peers.join(".bin/node");
    let js = peers.join("@modelcontextprotocol/server-everything/dist/index.js");
    (node.exists() && js.exists()).then(|| (node.display().to_string(), js.display().to_string()))
}

fn stdio_cycle(c: &mut Criterion) {
    use agentkit_mcp::rmcp::transport::TokioChildProcess;

    let Some((node, js)) = everything() else {
        println!("mcp_stdio_cycle skipped: run `bash scripts/install-mcp-peers.sh` first");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args = json!({"message": "hello"}).as_object().cloned().unwrap();
    let mut group = c.benchmark_group("mcp_stdio_cycle");
    group
        .sampling_mode(criterion::SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(20));
    group.bench_function("raw_rmcp_connect_list_call_close", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut cmd = tokio::process::Command::new(&node);
                cmd.args([js.as_str(), "stdio"]);
                let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
                client.list_all_tools().await.unwrap();
                client
                    .call_tool(CallToolRequestParams::new("echo").with_arguments(args.clone()))
                    .await
                    .unwrap();
                client.cancel().await.unwrap();
            })
        })
    });
    group.bench_function("agentkit_connect_list_call_close", |b| {
        let ctx = RunContext::new();
        b.iter(|| {
            rt.block_on(async {
                let conn = agentkit_mcp::connect_once(ServerConfig::stdio(
                    "everything",
                    node.clone(),
                    [js.clone(), "stdio".to_owned()],
                ))
                .await
                .unwrap();
                conn.list_tools().await.unwrap();
                conn.call_tool("echo", args.clone(), &ctx, None)
                    .await
                    .unwrap();
                conn.close().await;
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench, stdio_cycle);
criterion_main!(benches);
