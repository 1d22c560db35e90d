//! Structured questions whose answer must name one of a set known only at runtime (a route,
//! an intent, a worker, a rating level).
//!
//! The schema sent to the model is the `schemars` schema of the answer type, made strict
//! (OpenAI structured outputs; a forced tool on Anthropic) and with the known names as an
//! `enum`, so a strict-mode model can only pick a real one. The answer is still validated
//! against the answer type by [`AugmentedLlmExt::generate_structured_with_usage`] (one repair
//! round, then [`Error::StructuredOutput`]); the names are checked by the pattern, which keeps
//! its own clear errors for models without strict mode.

use agentkit_core::{
    AugmentedLlm, AugmentedLlmExt, Error, GenerateRequest, Generation, ResponseFormat, Result,
    RunContext,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// The `format`s OpenAI's strict mode accepts; any other is dropped.
const STRICT_FORMATS: [&str; 9] = [
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// A structured question: the response format (strict schema) to ask it with.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    format: ResponseFormat,
}

impl Question {
    /// The strict schema of `T`, named after `T`.
    pub(crate) fn of<T: JsonSchema>() -> Self {
        Self {
            format: ResponseFormat::new(
                agentkit_core::schema::schema_name::<T>(),
                strict_schema::<T>(),
            )
            .with_strict(true),
        }
    }

    /// Restrict the string at `pointer` (a JSON pointer into the schema) to `names`.
    ///
    /// # Errors
    ///
    /// When the schema has nothing at `pointer` (the answer type changed shape).
    pub(crate) fn with_names<I, S>(mut self, pointer: &str, names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<Value> = names.into_iter().map(|n| Value::String(n.into())).collect();
        let node = self.node(pointer)?;
        let description = node.get("description").cloned();
        let mut restricted = Map::new();
        restricted.insert("type".into(), json!("string"));
        restricted.insert("enum".into(), Value::Array(names));
        if let Some(d) = description {
            restricted.insert("description".into(), d);
        }
        *node = Value::Object(restricted);
        Ok(self)
    }

    /// Bound the array at `pointer` to `min..=max` items (`max` `None`: unbounded).
    ///
    /// # Errors
    ///
    /// When the schema has nothing at `pointer`.
    pub(crate) fn with_items(
        mut self,
        pointer: &str,
        min: usize,
        max: Option<usize>,
    ) -> Result<Self> {
        let Value::Object(node) = self.node(pointer)? else {
            return Err(self.missing(pointer));
        };
        node.insert("minItems".into(), json!(min));
        if let Some(max) = max {
            node.insert("maxItems".into(), json!(max));
        }
        Ok(self)
    }

    /// Replace the schema at `pointer` by a choice (`anyOf`) of `branches`, keeping its
    /// description. Each branch is the original schema with `extra` keywords added.
    ///
    /// # Errors
    ///
    /// When the schema has nothing at `pointer`.
    pub(crate) fn with_branches(mut self, pointer: &str, branches: &[Value]) -> Result<Self> {
        let node = self.node(pointer)?;
        let Value::Object(original) = node.clone() else {
            return Err(self.missing(pointer));
        };
        let mut any_of = Vec::new();
        for extra in branches {
            let mut branch = original.clone();
            if let Value::Object(extra) = extra {
                branch.extend(extra.clone());
            }
            any_of.push(Value::Object(branch));
        }
        let node = self.node(pointer)?;
        *node = json!({ "anyOf": any_of });
        Ok(self)
    }

    /// The schema sent to the model.
    #[cfg(test)]
    pub(crate) fn schema(&self) -> &Value {
        &self.format.schema
    }

    fn node(&mut self, pointer: &str) -> Result<&mut Value> {
        let missing = self.missing(pointer);
        self.format.schema.pointer_mut(pointer).ok_or(missing)
    }

    fn missing(&self, pointer: &str) -> Error {
        Error::InvalidRequest(format!(
            "the schema `{}` has no `{pointer}`; this is a bug in agentkit-patterns",
            self.format.name
        ))
    }

    /// Ask `llm` with this question's response format and parse the answer as `T` (validated
    /// against `T`'s own schema, with one repair round).
    pub(crate) async fn ask<T>(
        &self,
        llm: &dyn AugmentedLlm,
        request: GenerateRequest,
        ctx: &RunContext,
    ) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned + Send,
    {
        let asked = Formatted {
            llm,
            format: &self.format,
        };
        Ok(asked
            .generate_structured_with_usage::<T>(request, ctx)
            .await?
            .0)
    }
}

/// `llm`, asked with `format` as its response format (including in the repair round).
struct Formatted<'a> {
    llm: &'a dyn AugmentedLlm,
    format: &'a ResponseFormat,
}

#[async_trait]
impl AugmentedLlm for Formatted<'_> {
    fn name(&self) -> &str {
        self.llm.name()
    }

    fn description(&self) -> &str {
        self.llm.description()
    }

    async fn generate(&self, mut request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        request.params.response_format = Some(self.format.clone());
        self.llm.generate(request, ctx).await
    }
}

/// The JSON schema of `T` with every subschema inlined, made strict: every object lists all
/// its properties as required and allows no others; `default`s and the `format`s strict mode
/// does not know are dropped; `oneOf` becomes `anyOf` (strict mode has only `anyOf`).
pub(crate) fn strict_schema<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(root) = &mut schema {
        root.remove("$schema");
        root.remove("title");
    }
    make_strict(&mut schema);
    schema
}

fn make_strict(schema: &mut Value) {
    let Value::Object(node) = schema else {
        return;
    };
    node.remove("default");
    if node
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STRICT_FORMATS.contains(&f))
    {
        node.remove("format");
    }
    if let Some(one_of) = node.remove("oneOf") {
        node.insert("anyOf".into(), one_of);
    }
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        let names: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
        properties.values_mut().for_each(make_strict);
        node.insert("required".into(), Value::Array(names));
        node.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["items", "not", "additionalProperties"] {
        if let Some(sub) = node.get_mut(key) {
            make_strict(sub);
        }
    }
    for key in ["anyOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(subs)) = node.get_mut(key) {
            subs.iter_mut().for_each(make_strict);
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = node.get_mut(key) {
            defs.values_mut().for_each(make_strict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        /// The pick.
        pick: String,
        /// A default.
        #[serde(default)]
        default: Vec<u32>,
    }

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Outer {
        /// Inner values.
        inners: Vec<Inner>,
        score: f64,
        note: Option<String>,
    }

    #[test]
    fn strict_schemas_require_everything_and_inline_subschemas() {
        let s = strict_schema::<Outer>();
        assert!(s.get("$defs").is_none(), "{s}");
        assert!(s.get("$schema").is_none());
        assert_eq!(s["additionalProperties"], false);
        // (serde_json keeps object keys sorted.)
        assert_eq!(s["required"], json!(["inners", "note", "score"]));
        let inner = &s["properties"]["inners"]["items"];
        assert_eq!(inner["required"], json!(["default", "pick"]));
        assert_eq!(inner["additionalProperties"], false);
        // A property named `default` is a property, not the `default` keyword.
        assert!(inner["properties"]["default"].is_object());
        assert!(inner["properties"]["default"].get("default").is_none());
        assert!(
            inner["properties"]["default"]["items"]
                .get("format")
                .is_none()
        );
        assert!(s["properties"]["score"].get("format").is_none());
    }

    #[test]
    fn names_become_an_enum_and_a_wrong_pointer_is_an_error() {
        let q = Question::of::<Outer>()
            .with_names("/properties/inners/items/properties/pick", ["a", "b"])
            .unwrap()
            .with_items("/properties/inners", 1, Some(2))
            .unwrap();
        let pick = &q.schema()["properties"]["inners"]["items"]["properties"]["pick"];
        assert_eq!(pick["enum"], json!(["a", "b"]));
        assert_eq!(pick["description"], "The pick.");
        assert_eq!(q.schema()["properties"]["inners"]["minItems"], 1);
        assert_eq!(q.schema()["properties"]["inners"]["maxItems"], 2);
        assert!(q.format.strict);
        let err = Question::of::<Outer>()
            .with_names("/properties/nope", ["a"])
            .unwrap_err();
        assert!(err.to_string().contains("`/properties/nope`"), "{err}");
    }
}
