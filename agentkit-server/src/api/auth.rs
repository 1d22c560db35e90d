//! API-key and bearer-token authentication as a tower layer.
//!
//! Every authenticated route runs behind [`AuthLayer`]: it turns the request's key into a
//! [`Caller`], checks the route's role and the caller's workspace, applies the caller's rate
//! limits, and hands the request on with the caller in its extensions.
//!
//! A key verified in the last few seconds (the common case: a busy client) is checked without
//! waiting and the request goes straight to the route; only a key that must be read from the
//! store, or a token whose workspace must be looked up, waits.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::StatusCode;
use subtle::ConstantTimeEq;

use super::{AppState, Problem, SCOPED_ROUTES, refused, request_key};
use crate::observe::realtime::{ConnectionGuard, Counted};
use crate::tenancy::{Caller, Refusal, Role, TokenRefusal, required_role};

/// The layer that authenticates every request of the routes it wraps (see the module docs).
#[derive(Clone)]
pub(crate) struct AuthLayer {
    state: AppState,
}

impl AuthLayer {
    /// Authenticate against `state`'s admin key, API keys and token verifier.
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            state: self.state.clone(),
            inner,
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    state: AppState,
    inner: S,
}

impl<S> tower::Service<Request> for Authenticate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match identify(&self.state, request.headers()) {
            Identified::Caller(caller) => match admit(&self.state, caller, &mut request) {
                Ok(open) => AuthFuture::Route {
                    future: self.inner.call(request),
                    open: Some(open),
                },
                Err(Refused::Now(refusal)) => AuthFuture::Ready {
                    response: Some(*refusal),
                },
                Err(Refused::Audited(refusal, event)) => {
                    let state = self.state.clone();
                    AuthFuture::Waiting {
                        future: Box::pin(async move { audited(&state, *event, *refusal).await }),
                    }
                }
            },
            Identified::Refused(refusal) => AuthFuture::Ready {
                response: Some(refusal),
            },
            Identified::Later(caller) => {
                // The ready service goes with the request; this one keeps a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let state = self.state.clone();
                AuthFuture::Waiting {
                    future: Box::pin(async move {
                        let caller = match caller.await {
                            Ok(c) => c,
                            Err(refusal) => return refusal,
                        };
                        match admit(&state, caller, &mut request) {
                            Ok(open) => match inner.call(request).await {
                                Ok(response) => counted(response, open),
                                Err(never) => match never {},
                            },
                            Err(Refused::Now(refusal)) => *refusal,
                            Err(Refused::Audited(refusal, event)) => {
                                audited(&state, *event, *refusal).await
                            }
                        }
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Authenticate`].
    #[project = AuthProj]
    pub(crate) enum AuthFuture<F> {
        /// Authenticated at once: the route's own future.
        Route { #[pin] future: F, open: Option<ConnectionGuard> },
        /// Refused at once.
        Ready { response: Option<Response> },
        /// Waiting for the store or the identity provider, then the route.
        Waiting { future: BoxFuture<'static, Response> },
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthProj::Route { future, open } => {
                let Ok(response) = std::task::ready!(future.poll(cx));
                Poll::Ready(Ok(match open.take() {
                    Some(open) => counted(response, open),
                    None => response,
                }))
            }
            AuthProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()))),
            AuthProj::Waiting { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// The response, with the realtime connection count held until its body ends.
fn counted(response: Response, open: ConnectionGuard) -> Response {
    response.map(|body| axum::body::Body::new(Counted::new(body, open)))
}

/// Who a request's key or token names: known at once, refused, or once the store or the
/// identity provider answers.
enum Identified {
    Caller(Caller),
    Refused(Response),
    Later(BoxFuture<'static, Result<Caller, Response>>),
}

/// The caller the request's key or token names (the admin key, an API key, or a bearer JWT).
fn identify(state: &AppState, headers: &http::HeaderMap) -> Identified {
    let Some(presented) = request_key(headers) else {
        return Identified::Refused(refused(
            "send an API key as `Authorization: Bearer <key>` or `x-api-key: <key>` \
             (`agentkit dev` prints the admin key; `AGENTKIT_ADMIN_KEY` sets it; \
             `agentkit keys create` makes workspace keys)",
        ));
    };
    if bool::from(presented.as_bytes().ct_eq(state.admin_key.as_bytes())) {
        return Identified::Caller(Caller::admin());
    }
    if state
        .jwt
        .as_ref()
        .is_some_and(|_| crate::tenancy::JwtVerifier::looks_like_jwt(presented))
    {
        let (state, token) = (state.clone(), presented.to_owned());
        return Identified::Later(Box::pin(async move {
            match state.jwt.as_ref() {
                Some(jwt) => token_caller(&state, jwt, &token).await,
                None => Err(refused("bearer tokens are not accepted by this server")),
            }
        }));
    }
    match state.keys.verify_cached(presented) {
        Some(answer) => match answer {
            Ok(k) => Identified::Caller(Caller::with_key(&k)),
            Err(refusal) => Identified::Refused(key_refused(refusal)),
        },
        None => {
            let (state, key) = (state.clone(), presented.to_owned());
            Identified::Later(Box::pin(async move {
                match state.keys.verify(&key).await {
                    Ok(Ok(k)) => Ok(Caller::with_key(&k)),
                    Ok(Err(refusal)) => Err(key_refused(refusal)),
                    Err(e) => Err(Problem::from(e).into_response()),
                }
            }))
        }
    }
}

/// The answer to a key that is not a live key of this server.
fn key_refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Revoked => {
            refused("this API key was revoked; ask a workspace admin for a new one")
        }
        Refusal::Expired => {
            refused("this API key has expired; ask a workspace admin for a new one")
        }
        Refusal::Unknown => refused(
            "this is not a valid API key of this server (check for a typo, or create one with \
             `agentkit keys create`)",
        ),
    }
}

/// Why [`admit`] refused a request: the answer, and for a refusal the audit log records (a
/// role too low for the route) the entry to record first.
enum Refused {
    Now(Box<Response>),
    Audited(Box<Response>, Box<agentkit_core::policy::AuditEvent>),
}

/// Record `event` (an authorisation refusal) in its workspace's audit log, then answer
/// `refusal`: a refusal the client saw is in the log. A log that cannot be written is logged
/// and the refusal answered anyway.
async fn audited(
    state: &AppState,
    event: agentkit_core::policy::AuditEvent,
    refusal: Response,
) -> Response {
    if let Err(e) = state.audit.record_change(event).await {
        tracing::error!(error = %e, "an authorisation refusal could not be audited");
    }
    refusal
}

/// Check `caller` against its rate limits and the route (its role, keys of other workspaces
/// on unscoped routes, names with the workspace separator); then record who is calling in the
/// request's trace and the realtime connection count, and put the caller in the request. A
/// role too low for the route is refused with an entry in the caller's audit log
/// (`http.forbidden`, outcome `denied`: the method and route, the role it needs and the
/// caller's).
fn admit(
    state: &AppState,
    caller: Caller,
    request: &mut Request,
) -> Result<ConnectionGuard, Refused> {
    // Every authenticated request counts against its limits, refused ones too (so refusals
    // cannot be used to flood the audit log).
    if let Some(res) = state.rate_limits.check(&caller) {
        return Err(Refused::Now(Box::new(res)));
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("", axum::extract::MatchedPath::as_str);
    let needed = required_role(request.method(), route).unwrap_or(Role::Admin);
    if let Err(problem) = caller.require(needed) {
        let shown = if route.is_empty() {
            request.uri().path()
        } else {
            route
        };
        let mut event = agentkit_core::policy::AuditEvent::change(
            "http.forbidden",
            format!("{} {shown}", request.method()),
            serde_json::json!({"needed": needed.as_str(), "role": caller.role.as_str()}),
        )
        .with_principal(
            caller.workspace.org.clone(),
            caller.workspace.workspace.clone(),
            caller.key_id.clone(),
        )
        .with_actor(crate::api::v1::decider(&caller));
        event.outcome = agentkit_core::policy::AuditOutcome::Denied;
        event.reason = format!(
            "the route needs the `{needed}` role; the key has `{}`",
            caller.role
        );
        return Err(Refused::Audited(
            Box::new(problem.into_response()),
            Box::new(event),
        ));
    }
    if !caller.workspace.is_default() && !SCOPED_ROUTES.contains(&route) {
        return Err(Refused::Now(Box::new(
            Problem::not_found(format!(
                "no route {} for keys of workspace {} yet; the routes open to workspace keys \
                 are listed in the README (Tenants and keys)",
                request.uri().path(),
                caller.workspace
            ))
            .into_response(),
        )));
    }
    // Names with the workspace separator never name anything the caller may see.
    let path = request.uri().path();
    if path.contains(crate::tenancy::SEP) || path.contains("%7E") || path.contains("%7e") {
        return Err(Refused::Now(Box::new(
            Problem::not_found(format!("nothing at {path}")).into_response(),
        )));
    }
    let platform = if caller.super_admin {
        "admin".to_owned()
    } else {
        caller.workspace.to_string()
    };
    tracing::Span::current().record("agentkit.workspace", platform.as_str());
    let open = state.metrics.realtime().connect(&platform);
    request.extensions_mut().insert(caller);
    Ok(open)
}

/// The caller a bearer JWT names, or the response refusing it.
async fn token_caller(
    state: &AppState,
    jwt: &crate::tenancy::JwtVerifier,
    token: &str,
) -> Result<Caller, Response> {
    let identity = match jwt.verify(token).await {
        Ok(id) => id,
        Err(TokenRefusal::Invalid(why)) => return Err(refused(&why)),
        Err(TokenRefusal::KeysUnavailable(why)) => {
            tracing::warn!(error = %why, "the identity provider's keys could not be fetched");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity-provider-unavailable",
                "the identity provider's signing keys could not be fetched, so the token \
                 cannot be checked; retry later, or use an API key",
            )
            .into_response());
        }
    };
    match state.workspaces.exists(&identity.workspace).await {
        Ok(true) => Ok(Caller::with_token(&identity)),
        Ok(false) => Err(refused(&format!(
            "the token names workspace {}, which does not exist on this server; an admin \
             creates it with `agentkit workspaces create {}`",
            identity.workspace, identity.workspace
        ))),
        Err(e) => Err(Problem::from(e).into_response()),
    }
}
