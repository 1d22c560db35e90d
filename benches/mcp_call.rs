//! A tool call through `McpAggregator` + `ConnectionManager` versus the same call with a raw
//! rmcp client, against the same in-process streamable HTTP server, in the same run; plus 1,000
//! concurrent calls on one managed connection.
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

criterion_group!(benches, bench);
criterion_main!(benches);
