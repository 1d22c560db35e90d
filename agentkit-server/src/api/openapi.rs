//! The OpenAPI document, generated from the handlers and their types.

use utoipa::OpenApi;

use super::{hooks, schedules, servers, v1};

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
        schedules::list_schedules, schedules::create_schedule, schedules::get_schedule,
        schedules::delete_schedule, schedules::pause_schedule, schedules::resume_schedule,
        schedules::trigger_schedule, schedules::schedule_history,
        hooks::deliver, hooks::emit_event,
        servers::list_servers, servers::list_tools, servers::call_tool,
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

/// The document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
