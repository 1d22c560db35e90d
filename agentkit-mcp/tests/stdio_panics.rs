//! A tool that panics in an MCP server served over stdio (`McpServer::serve_stdio`, as
//! `agentkit mcp serve` serves) is answered at once with a JSON-RPC internal error (-32603)
//! naming the tool and the panic, and the server keeps serving the client's later calls.
//!
//! The server is a real child process: this test binary itself, started with
//! `--serve-stdio` (so the file has its own `main`: `harness = false` in Cargo.toml, and
//! nothing but the server writes to the child's stdout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agentkit_mcp::rmcp::ServiceExt;
use agentkit_mcp::rmcp::model::CallToolRequestParams;
use agentkit_mcp::rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

/// The child's argument: serve on stdio instead of testing.
const SERVE: &str = "--serve-stdio";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == SERVE) {
        // The test expects the panic: one line on stderr instead of the default report.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("stdio test server: a handler panicked as the test asks ({info})");
        }));
        runtime.block_on(serve());
        return;
    }
    common::run_tests(
        &args,
        &runtime,
        &common::harness_tests![a_panicking_tool_over_stdio_is_answered_at_once],
    );
}

/// `boom` panics with "index <n> out of range"; `echo` answers its text.
async fn serve() {
    common::fragile().build().serve_stdio().await.unwrap();
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

async fn a_panicking_tool_over_stdio_is_answered_at_once() {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command.arg(SERVE);
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    for n in [1, 2] {
        let message =
            common::panicked_at_once(client.call_tool(call("boom", json!({"n": n})))).await;
        assert!(
            message.starts_with(&format!(
                "the handler of tool `boom` panicked: index {n} out of range;"
            )),
            "{message}"
        );
        // The same server process keeps serving.
        let r = client
            .call_tool(call("echo", json!({"text": format!("after {n}")})))
            .await
            .unwrap();
        assert_eq!(r.content[0].as_text().unwrap().text, format!("after {n}"));
    }
    client.cancel().await.unwrap();
}
