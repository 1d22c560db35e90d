//! Router: an LLM router and an embedding router send requests to agents and functions.
//!
//! `cargo run --example router` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, RunContext, ScriptedProvider,
};
use agentkit_patterns::{BagOfWordsEmbedder, FnLlm, Router};

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let request = "How do I reset my password? The login page says my account is locked.";

    let classifier = AgentLlm::with_provider(
        Agent::new("classifier", "You route customer requests to the right team."),
        common::model(ScriptedProvider::new().then_text(
            r#"{"routes": [
                {"route": "account_support", "confidence": 0.93, "reasoning": "Password reset and a locked account are account-access problems."},
                {"route": "billing", "confidence": 0.08, "reasoning": "Nothing about payments, but accounts are shared with billing."}
            ]}"#,
        )),
    );
    let account = Arc::new(AgentLlm::with_provider(
        Agent::new("account_support", "You fix login and account problems.")
            .with_description("Logins, passwords, locked accounts, two-factor authentication"),
        common::model(ScriptedProvider::new().then_text(
            "Your account locks after five failed attempts. Wait 15 minutes, then use \"Forgot \
             password\" on the login page; the reset link is valid for one hour.",
        )),
    ));
    let billing = Arc::new(AgentLlm::with_provider(
        Agent::new("billing", "You answer billing questions.")
            .with_description("Invoices, refunds, payment methods and plans"),
        common::model(ScriptedProvider::new()),
    ));
    let status = FnLlm::new("service_status", |_text: String, _ctx| async move {
        Ok("All systems operational.".to_owned())
    })
    .with_description("Is the service up or down: outages, status and incidents");

    let router = Router::builder("help-desk")
        .with_llm(classifier)
        .with_shared_route(account.clone())
        .with_shared_route(billing.clone())
        .with_function_route(status.clone())
        .with_top_k(2)
        .build()?;

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = router.generate(request.into(), &ctx).await?;
    println!("\nfinal answer (LLM router):\n{}", g.text());

    // The same routes, chosen by cosine similarity of embeddings instead of an LLM.
    let by_embedding = Router::builder("help-desk-embeddings")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_shared_route(account)
        .with_shared_route(billing)
        .with_function_route(status)
        .with_top_k(3)
        .build()?;
    let question = "Is there an outage right now? The status page is down.";
    for r in by_embedding.route(question, &ctx).await? {
        println!("embedding score {:.2} for `{}`", r.confidence, r.route);
    }
    println!(
        "final answer (embedding router): {}",
        by_embedding.generate_str(question, &ctx).await?
    );
    common::print_steps(&sink);
    Ok(())
}
