//! A scripted stand-in for two model providers' HTTP APIs, OpenAI chat completions and
//! Anthropic Messages, served on loopback for integration tests.
//!
//! It speaks the providers' real wire formats (SSE included) because the node-agent's client
//! (`genai`) parses them. What it answers is chosen by `[[...]]` directives in the request's
//! last user text, so tests running side by side never steer one another:
//!
//! ```text
//! [[delay:MS]] [[first:MS]] [[say:TEXT]] [[long:N]] [[status:CODE:N]]
//! [[cut:K]] [[hang]] [[tool:NAME]] [[call:TOOL:JSON]] [[summarize]]
//! ```
//!
//! `[[tool:NAME]]` calls `read_file` on NAME; `[[call:TOOL:JSON]]` calls any tool with the
//! JSON arguments; either way the next turn answers `tool said: ` and the result's head.
//!
//! Without directives the reply is `echo: ` followed by the user text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::sleep;

/// The function `[[tool:NAME]]` asks the client to call.
const TOOL_NAME: &str = "read_file";
/// Compared in lower case: compaction prompts are not consistent about capitals.
const SUMMARY_PHRASE: &str = "summarize the conversation";
/// Characters per streamed text piece.
const TEXT_PIECE: usize = 4;
/// Characters per streamed piece of tool-call arguments.
const ARGS_PIECE: usize = 8;

/// One piece of a response body, or the error that tears the connection down.
type Chunk = Result<Bytes, std::io::Error>;

/// Which provider API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn auth_header(self) -> &'static str {
        match self {
            Api::OpenAi => "authorization",
            Api::Anthropic => "x-api-key",
        }
    }
}

/// A request as the double saw it, with the parts tests ask about pulled out.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub api: Api,
    /// `authorization` (OpenAI) or `x-api-key` (Anthropic).
    pub auth: Option<String>,
    /// The parsed request JSON (`null` when the body was not a JSON object).
    pub body: Value,
    pub system: String,
    /// Text of the last user message that has text (tool-result-only messages are skipped).
    pub last_user: String,
    pub tool_results: Vec<String>,
    pub message_count: usize,
}

impl RecordedRequest {
    fn from_body(api: Api, auth: Option<String>, body: Value) -> RecordedRequest {
        let msgs = messages(&body);
        let system = system_text(api, &body);
        let last_user = last_user_text(msgs);
        let tool_results = tool_results(api, msgs);
        let message_count = msgs.len();
        RecordedRequest {
            api,
            auth,
            body,
            system,
            last_user,
            tool_results,
            message_count,
        }
    }
}

/// The running double; dropping it stops the server.
pub struct ModelDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl ModelDouble {
    /// Starts the server; returns once it is listening.
    pub async fn start() -> ModelDouble {
        let shared = Arc::new(Shared::default());
        let (addr, server) = crate::serve_double("model double", router(shared.clone())).await;
        ModelDouble {
            addr,
            shared,
            server,
        }
    }

    /// Base URL for OpenAI-compatible clients, e.g. `http://127.0.0.1:PORT/v1/`.
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1/", self.addr)
    }

    /// Base URL for Anthropic clients, e.g. `http://127.0.0.1:PORT/anthropic/v1/`.
    pub fn anthropic_base(&self) -> String {
        format!("http://{}/anthropic/v1/", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().clone()
    }

    /// The first request whose last user text is `text` (panics when there is none).
    pub fn request_for(&self, text: &str) -> RecordedRequest {
        self.requests()
            .into_iter()
            .find(|r| r.last_user == text)
            .unwrap_or_else(|| panic!("no model request ended with the user text {text:?}"))
    }

    /// Number of requests received whose last user text contains `needle`.
    pub fn count_matching(&self, needle: &str) -> usize {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| r.last_user.contains(needle))
            .count()
    }
}

impl Drop for ModelDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    /// How many scripted failures each last-user text has had, for `[[status:CODE:N]]`.
    failures: Mutex<HashMap<String, usize>>,
    next_id: AtomicU64,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        self.requests.lock().push(request);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether this request is among the first `times` with its text, which must fail.
    fn take_failure(&self, last_user: &str, times: usize) -> bool {
        let mut failures = self.failures.lock();
        let served = failures.entry(last_user.to_owned()).or_insert(0);
        if *served < times {
            *served += 1;
            true
        } else {
            false
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/models", get(openai_models))
        .route("/anthropic/v1/messages", post(anthropic_messages))
        .fallback(not_found)
        // Providers take requests far over axum's 2 MB default (a long conversation with
        // attachments); the double must not refuse what they would accept.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

async fn openai_chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, Api::OpenAi, &headers, &body).await
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, Api::Anthropic, &headers, &body).await
}

async fn openai_models() -> Response {
    let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "double"});
    let list = json!({"object": "list", "data": [model("double-model"), model("double-mini")]});
    json_response(StatusCode::OK, &list)
}

async fn not_found(uri: Uri) -> Response {
    let api = if uri.path().starts_with("/anthropic/") {
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    let message = format!("no such endpoint: {}", uri.path());
    error_response(api, StatusCode::NOT_FOUND, "not_found_error", &message)
}

/// Records the request, then plays out whatever its directives ask for.
async fn answer(shared: &Shared, api: Api, headers: &HeaderMap, raw: &[u8]) -> Response {
    let auth = headers
        .get(api.auth_header())
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match serde_json::from_slice::<Value>(raw) {
        Ok(body) if body.is_object() => body,
        Ok(_) => return reject(shared, api, auth, "request body must be a JSON object"),
        Err(err) => return reject(shared, api, auth, &format!("invalid JSON body: {err}")),
    };
    let request = RecordedRequest::from_body(api, auth, body);
    shared.record(request.clone());

    let script = Script::parse(&request.last_user);
    if let Some(wait) = script.first {
        sleep(wait).await;
    }
    if let Some((code, times)) = script.status {
        if shared.take_failure(&request.last_user, times) {
            return scripted_error(api, code);
        }
    }
    let reply = Reply::choose(&request, &script);
    let ctx = Ctx::new(shared.next_id(), &request, &reply);
    if ctx.stream {
        stream_reply(api, &ctx, &reply, &script)
    } else {
        whole_reply(api, &ctx, &reply, &script).await
    }
}

/// Even an unreadable request is recorded, so tests can count every request made.
fn reject(shared: &Shared, api: Api, auth: Option<String>, message: &str) -> Response {
    shared.record(RecordedRequest::from_body(api, auth, Value::Null));
    error_response(
        api,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
    )
}

fn scripted_error(api: Api, code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limit_error"
    } else {
        match api {
            Api::OpenAi => "server_error",
            Api::Anthropic => "api_error",
        }
    };
    error_response(api, status, kind, &format!("scripted failure ({code})"))
}

fn error_response(api: Api, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match api {
        Api::OpenAi => json!({"error": {"message": message, "type": kind, "code": null}}),
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    let mut response = json_response(status, &body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        // Lets a retrying client come straight back instead of stalling the test.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Scripting

/// One `[[name:arg]]` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    name: String,
    arg: Option<String>,
}

impl Directive {
    fn parse(inner: &str) -> Directive {
        match inner.split_once(':') {
            Some((name, arg)) => Directive {
                name: name.trim().to_owned(),
                arg: Some(arg.to_owned()),
            },
            None => Directive {
                name: inner.trim().to_owned(),
                arg: None,
            },
        }
    }
}

/// Splits `text` into its directives and the text left once they are removed (trimmed).
/// An unclosed `[[` is ordinary text.
fn split_directives(text: &str) -> (Vec<Directive>, String) {
    let mut directives = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("[[") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("]]") else {
            break;
        };
        plain.push_str(&rest[..open]);
        directives.push(Directive::parse(&after[..close]));
        rest = &after[close + 2..];
    }
    plain.push_str(rest);
    (directives, plain.trim().to_owned())
}

/// What one request's directives ask for. Malformed arguments leave a field unset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Script {
    /// The last user text without directives.
    text: String,
    delay: Option<Duration>,
    first: Option<Duration>,
    say: Option<String>,
    long: Option<usize>,
    /// HTTP code and how many requests get it.
    status: Option<(u16, usize)>,
    cut: Option<usize>,
    hang: bool,
    /// The tool to call and its arguments.
    tool: Option<(String, Value)>,
    summarize: bool,
}

impl Script {
    fn parse(last_user: &str) -> Script {
        let (directives, text) = split_directives(last_user);
        let mut script = Script {
            text,
            ..Script::default()
        };
        for directive in &directives {
            script.apply(directive);
        }
        script
    }

    fn apply(&mut self, directive: &Directive) {
        let arg = directive.arg.as_deref();
        match directive.name.as_str() {
            "delay" => self.delay = millis(arg),
            "first" => self.first = millis(arg),
            "say" => self.say = Some(arg.unwrap_or_default().to_owned()),
            "long" => self.long = number(arg),
            "status" => self.status = arg.and_then(parse_status),
            "cut" => self.cut = number(arg),
            "hang" => self.hang = true,
            "tool" => {
                self.tool = arg.map(|name| (TOOL_NAME.to_owned(), json!({"name": name.trim()})))
            }
            "call" => {
                self.tool = arg.and_then(|arg| {
                    let (tool, args) = arg.split_once(':')?;
                    Some((tool.trim().to_owned(), serde_json::from_str(args).ok()?))
                })
            }
            "summarize" => self.summarize = true,
            _ => {}
        }
    }
}

fn number(arg: Option<&str>) -> Option<usize> {
    arg?.trim().parse().ok()
}

fn millis(arg: Option<&str>) -> Option<Duration> {
    let ms: u64 = arg?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// `CODE:N`; a bare `CODE` fails every request.
fn parse_status(arg: &str) -> Option<(u16, usize)> {
    let (code, times) = match arg.split_once(':') {
        Some((code, times)) => (code, times.trim().parse().ok()?),
        None => (arg, usize::MAX),
    };
    Some((code.trim().parse().ok()?, times))
}

/// What the assistant says back.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Text(String),
    /// A call to this tool with these arguments.
    ToolCall(String, Value),
}

impl Reply {
    fn choose(request: &RecordedRequest, script: &Script) -> Reply {
        if script.summarize || asks_for_summary(request) {
            return Reply::Text(format!("SUMMARY({})", request.message_count));
        }
        if let Some((tool, args)) = &script.tool {
            return match request.tool_results.last() {
                None => Reply::ToolCall(tool.clone(), args.clone()),
                Some(result) => {
                    let head: String = result.chars().take(200).collect();
                    Reply::Text(format!("tool said: {head}"))
                }
            };
        }
        if let Some(text) = &script.say {
            return Reply::Text(text.clone());
        }
        if let Some(times) = script.long {
            return Reply::Text("lorem ".repeat(times));
        }
        Reply::Text(format!("echo: {}", script.text))
    }

    /// The text as it goes on the wire: the reply, or the JSON arguments of the call.
    fn wire_text(&self) -> String {
        match self {
            Reply::Text(text) => text.clone(),
            Reply::ToolCall(_, input) => input.to_string(),
        }
    }

    fn pieces(&self) -> Vec<String> {
        let size = match self {
            Reply::Text(_) => TEXT_PIECE,
            Reply::ToolCall(..) => ARGS_PIECE,
        };
        split_chars(&self.wire_text(), size)
    }

    fn openai_finish(&self) -> &'static str {
        match self {
            Reply::Text(_) => "stop",
            Reply::ToolCall(..) => "tool_calls",
        }
    }

    fn anthropic_stop(&self) -> &'static str {
        match self {
            Reply::Text(_) => "end_turn",
            Reply::ToolCall(..) => "tool_use",
        }
    }
}

fn asks_for_summary(request: &RecordedRequest) -> bool {
    request.system.to_lowercase().contains(SUMMARY_PHRASE)
        || request.last_user.to_lowercase().contains(SUMMARY_PHRASE)
}

/// Pieces of at most `max` characters, never splitting a character.
fn split_chars(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(max.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading requests

fn messages(body: &Value) -> &[Value] {
    body.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn role(message: &Value) -> &str {
    message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_text_part(part: &Value) -> bool {
    matches!(
        part.get("type").and_then(Value::as_str),
        None | Some("text")
    )
}

/// Text of a content value: a plain string, or the text parts of an array of parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| is_text_part(part))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn has_text(content: &Value) -> bool {
    match content {
        Value::String(_) => true,
        Value::Array(parts) => parts
            .iter()
            .any(|part| is_text_part(part) && part.get("text").is_some_and(Value::is_string)),
        _ => false,
    }
}

fn system_text(api: Api, body: &Value) -> String {
    match api {
        Api::OpenAi => messages(body)
            .iter()
            .filter(|m| matches!(role(m), "system" | "developer"))
            .filter_map(|m| m.get("content"))
            .map(content_text)
            .collect::<Vec<_>>()
            .join("\n"),
        Api::Anthropic => body.get("system").map(content_text).unwrap_or_default(),
    }
}

fn last_user_text(msgs: &[Value]) -> String {
    msgs.iter()
        .rev()
        .filter(|m| role(m) == "user")
        .find_map(|m| m.get("content").filter(|c| has_text(c)).map(content_text))
        .unwrap_or_default()
}

fn tool_results(api: Api, msgs: &[Value]) -> Vec<String> {
    match api {
        Api::OpenAi => msgs
            .iter()
            .filter(|m| role(m) == "tool")
            .map(|m| m.get("content").map(content_text).unwrap_or_default())
            .collect(),
        Api::Anthropic => msgs
            .iter()
            .filter(|m| role(m) == "user")
            .filter_map(|m| m.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|block| block.get("content").map(content_text).unwrap_or_default())
            .collect(),
    }
}

fn prompt_chars(request: &RecordedRequest) -> usize {
    let in_messages: usize = messages(&request.body)
        .iter()
        .map(|m| {
            m.get("content")
                .map(content_text)
                .unwrap_or_default()
                .chars()
                .count()
        })
        .sum();
    match request.api {
        Api::OpenAi => in_messages,
        // Anthropic keeps the system prompt and tool results outside plain message text.
        Api::Anthropic => {
            let results: usize = request.tool_results.iter().map(|t| t.chars().count()).sum();
            in_messages + request.system.chars().count() + results
        }
    }
}

/// A rough token count: four characters each, never zero.
fn tokens(chars: usize) -> usize {
    chars.div_ceil(4).max(1)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Writing responses

/// What every part of one response shares.
struct Ctx {
    n: u64,
    model: String,
    created: u64,
    prompt_tokens: usize,
    completion_tokens: usize,
    stream: bool,
    include_usage: bool,
}

impl Ctx {
    fn new(n: u64, request: &RecordedRequest, reply: &Reply) -> Ctx {
        let body = &request.body;
        Ctx {
            n,
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("double-model")
                .to_owned(),
            created: unix_now(),
            prompt_tokens: tokens(prompt_chars(request)),
            completion_tokens: tokens(reply.wire_text().chars().count()),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// The fields every OpenAI chunk or completion carries.
    fn openai_envelope(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": format!("chatcmpl-double-{}", self.n),
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// A response body in three parts: `body` holds the content pieces, which are the ones
/// paced, cut and hung on.
struct Frames {
    head: Vec<Bytes>,
    body: Vec<Bytes>,
    tail: Vec<Bytes>,
}

struct Pacing {
    delay: Option<Duration>,
    cut: Option<usize>,
    hang: bool,
}

fn sse_data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Anthropic names each event after its data's `type`.
fn sse_event(data: &Value) -> Bytes {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn openai_chunk(ctx: &Ctx, delta: Value, finish: Option<&str>) -> Bytes {
    let choices = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
    sse_data(&ctx.openai_envelope("chat.completion.chunk", choices))
}

fn openai_stream(ctx: &Ctx, reply: &Reply) -> Frames {
    let mut head = vec![openai_chunk(
        ctx,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    let pieces = reply.pieces();
    let body: Vec<Bytes> = match reply {
        Reply::Text(_) => pieces
            .iter()
            .map(|p| openai_chunk(ctx, json!({"content": p}), None))
            .collect(),
        Reply::ToolCall(tool, _) => {
            let call = json!({
                "index": 0,
                "id": format!("call_{}", ctx.n),
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            });
            head.push(openai_chunk(ctx, json!({"tool_calls": [call]}), None));
            pieces
                .iter()
                .map(|p| {
                    let part = json!({"index": 0, "function": {"arguments": p}});
                    openai_chunk(ctx, json!({"tool_calls": [part]}), None)
                })
                .collect()
        }
    };
    let mut tail = vec![openai_chunk(ctx, json!({}), Some(reply.openai_finish()))];
    if ctx.include_usage {
        let mut usage = ctx.openai_envelope("chat.completion.chunk", json!([]));
        usage["usage"] = ctx.openai_usage();
        tail.push(sse_data(&usage));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Frames { head, body, tail }
}

fn anthropic_stream(ctx: &Ctx, reply: &Reply) -> Frames {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_double_{}", ctx.n),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": 1},
        },
    });
    let block = match reply {
        Reply::Text(_) => json!({"type": "text", "text": ""}),
        Reply::ToolCall(tool, _) => json!({
            "type": "tool_use",
            "id": format!("toolu_{}", ctx.n),
            "name": tool,
            "input": {},
        }),
    };
    let head = vec![
        sse_event(&start),
        sse_event(&json!({"type": "ping"})),
        sse_event(&json!({"type": "content_block_start", "index": 0, "content_block": block})),
    ];
    let body = reply
        .pieces()
        .iter()
        .map(|p| {
            let delta = match reply {
                Reply::Text(_) => json!({"type": "text_delta", "text": p}),
                Reply::ToolCall(..) => json!({"type": "input_json_delta", "partial_json": p}),
            };
            sse_event(&json!({"type": "content_block_delta", "index": 0, "delta": delta}))
        })
        .collect();
    let end = json!({
        "type": "message_delta",
        "delta": {"stop_reason": reply.anthropic_stop(), "stop_sequence": null},
        "usage": {"output_tokens": ctx.completion_tokens},
    });
    let tail = vec![
        sse_event(&json!({"type": "content_block_stop", "index": 0})),
        sse_event(&end),
        sse_event(&json!({"type": "message_stop"})),
    ];
    Frames { head, body, tail }
}

fn openai_whole(ctx: &Ctx, reply: &Reply) -> Value {
    let message = match reply {
        Reply::Text(text) => json!({"role": "assistant", "content": text}),
        Reply::ToolCall(tool, input) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": format!("call_{}", ctx.n),
                "type": "function",
                "function": {"name": tool, "arguments": input.to_string()},
            }],
        }),
    };
    let choices = json!([{
        "index": 0,
        "message": message,
        "logprobs": null,
        "finish_reason": reply.openai_finish(),
    }]);
    let mut completion = ctx.openai_envelope("chat.completion", choices);
    completion["usage"] = ctx.openai_usage();
    completion
}

fn anthropic_whole(ctx: &Ctx, reply: &Reply) -> Value {
    let content = match reply {
        Reply::Text(text) => json!([{"type": "text", "text": text}]),
        Reply::ToolCall(tool, input) => json!([{
            "type": "tool_use",
            "id": format!("toolu_{}", ctx.n),
            "name": tool,
            "input": input,
        }]),
    };
    json!({
        "id": format!("msg_double_{}", ctx.n),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": reply.anthropic_stop(),
        "stop_sequence": null,
        "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": ctx.completion_tokens},
    })
}

fn stream_reply(api: Api, ctx: &Ctx, reply: &Reply, script: &Script) -> Response {
    let frames = match api {
        Api::OpenAi => openai_stream(ctx, reply),
        Api::Anthropic => anthropic_stream(ctx, reply),
    };
    let pacing = Pacing {
        delay: script.delay,
        cut: script.cut,
        hang: script.hang,
    };
    body_response("text/event-stream", frames, pacing)
}

async fn whole_reply(api: Api, ctx: &Ctx, reply: &Reply, script: &Script) -> Response {
    // A whole answer takes as long as its streamed pieces would have.
    if let Some(delay) = script.delay {
        let pieces = u32::try_from(reply.pieces().len()).unwrap_or(u32::MAX);
        sleep(delay.saturating_mul(pieces)).await;
    }
    let body = match api {
        Api::OpenAi => openai_whole(ctx, reply),
        Api::Anthropic => anthropic_whole(ctx, reply),
    };
    if script.cut.is_none() && !script.hang {
        return json_response(StatusCode::OK, &body);
    }
    // Sent in two halves so a cut or hang leaves the client holding half a document.
    let bytes = Bytes::from(body.to_string());
    let half = bytes.len() / 2;
    let frames = Frames {
        head: Vec::new(),
        body: vec![bytes.slice(..half), bytes.slice(half..)],
        tail: Vec::new(),
    };
    let pacing = Pacing {
        delay: None,
        cut: script.cut,
        hang: script.hang,
    };
    body_response("application/json", frames, pacing)
}

/// A response whose body is fed by a task, so it can be paced, cut or left hanging.
fn body_response(content_type: &'static str, frames: Frames, pacing: Pacing) -> Response {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    tokio::spawn(pump(tx, frames, pacing));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Feeds `frames` into the body; stops quietly once the client has gone.
async fn pump(tx: mpsc::Sender<Chunk>, frames: Frames, pacing: Pacing) {
    for frame in frames.head {
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
    }
    for (index, frame) in frames.body.into_iter().enumerate() {
        if pacing.cut == Some(index) {
            return cut(&tx).await;
        }
        if pacing.hang && index == 1 {
            return wait_for_close(&tx).await;
        }
        if let Some(delay) = pacing.delay {
            sleep(delay).await;
        }
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
    }
    // A cut or hang past the last piece still leaves the response unfinished.
    if pacing.cut.is_some() {
        return cut(&tx).await;
    }
    if pacing.hang {
        return wait_for_close(&tx).await;
    }
    for frame in frames.tail {
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
    }
}

/// Ends the body with an error, which makes the server drop the connection mid-response.
async fn cut(tx: &mpsc::Sender<Chunk>) {
    // Give the server a moment to flush what was sent: an error right behind the data
    // can tear the connection down before it is written.
    sleep(Duration::from_millis(50)).await;
    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
}

/// Sends nothing more, for as long as the client keeps the response open.
async fn wait_for_close(tx: &mpsc::Sender<Chunk>) {
    while !tx.is_closed() {
        sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(name: &str, arg: Option<&str>) -> Directive {
        Directive {
            name: name.to_owned(),
            arg: arg.map(str::to_owned),
        }
    }

    #[test]
    fn plain_text_has_no_directives() {
        let (directives, text) = split_directives("  hello world ");
        assert!(directives.is_empty());
        assert_eq!(text, "hello world");
    }

    #[test]
    fn directives_are_stripped_and_text_trimmed() {
        let (directives, text) = split_directives("[[delay:5]] hello [[hang]] world ");
        assert_eq!(
            directives,
            vec![directive("delay", Some("5")), directive("hang", None)]
        );
        assert_eq!(text, "hello  world");
    }

    #[test]
    fn argument_runs_to_the_first_closing_brackets_and_keeps_colons() {
        let (directives, text) = split_directives("[[say:a: b]]c]]");
        assert_eq!(directives, vec![directive("say", Some("a: b"))]);
        assert_eq!(text, "c]]");
    }

    #[test]
    fn unclosed_directive_is_text() {
        let (directives, text) = split_directives("hi [[delay:5");
        assert!(directives.is_empty());
        assert_eq!(text, "hi [[delay:5");
    }

    #[test]
    fn script_reads_every_directive() {
        let script = Script::parse(
            "go [[delay:10]][[first:20]][[say:x:y]][[long:3]][[status:429:2]]\
             [[cut:4]][[hang]][[tool:notes.md]][[summarize]]",
        );
        let expected = Script {
            text: "go".to_owned(),
            delay: Some(Duration::from_millis(10)),
            first: Some(Duration::from_millis(20)),
            say: Some("x:y".to_owned()),
            long: Some(3),
            status: Some((429, 2)),
            cut: Some(4),
            hang: true,
            tool: Some((TOOL_NAME.to_owned(), json!({"name": "notes.md"}))),
            summarize: true,
        };
        assert_eq!(script, expected);
        let call = Script::parse(r#"find it [[call:knowledge_search:{"query":"x"}]]"#);
        assert_eq!(
            call.tool,
            Some(("knowledge_search".to_owned(), json!({"query": "x"})))
        );
    }

    #[test]
    fn unknown_and_malformed_directives_are_stripped_and_ignored() {
        let script = Script::parse("[[bogus:1]] x [[delay:abc]][[status:oops:1]][[cut]]");
        let expected = Script {
            text: "x".to_owned(),
            ..Script::default()
        };
        assert_eq!(script, expected);
    }

    #[test]
    fn status_without_a_count_fails_every_time() {
        assert_eq!(parse_status("500"), Some((500, usize::MAX)));
        assert_eq!(parse_status(" 429 : 3 "), Some((429, 3)));
        assert_eq!(parse_status("429:"), None);
    }

    #[test]
    fn empty_say_is_an_empty_reply() {
        assert_eq!(Script::parse("[[say:]]").say, Some(String::new()));
    }

    #[test]
    fn pieces_never_split_a_character() {
        assert_eq!(split_chars("héllo wörld", 4), vec!["héll", "o wö", "rld"]);
        assert!(split_chars("", 4).is_empty());
    }
}
