//! [`ModelFactory`]: the provider (and model id) an agent spec runs on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use agentkit_core::config::{
    AgentSpec, AnthropicSettings, Config, GoogleSettings, OpenAiSettings, ProviderKind,
};
use agentkit_core::{
    AnthropicProvider, Error, GeminiProvider, LlmProvider, OpenAiProvider, Result, ScriptedProvider,
};

/// Builds the [`LlmProvider`] each declared agent runs on, from the config's `openai:`,
/// `anthropic:` and `google:` sections (API keys falling back to `OPENAI_API_KEY` /
/// `ANTHROPIC_API_KEY` / `GEMINI_API_KEY` or `GOOGLE_API_KEY`, base URLs to `OPENAI_BASE_URL`
/// / `ANTHROPIC_BASE_URL`).
///
/// Which provider an agent gets:
/// - a model registered with [`with_provider`](Self::with_provider) (exact `model` string):
///   that provider — tests script agents this way;
/// - `model: scripted` (or `scripted:<anything>`, or `provider: scripted`): the offline echo
///   model ([`ScriptedProvider::echo`]), which answers with the user messages it was sent;
/// - `openai:<model>` / `anthropic:<model>` / `google:<model>` (or `gemini:<model>`, or
///   `provider:`): that provider, an error when it has no API key (or, for OpenAI, no base URL
///   of a local server);
/// - otherwise OpenAI when it is configured, else Anthropic, else Gemini, else the echo model.
///
/// One provider of each kind is built on first use and shared by every agent.
///
/// ```
/// use agentkit_core::config::{AgentSpec, Config};
/// use agentkit_server::spec::ModelFactory;
///
/// let models = ModelFactory::from_config_with_env(&Config::new(), &|_| None);
/// assert!(models.is_offline());
/// let (provider, model) = models.provider_for("helper", &AgentSpec::new("gpt-4o-mini", "Be brief."))?;
/// assert_eq!(provider.name(), "echo");
/// assert_eq!(model, None); // the echo model ignores model ids
/// # Ok::<_, agentkit_core::Error>(())
/// ```
///
/// Clones share their built providers (one HTTP client per provider).
#[derive(Clone)]
pub struct ModelFactory {
    openai: OpenAiSettings,
    anthropic: AnthropicSettings,
    google: GoogleSettings,
    overrides: BTreeMap<String, Arc<dyn LlmProvider>>,
    built: Arc<Mutex<BTreeMap<&'static str, Arc<dyn LlmProvider>>>>,
}

impl fmt::Debug for ModelFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFactory")
            .field("openai", &self.has_openai())
            .field("anthropic", &self.has_anthropic())
            .field("google", &self.has_google())
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn set(v: Option<&String>) -> bool {
    v.is_some_and(|v| !v.trim().is_empty())
}

impl ModelFactory {
    /// Providers from `config`, the process environment filling unset keys and base URLs.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self::from_config_with_env(config, &|name| std::env::var(name).ok())
    }

    /// [`from_config`](Self::from_config) reading the environment through `env`.
    #[must_use]
    pub fn from_config_with_env(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            openai: config.openai_settings_with_env(env),
            anthropic: config.anthropic_settings_with_env(env),
            google: config.google_settings_with_env(env),
            overrides: BTreeMap::new(),
            built: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// No provider configured: every agent runs on the echo model (unless registered with
    /// [`with_provider`](Self::with_provider)).
    #[must_use]
    pub fn offline() -> Self {
        Self::from_config_with_env(&Config::new(), &|_| None)
    }

    /// Run agents whose `model` is exactly `model` on `provider` (e.g. a
    /// [`ScriptedProvider`] with a script, registered for `scripted:planner`).
    #[must_use]
    pub fn with_provider(
        mut self,
        model: impl Into<String>,
        provider: Arc<dyn LlmProvider>,
    ) -> Self {
        self.overrides.insert(model.into(), provider);
        self
    }

    fn has_openai(&self) -> bool {
        set(self.openai.api_key.as_ref()) || set(self.openai.base_url.as_ref())
    }

    fn has_anthropic(&self) -> bool {
        set(self.anthropic.api_key.as_ref())
    }

    fn has_google(&self) -> bool {
        set(self.google.api_key.as_ref())
    }

    /// Whether no provider (OpenAI, Anthropic, Gemini) is configured: agents that do not name
    /// a provider run on the offline echo model.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        !self.has_openai() && !self.has_anthropic() && !self.has_google()
    }

    fn shared(
        &self,
        kind: &'static str,
        make: impl FnOnce() -> Result<Arc<dyn LlmProvider>>,
    ) -> Result<Arc<dyn LlmProvider>> {
        let mut built = agentkit_core::sync::lock(&self.built);
        if let Some(p) = built.get(kind) {
            return Ok(Arc::clone(p));
        }
        let p = make()?;
        built.insert(kind, Arc::clone(&p));
        Ok(p)
    }

    fn echo(&self) -> Result<Arc<dyn LlmProvider>> {
        self.shared("scripted", || Ok(Arc::new(ScriptedProvider::echo())))
    }

    /// The provider agent `name` runs on, and the model id to ask it for (`None`: the
    /// provider's default model).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] at `agents.<name>.model` when the agent names a provider that is not
    /// configured, or the provider's settings are unusable.
    pub fn provider_for(
        &self,
        name: &str,
        spec: &AgentSpec,
    ) -> Result<(Arc<dyn LlmProvider>, Option<String>)> {
        if let Some(model) = &spec.model
            && let Some(p) = self.overrides.get(model)
        {
            let (_, id) = spec.provider_and_model();
            return Ok((Arc::clone(p), id.map(str::to_owned)));
        }
        let (kind, model) = spec.provider_and_model();
        let model = model.map(str::to_owned);
        let missing = |what: &str, var: &str, section: &str| Error::Config {
            file: None,
            key: format!("agents.{name}.model"),
            message: format!(
                "agent `{name}` runs on {what}, which has no API key: set `{section}.api_key` \
                 or {var}, or use `model: scripted` to run offline"
            ),
        };
        let kind = match kind {
            Some(k) => k,
            None if self.has_openai() => ProviderKind::Openai,
            None if self.has_anthropic() => ProviderKind::Anthropic,
            None if self.has_google() => ProviderKind::Google,
            None => return Ok((self.echo()?, None)),
        };
        match kind {
            ProviderKind::Openai => {
                if !self.has_openai() {
                    return Err(missing("OpenAI", "OPENAI_API_KEY", "openai"));
                }
                let p = self.shared("openai", || {
                    Ok(Arc::new(OpenAiProvider::from_settings(&self.openai)?))
                })?;
                Ok((p, model))
            }
            ProviderKind::Anthropic => {
                if !self.has_anthropic() {
                    return Err(missing("Anthropic", "ANTHROPIC_API_KEY", "anthropic"));
                }
                let p = self.shared("anthropic", || {
                    Ok(Arc::new(AnthropicProvider::from_settings(&self.anthropic)?))
                })?;
                Ok((p, model))
            }
            ProviderKind::Google => {
                if !self.has_google() {
                    return Err(missing("Gemini", "GEMINI_API_KEY", "google"));
                }
                let p = self.shared("google", || {
                    Ok(Arc::new(GeminiProvider::from_settings(&self.google)?))
                })?;
                Ok((p, model))
            }
            _ => Ok((self.echo()?, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_agents_run_on_the_google_provider() {
        let env = |name: &str| (name == "GEMINI_API_KEY").then(|| "AIza-test".to_owned());
        let models = ModelFactory::from_config_with_env(&Config::new(), &env);
        assert!(!models.is_offline());
        for model in ["gemini:gemini-2.5-pro", "google:gemini-2.5-pro"] {
            let (p, id) = models
                .provider_for("a", &AgentSpec::new(model, "Be brief."))
                .unwrap();
            assert_eq!(p.name(), "google");
            assert_eq!(id.as_deref(), Some("gemini-2.5-pro"));
        }
        // Unprefixed, with only Gemini configured.
        let (p, _) = models
            .provider_for("a", &AgentSpec::new("gemini-2.5-flash", "Be brief."))
            .unwrap();
        assert_eq!(p.name(), "google");

        let err = ModelFactory::offline()
            .provider_for("a", &AgentSpec::new("gemini:gemini-2.5-pro", "x"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("GEMINI_API_KEY"), "{err}");
    }
}
