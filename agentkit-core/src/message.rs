//! One message model for every provider; providers translate to and from their wire formats.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// System instructions (most providers take these apart from the messages).
    System,
    /// The user, or the application acting for them.
    User,
    /// The model.
    Assistant,
    /// Results of tool calls, answering the assistant's [`Content::ToolCall`]s.
    Tool,
}

/// Image bytes or a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageData {
    /// Base64-encoded image bytes.
    Base64(String),
    /// A URL the provider fetches.
    Url(String),
}

/// One block of message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image {
        /// MIME type, e.g. `image/png`.
        mime_type: String,
        /// The bytes or URL.
        data: ImageData,
    },
    /// The model asks for a tool to be called.
    ToolCall {
        /// Call id, echoed by the matching [`Content::ToolResult`].
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (a JSON object).
        arguments: Value,
    },
    /// The result of a tool call.
    ToolResult {
        /// The id of the [`Content::ToolCall`] this answers.
        call_id: String,
        /// What the tool returned.
        content: Vec<Content>,
        /// Whether the tool ran and failed.
        #[serde(default)]
        is_error: bool,
    },
    /// An embedded resource (as MCP resources are).
    Resource {
        /// Resource URI.
        uri: String,
        /// MIME type, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// Text contents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Base64 contents for binary resources.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blob: Option<String>,
    },
    /// Data that only the wire format which produced it can read, kept in the conversation so
    /// it goes back to the model on the next turn: an OpenAI Responses reasoning item (with its
    /// `encrypted_content`), a Gemini thought signature. The agent loop keeps it like any other
    /// block of the assistant's message; providers of another format skip it, and it has no
    /// text.
    ProviderData {
        /// The wire format that produced it and reads it back: `openai.responses` or `gemini`.
        format: String,
        /// The data, as the provider sent it.
        data: Value,
    },
}

impl Content {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// A base64 image block.
    pub fn image_base64(mime_type: impl Into<String>, data: impl Into<String>) -> Self {
        Self::Image {
            mime_type: mime_type.into(),
            data: ImageData::Base64(data.into()),
        }
    }

    /// An image fetched from a URL.
    pub fn image_url(mime_type: impl Into<String>, url: impl Into<String>) -> Self {
        Self::Image {
            mime_type: mime_type.into(),
            data: ImageData::Url(url.into()),
        }
    }

    /// A tool call block.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }

    /// A tool result block.
    pub fn tool_result(call_id: impl Into<String>, content: Vec<Content>, is_error: bool) -> Self {
        Self::ToolResult {
            call_id: call_id.into(),
            content,
            is_error,
        }
    }

    /// A text resource block.
    pub fn resource_text(uri: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Resource {
            uri: uri.into(),
            mime_type: None,
            text: Some(text.into()),
            blob: None,
        }
    }

    /// A block of provider data; see [`Content::ProviderData`].
    pub fn provider_data(format: impl Into<String>, data: Value) -> Self {
        Self::ProviderData {
            format: format.into(),
            data,
        }
    }

    /// The text of a text block.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text { text } => Some(text),
            _ => None,
        }
    }
}

/// A message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content blocks, in order.
    pub content: Vec<Content>,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: Role, content: Vec<Content>) -> Self {
        Self { role, content }
    }

    /// A user text message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, vec![Content::text(text)])
    }

    /// An assistant text message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, vec![Content::text(text)])
    }

    /// A system text message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, vec![Content::text(text)])
    }

    /// A tool-results message.
    pub fn tool_results(results: Vec<Content>) -> Self {
        Self::new(Role::Tool, results)
    }

    /// Append a content block.
    #[must_use]
    pub fn with_content(mut self, content: Content) -> Self {
        self.content.push(content);
        self
    }

    /// All text blocks joined with newlines (empty if there are none).
    #[must_use]
    pub fn text(&self) -> String {
        join_text(&self.content)
    }

    /// The tool calls in this message, as `(id, name, arguments)`.
    pub fn tool_calls(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|c| match c {
            Content::ToolCall {
                id,
                name,
                arguments,
            } => Some((id.as_str(), name.as_str(), arguments)),
            _ => None,
        })
    }

    /// Whether the message asks for any tool call.
    #[must_use]
    pub fn has_tool_calls(&self) -> bool {
        self.tool_calls().next().is_some()
    }
}

/// Join the text blocks of `content` with newlines; resources contribute their text.
#[must_use]
pub fn join_text(content: &[Content]) -> String {
    let mut out = String::new();
    for c in content {
        let piece = match c {
            Content::Text { text } => text.as_str(),
            Content::Resource {
                text: Some(text), ..
            } => text.as_str(),
            _ => continue,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_round_trips_through_json() {
        let m = Message::new(
            Role::Assistant,
            vec![
                Content::text("hi"),
                Content::tool_call("c1", "add", json!({"a": 1})),
            ],
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["content"][1]["type"], "tool_call");
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.tool_calls().count(), 1);
        assert_eq!(back.text(), "hi");
    }
}
