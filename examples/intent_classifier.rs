//! Intent classifier: LLM-based (with entities) and embedding-based.
//!
//! `cargo run --example intent_classifier` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, CollectingSink, RunContext, ScriptedProvider};
use agentkit_patterns::{BagOfWordsEmbedder, Intent, IntentClassifier};

fn intents() -> Vec<Intent> {
    vec![
        Intent::new("book_table", "Reserve a table at the restaurant")
            .with_example("a table for two tonight")
            .with_example("can I book for Saturday at 8"),
        Intent::new("opening_hours", "Ask when the restaurant is open")
            .with_example("are you open on Sunday")
            .with_example("what time do you close"),
        Intent::new("menu_question", "Ask about dishes, allergens or diets")
            .with_example("do you have vegan dishes")
            .with_example("is the soup gluten free"),
    ]
}

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let request = "Could I book a table for four this Friday at 7pm? One of us is vegan.";
    let nlu = AgentLlm::shared(
        Agent::new("nlu", "You classify restaurant requests."),
        common::model(ScriptedProvider::new().then_text(
            r#"{"intents": [
                {"intent": "book_table", "confidence": 0.94, "reasoning": "The user asks to reserve a table.",
                 "entities": [{"name": "party_size", "value": "four"}, {"name": "date", "value": "this Friday"}, {"name": "time", "value": "7pm"}]},
                {"intent": "menu_question", "confidence": 0.41, "reasoning": "A vegan guest implies a question about vegan dishes.",
                 "entities": [{"name": "diet", "value": "vegan"}]}
            ]}"#,
        )),
    );
    let mut llm = IntentClassifier::builder("restaurant-llm")
        .with_llm(nlu)
        .with_top_k(2);
    let mut emb = IntentClassifier::builder("restaurant-embeddings")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_top_k(2);
    for i in intents() {
        llm = llm.with_intent(i.clone());
        emb = emb.with_intent(i);
    }
    let (llm, emb) = (llm.build()?, emb.build()?);

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    println!("\nfinal answer (LLM classifier):");
    for m in llm.classify(request, &ctx).await? {
        let entities: Vec<String> = m
            .entities
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        println!(
            "  {} ({:.2}) {}; entities: {}",
            m.intent,
            m.confidence,
            m.reasoning.unwrap_or_default(),
            entities.join(", ")
        );
    }
    println!("final answer (embedding classifier):");
    for m in emb.classify(request, &ctx).await? {
        println!("  {} ({:.2})", m.intent, m.confidence);
    }
    common::print_steps(&sink);
    Ok(())
}
