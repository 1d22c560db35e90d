//! A local OpenAI-compatible server that plays the most literal strict-mode model: it answers
//! every structured request with the first valid instance of the requested JSON schema (the
//! first value of every `enum`, `""`, `0`, `false`, the fewest array items) and every other
//! request with a short fixed text.
//!
//! Run the pattern examples against it to check that they only depend on what a strict schema
//! guarantees:
//!
//! ```text
//! cargo run --example schema_first_server -- 8089 &
//! OPENAI_API_KEY=x OPENAI_BASE_URL=http://127.0.0.1:8089/v1 cargo run --example router
//! ```
//!
//! The port is the first argument (default 0: any free port). The first line printed is
//! `listening on http://127.0.0.1:PORT/v1`.

mod peer;

use std::io::Write;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        None => 0,
        Some(arg) => arg.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the port `{arg}` is not a number from 0 to 65535 ({e})"),
            )
        })?,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on http://{addr}/v1")?;
    out.flush()?;
    axum::serve(listener, peer::app(peer::RequestLog::default()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
