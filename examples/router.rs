//! Router: an LLM router and an embedding router send requests to agents and functions.
//!
//! `cargo run --example router` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, RunContext, ScriptedProvider,
};
use agentkit_patterns::{BagOfWordsEmbedder, FnLlm, Router};

/// The request both routers answer.
pub(crate) const REQUEST: &str =
    "How do I reset my password? The login page says my account is locked.";

/// The help desk, routed by an LLM and by embeddings.
pub(crate) struct HelpDesk {
    /// Routes with an LLM classifier (structured output).
    pub(crate) by_llm: Router,
    /// The same routes, chosen by cosine similarity of embeddings.
    pub(crate) by_embedding: Router,
}

/// Build the help desk; every agent gets its model from `models`.
pub(crate) fn help_desk(models: common::Models<'_>) -> Result<HelpDesk, agentkit_core::Error> {
    let classifier = AgentLlm::shared(
        Agent::new("classifier", "You route customer requests to the right team."),
        models(ScriptedProvider::new().then_text(
            r#"{"routes": [
                {"route": "account_support", "confidence": 0.93, "reasoning": "Password reset and a locked account are account-access problems."},
                {"route": "billing", "confidence": 0.08, "reasoning": "Nothing about payments, but accounts are shared with billing."}
            ]}"#,
        )),
    );
    let account = Arc::new(AgentLlm::shared(
        Agent::new("account_support", "You fix login and account problems.")
            .with_description("Logins, passwords, locked accounts, two-factor authentication"),
        models(ScriptedProvider::new().then_text(
            "Your account locks after five failed attempts. Wait 15 minutes, then use \"Forgot \
             password\" on the login page; the reset link is valid for one hour.",
        )),
    ));
    let billing = Arc::new(AgentLlm::shared(
        Agent::new("billing", "You answer billing questions.")
            .with_description("Invoices, refunds, payment methods and plans"),
        models(ScriptedProvider::new()),
    ));
    let status = FnLlm::new("service_status", |_text: String, _ctx| async move {
        Ok("All systems operational.".to_owned())
    })
    .with_description("Is the service up or down: outages, status and incidents");

    let by_llm = Router::builder("help-desk")
        .with_llm(classifier)
        .with_shared_route(account.clone())
        .with_shared_route(billing.clone())
        .with_function_route(status.clone())
        .with_top_k(2)
        .build()?;
    let by_embedding = Router::builder("help-desk-embeddings")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_shared_route(account)
        .with_shared_route(billing)
        .with_function_route(status)
        .with_top_k(3)
        .build()?;
    Ok(HelpDesk {
        by_llm,
        by_embedding,
    })
}

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let desk = help_desk(&common::model)?;
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = desk.by_llm.generate(REQUEST.into(), &ctx).await?;
    println!("\nfinal answer (LLM router):\n{}", g.text());

    let question = "Is there an outage right now? The status page is down.";
    for r in desk.by_embedding.route(question, &ctx).await? {
        println!("embedding score {:.2} for `{}`", r.confidence, r.route);
    }
    println!(
        "final answer (embedding router): {}",
        desk.by_embedding.generate_str(question, &ctx).await?
    );
    common::print_steps(&sink);
    Ok(())
}
