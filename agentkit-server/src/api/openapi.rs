//! The OpenAPI document, generated from the handlers and their types.

use utoipa::OpenApi;

use super::{
    agent_protocol as ap, gatewayops as gw, governance, hooks, langgraph as lg, metrics, schedules,
    secrets, servers, tenancy, triggers, v1,
};

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "agentkit", description = "The agentkit agent operations API."),
    paths(
        v1::healthz, v1::readyz,
        v1::list_agents, v1::deploy_agent, v1::get_agent, v1::list_versions, v1::get_version,
        v1::diff_versions, v1::set_label, v1::promote, v1::rollback,
        v1::start_run, v1::list_runs, v1::get_run, v1::run_events, v1::pause_run,
        v1::resume_run, v1::cancel_run, v1::signal_run, v1::approve_run, v1::reject_run,
        v1::replay_run,
        lg::search_assistants, lg::count_assistants, lg::get_assistant, lg::assistant_schemas,
        lg::assistant_graph, lg::create_thread, lg::search_threads, lg::count_threads,
        lg::get_thread, lg::patch_thread, lg::delete_thread, lg::thread_state,
        lg::thread_state_at, lg::thread_state_at_checkpoint, lg::thread_history, lg::copy_thread, lg::create_thread_run,
        lg::list_thread_runs, lg::wait_thread_run, lg::stream_thread_run, lg::get_thread_run,
        lg::join_run, lg::join_stream, lg::cancel_thread_run, lg::delete_thread_run,
        lg::join_thread_stream, lg::create_stateless_run,
        lg::wait_stateless_run, lg::stream_stateless_run, lg::put_item, lg::get_item,
        lg::delete_item, lg::search_items, lg::list_namespaces, lg::create_thread_cron,
        lg::create_cron, lg::update_cron, lg::delete_cron, lg::search_crons, lg::count_crons,
        ap::search_agents, ap::get_agent, ap::agent_schemas, ap::thread_history,
        ap::search_runs, ap::get_run, ap::wait_run, ap::stream_run, ap::cancel_run,
        schedules::list_schedules, schedules::create_schedule, schedules::get_schedule,
        schedules::delete_schedule, schedules::pause_schedule, schedules::resume_schedule,
        schedules::trigger_schedule, schedules::schedule_history,
        hooks::deliver, hooks::deliver_to_workspace, hooks::emit_event,
        hooks::list_webhooks, hooks::create_webhook, hooks::get_webhook, hooks::rotate_webhook,
        hooks::delete_webhook,
        triggers::list_triggers, triggers::create_trigger, triggers::get_trigger,
        triggers::delete_trigger,
        servers::list_servers, servers::list_tools, servers::call_tool,
        metrics::metrics, metrics::realtime,
        tenancy::create_key, tenancy::list_keys, tenancy::revoke_key,
        tenancy::list_workspaces, tenancy::create_workspace,
        governance::list_audit, governance::verify_audit, governance::list_approvals,
        governance::claim_approval, governance::list_budgets, governance::approve_call,
        governance::reject_call,
        secrets::list_secrets, secrets::put_secret, secrets::delete_secret,
        gw::execute, gw::execute_stream, gw::connect, gw::list_tools,
        gw::analyze,
        mcp_post, mcp_get, mcp_delete,
    ),
    components(schemas(super::Problem)),
    modifiers(&Security),
    security(("api_key" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `/mcp`: the Model Context Protocol endpoint (streamable HTTP), documented here so the
/// document lists it; its messages are JSON-RPC, specified by MCP, not by this document.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = Object, description = "a JSON-RPC message of MCP (2025-11-25 sessions with `initialize`, or 2026-07-28 stateless requests)"),
    responses((status = 200, description = "the JSON-RPC answer, as JSON or an SSE stream"),
              (status = 202, description = "a notification or response was accepted"),
              (status = 400, body = super::Problem), (status = 401, body = super::Problem),
              (status = 404, description = "an unknown or ended session")))]
#[allow(dead_code)]
fn mcp_post() {}

/// `/mcp`: a legacy session's stream of server messages (`Mcp-Session-Id`).
#[utoipa::path(get, path = "/mcp", tag = "mcp",
    responses((status = 200, description = "text/event-stream"),
              (status = 401, body = super::Problem),
              (status = 404, description = "an unknown or ended session")))]
#[allow(dead_code)]
fn mcp_get() {}

/// `/mcp`: end a legacy session (`Mcp-Session-Id`).
#[utoipa::path(delete, path = "/mcp", tag = "mcp",
    responses((status = 204, description = "the session ended (or was unknown)"),
              (status = 401, body = super::Problem)))]
#[allow(dead_code)]
fn mcp_delete() {}

/// The document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
