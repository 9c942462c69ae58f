//! The chat completion request body palate sends: OpenAI's fields plus vLLM's `priority`,
//! serialised from borrowed fields without building a JSON tree first.

use serde::Serialize;
use serde_json::Value;

use super::ChatRequest;
use crate::plan::Message;

/// A chat completion request as vLLM reads it: OpenAI's fields plus `priority`.
#[derive(Serialize)]
pub(super) struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    stream_options: StreamOptions,
    max_tokens: u32,
    temperature: f32,
    seed: u32,
    response_format: ResponseFormat<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    r#type: &'static str,
    json_schema: JsonSchema<'a>,
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: &'static str,
    schema: &'a Value,
    strict: bool,
}

impl<'a> Body<'a> {
    pub(super) fn new(
        req: &'a ChatRequest,
        model: &'a str,
        temperature: f32,
        priority: Option<i64>,
    ) -> Self {
        Body {
            model,
            messages: &req.messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: req.max_tokens,
            temperature,
            seed: req.attempt,
            response_format: ResponseFormat {
                r#type: "json_schema",
                json_schema: JsonSchema {
                    name: req.kind.as_str(),
                    schema: &req.schema,
                    strict: true,
                },
            },
            priority,
        }
    }
}
