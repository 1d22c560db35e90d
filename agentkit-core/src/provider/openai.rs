//! OpenAI Chat Completions provider (in progress).
