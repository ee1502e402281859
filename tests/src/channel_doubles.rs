//! Loopback stand-ins for the chat platforms the gateway's channels talk to, for the
//! integration tests. Each one speaks its platform's real wire format, so the channel code
//! under test cannot tell it from the real service:
//!
//! * [`TelegramDouble`]: the Bot API (`/bot<token>/<method>`; `getMe`, long-polled
//!   `getUpdates` with offsets, the 409 conflict of two pollers, `sendMessage`, multipart
//!   `sendVoice`);
//! * [`WhatsAppDouble`]: the WhatsApp Business Cloud API's outbound side
//!   (`POST /<version>/<phone number id>/messages`), plus [`whatsapp_inbound_body`] and
//!   [`whatsapp_signature`] to forge the webhooks Meta sends;
//! * [`SlackDouble`]: the Web API (`chat.postMessage`, `auth.test`), plus
//!   [`slack_signature`], [`slack_url_verification_body`] and [`slack_message_event_body`]
//!   for the Events API's requests;
//! * [`DiscordDouble`]: REST v10 (channel messages, DM channels, `users/@me`);
//! * [`SignalDouble`]: a `signal-cli daemon --http` (JSON-RPC `send`/`version`, the
//!   `/api/v1/events` Server-Sent Events stream);
//! * [`WebhookReceiver`]: the far end of a generic outbound webhook, plus
//!   [`webhook_signature`].
//!
//! Every double runs its own server on a free loopback port until it is dropped, records
//! what the gateway delivered (`sent()`, `received()`), can be made to fail with any HTTP
//! status (`set_failing(Some(500))`, answered with the platform's own error body), and can
//! be waited on (`wait_sent(n, within)`, which panics listing what arrived on timeout).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Shared machinery: the server handle, the recorder with its failing switch, and request
// parsing (query strings, form bodies, JSON bodies, multipart bodies).

/// A double's server; dropping it stops accepting connections.
struct Served {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Served {
    async fn start(what: &str, app: Router) -> Served {
        let (addr, server) = crate::serve_double(what, app).await;
        Served { addr, server }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What a double delivered, and whether it should fail instead.
struct Recorder<T> {
    items: Mutex<Vec<T>>,
    failing: Mutex<Option<u16>>,
    /// Requests answered with the failing status.
    failed: AtomicUsize,
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder {
            items: Mutex::new(Vec::new()),
            failing: Mutex::new(None),
            failed: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone + std::fmt::Debug> Recorder<T> {
    fn push(&self, item: T) {
        self.items.lock().push(item);
    }

    fn all(&self) -> Vec<T> {
        self.items.lock().clone()
    }

    fn set_failing(&self, status: Option<u16>) {
        *self.failing.lock() = status;
    }

    /// The status to answer with while failing (counting the failed request).
    fn failing(&self) -> Option<StatusCode> {
        let status = (*self.failing.lock())?;
        self.failed.fetch_add(1, Ordering::SeqCst);
        Some(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// While failing: the platform's error answer, given the status and its reason phrase
    /// (counting the failed request).
    fn failure(
        &self,
        answer: impl FnOnce(StatusCode, &'static str) -> Response,
    ) -> Option<Response> {
        self.failing().map(|status| answer(status, reason(status)))
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Polls until at least `n` items are recorded; panics listing them after `within`.
    async fn wait_for(&self, what: &str, n: usize, within: Duration) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let items = self.all();
            if items.len() >= n {
                return items;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: expected at least {n} deliveries within {within:?}, got {}: {items:#?}",
                    items.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Declares a double's public type: its server, and the state its handlers share (`$shared`,
/// a `Default` with a `recorder: Recorder<$item>`). It comes with
///
/// * `serve`, which starts the server on `$routes` with the given state;
/// * `$url`: `http://127.0.0.1:PORT` followed by `$path`;
/// * the controls over the recorder: `$list`, `set_failing`, `failed_requests`, `$wait`;
/// * given `start(<fields>)`, `start`, which serves the default state with those fields (all
///   `&str`) filled in.
macro_rules! double {
    (
        $(#[$doc:meta])*
        $double:ident($shared:ident, $what:literal) records $item:ty as $list:ident, $wait:ident;
        $(#[$url_doc:meta])*
        $url:ident = $path:literal, routes = $routes:expr $(, $start:ident($($field:ident),*))?
    ) => {
        $(#[$doc])*
        pub struct $double {
            served: Served,
            shared: Arc<$shared>,
        }

        impl $double {
            async fn serve(shared: $shared) -> $double {
                let shared = Arc::new(shared);
                let app = $routes.with_state(shared.clone());
                $double {
                    served: Served::start($what, app).await,
                    shared,
                }
            }

            $(
                pub async fn $start($($field: &str),*) -> $double {
                    $double::serve($shared {
                        $($field: $field.to_string(),)*
                        ..$shared::default()
                    })
                    .await
                }
            )?

            $(#[$url_doc])*
            pub fn $url(&self) -> String {
                self.served.url($path)
            }

            /// Everything delivered so far, oldest first.
            pub fn $list(&self) -> Vec<$item> {
                self.shared.recorder.all()
            }

            /// While `Some(status)`, every request is answered with that HTTP status and the
            /// platform's error body (and not recorded); `None` heals it.
            pub fn set_failing(&self, status: Option<u16>) {
                self.shared.recorder.set_failing(status);
            }

            /// How many requests were answered with the failing status so far.
            pub fn failed_requests(&self) -> usize {
                self.shared.recorder.failed()
            }

            /// Waits until at least `n` deliveries are recorded and returns them all; panics
            /// listing what did arrive once `within` has passed.
            pub async fn $wait(&self, n: usize, within: Duration) -> Vec<$item> {
                self.shared
                    .recorder
                    .wait_for(stringify!($double), n, within)
                    .await
            }
        }
    };
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (status, content_type, body.to_string()).into_response()
}

/// `Internal Server Error`, `Bad Gateway`, …
fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Internal Server Error")
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The credential of an `Authorization: <scheme> <credential>` header.
fn auth_credential<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let (given, credential) = header_str(headers, "authorization")?.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credential.trim())
}

/// Lower-case hex HMAC-SHA256 of `data` under `key`.
fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`, as forms and query
/// strings encode it); a malformed escape stays as it is, invalid UTF-8 becomes U+FFFD.
fn percent_decode(text: &str, plus_as_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_digit);
                let low = bytes.get(i + 2).copied().and_then(hex_digit);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push((high << 4) | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x%20y` (a query string or an `application/x-www-form-urlencoded` body).
fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MultipartPart {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

fn find_bytes(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// The value of `key` among a header's `; key=value` parameters, unquoted.
fn header_param<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|param| {
        let (name, given) = param.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case(key)
            .then(|| given.trim().trim_matches('"'))
    })
}

/// The parts of a `multipart/form-data` body (`content_type` carries the boundary); `None`
/// when there is no boundary or the body is cut short.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<MultipartPart>> {
    let boundary = header_param(content_type, "boundary").filter(|b| !b.is_empty())?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut close = b"\r\n".to_vec();
    close.extend_from_slice(&delimiter);
    let mut parts = Vec::new();
    let mut pos = find_bytes(body, &delimiter, 0)? + delimiter.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return Some(parts);
        }
        // The rest of the delimiter line (transport padding), then the part's headers.
        let headers_start = find_bytes(body, b"\r\n", pos)? + 2;
        let (headers_end, data_start) = if body[headers_start..].starts_with(b"\r\n") {
            (headers_start, headers_start + 2)
        } else {
            let end = find_bytes(body, b"\r\n\r\n", headers_start)?;
            (end, end + 4)
        };
        let data_end = find_bytes(body, &close, data_start)?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let disposition = headers.split("\r\n").find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then(|| value.trim())
        });
        if let Some(name) = disposition.and_then(|d| header_param(d, "name")) {
            parts.push(MultipartPart {
                name: name.to_string(),
                filename: disposition
                    .and_then(|d| header_param(d, "filename"))
                    .map(str::to_string),
                data: body[data_start..data_end].to_vec(),
            });
        }
        pos = data_end + close.len();
    }
}

/// A request's parameters, from its query string and its body (JSON, form or multipart);
/// the body's win.
#[derive(Debug, Default)]
struct Params {
    fields: Map<String, Value>,
    /// Multipart parts that carry a file name.
    files: Vec<MultipartPart>,
}

impl Params {
    fn parse(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Params {
        let mut params = Params::default();
        params.insert_form(query.unwrap_or_default());
        let content_type = header_str(headers, "content-type").unwrap_or_default();
        let kind = content_type.to_ascii_lowercase();
        if kind.starts_with("multipart/form-data") {
            for part in parse_multipart(content_type, body).unwrap_or_default() {
                if part.filename.is_some() {
                    params.files.push(part);
                } else {
                    let text = String::from_utf8_lossy(&part.data).into_owned();
                    params.fields.insert(part.name, Value::String(text));
                }
            }
        } else if kind.starts_with("application/x-www-form-urlencoded") {
            params.insert_form(&String::from_utf8_lossy(body));
        } else if !body.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => params.fields.extend(map),
                // No (or another) content type: a form body, if anything.
                _ if !kind.starts_with("application/json") => {
                    params.insert_form(&String::from_utf8_lossy(body));
                }
                _ => {}
            }
        }
        params
    }

    fn insert_form(&mut self, text: &str) {
        for (key, value) in parse_form(text) {
            self.fields.insert(key, Value::String(value));
        }
    }

    /// A string or number field, as text.
    fn text(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// A number field, or a string holding one.
    fn int(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn file(&self, name: &str) -> Option<&MultipartPart> {
        self.files.iter().find(|part| part.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Telegram

const TELEGRAM_BOT_FIRST_NAME: &str = "Argent Test Bot";
const TELEGRAM_BOT_USERNAME: &str = "argent_test_bot";
/// The longest `getUpdates` hold the double grants (seconds).
const TELEGRAM_MAX_HOLD: i64 = 30;
const TELEGRAM_CONFLICT: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

/// A message (or voice note) the bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramSent {
    /// `sendMessage` or `sendVoice` (as the client spelled it).
    pub method: String,
    pub chat_id: i64,
    /// The message text (`sendMessage`) or the caption (`sendVoice`).
    pub text: Option<String>,
    /// Size of the uploaded voice file (`sendVoice` with a multipart upload).
    pub voice_bytes: Option<usize>,
    /// The uploaded voice file's name.
    pub voice_filename: Option<String>,
    pub reply_to_message_id: Option<i64>,
    pub parse_mode: Option<String>,
}

/// One `getUpdates` call as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct TelegramPoll {
    pub offset: Option<i64>,
    pub at: Instant,
}

struct TelegramState {
    /// Unconfirmed updates, oldest first: (update_id, Update).
    updates: VecDeque<(i64, Value)>,
    next_update_id: i64,
    next_inbound_message_id: i64,
    next_message_id: i64,
    polls: Vec<TelegramPoll>,
    /// Bumped by every `getUpdates`; a held call that sees another number was overtaken.
    poll_generation: u64,
}

impl Default for TelegramState {
    /// No updates yet; the first ids handed out.
    fn default() -> Self {
        TelegramState {
            updates: VecDeque::new(),
            next_update_id: 500_000,
            next_inbound_message_id: 1,
            next_message_id: 1000,
            polls: Vec::new(),
            poll_generation: 0,
        }
    }
}

impl TelegramState {
    /// Telegram's offset rule: ids below a positive offset are confirmed (forgotten); a
    /// negative one keeps only the last `-offset` updates.
    fn confirm(&mut self, offset: Option<i64>) {
        match offset {
            Some(offset) if offset < 0 => {
                let keep = offset.unsigned_abs() as usize;
                while self.updates.len() > keep {
                    self.updates.pop_front();
                }
            }
            Some(offset) => self.updates.retain(|(id, _)| *id >= offset),
            None => {}
        }
    }
}

#[derive(Default)]
struct TelegramShared {
    token: String,
    bot_id: i64,
    recorder: Recorder<TelegramSent>,
    state: Mutex<TelegramState>,
    stalled: AtomicBool,
    /// Woken by a new update, a new `getUpdates` and a change of the stall switch.
    notify: Notify,
}

impl TelegramShared {
    fn bot_user(&self) -> Value {
        json!({"id": self.bot_id, "is_bot": true, "first_name": TELEGRAM_BOT_FIRST_NAME,
               "username": TELEGRAM_BOT_USERNAME})
    }

    /// A Message the bot sends to `chat_id`, with `extra` fields (`text`, `voice`, …).
    fn outgoing(&self, chat_id: i64, extra: Value) -> Value {
        let message_id = {
            let mut state = self.state.lock();
            state.next_message_id += 1;
            state.next_message_id - 1
        };
        let mut message = json!({"message_id": message_id, "from": self.bot_user(),
                                 "date": unix_secs(), "chat": {"id": chat_id, "type": "private"}});
        if let (Some(message), Value::Object(extra)) = (message.as_object_mut(), extra) {
            message.extend(extra);
        }
        message
    }

    async fn wait_unstalled(&self) {
        loop {
            let notified = self.notify.notified();
            if !self.stalled.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

double! {
    /// The Telegram Bot API; dropping it stops the server.
    TelegramDouble(TelegramShared, "telegram double") records TelegramSent as sent, wait_sent;
    /// `http://127.0.0.1:PORT`; the client appends `/bot<token>/<method>`.
    base_url = "", routes = telegram_routes()
}

impl TelegramDouble {
    /// A bot whose id is the token's numeric prefix (`123456:ABC…` → 123456), else 4242.
    pub async fn new_for(token: &str) -> TelegramDouble {
        let bot_id: i64 = token
            .split_once(':')
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(4242);
        TelegramDouble::start(token, bot_id).await
    }

    pub async fn start(token: &str, bot_id: i64) -> TelegramDouble {
        TelegramDouble::serve(TelegramShared {
            token: token.to_string(),
            bot_id,
            ..TelegramShared::default()
        })
        .await
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn bot_id(&self) -> i64 {
        self.shared.bot_id
    }

    /// Queues a private-chat text message from user `from_id`; returns its update_id.
    pub fn push_text(&self, chat_id: i64, from_id: i64, text: &str) -> i64 {
        let chat = json!({"id": chat_id, "type": "private", "first_name": "Tester"});
        self.push_message(chat, from_id, text)
    }

    /// Queues a group-chat text message from user `from_id`; returns its update_id.
    pub fn push_group_text(&self, chat_id: i64, from_id: i64, text: &str) -> i64 {
        let chat = json!({"id": chat_id, "type": "group", "title": "Argent Test Group"});
        self.push_message(chat, from_id, text)
    }

    fn push_message(&self, chat: Value, from_id: i64, text: &str) -> i64 {
        let update_id = {
            let mut state = self.shared.state.lock();
            let update_id = state.next_update_id;
            state.next_update_id += 1;
            let message_id = state.next_inbound_message_id;
            state.next_inbound_message_id += 1;
            let update = json!({"update_id": update_id, "message": {
                "message_id": message_id, "date": unix_secs(), "chat": chat,
                "from": {"id": from_id, "is_bot": false, "first_name": "Tester", "username": "tester"},
                "text": text}});
            state.updates.push_back((update_id, update));
            update_id
        };
        self.shared.notify.notify_waiters();
        update_id
    }

    /// How many `getUpdates` calls arrived (answered or not).
    pub fn get_updates_calls(&self) -> usize {
        self.shared.state.lock().polls.len()
    }

    /// Every `getUpdates` call: its offset and when it arrived.
    pub fn polls(&self) -> Vec<TelegramPoll> {
        self.shared.state.lock().polls.clone()
    }

    /// Updates not yet confirmed by a `getUpdates` offset.
    pub fn pending_updates(&self) -> usize {
        self.shared.state.lock().updates.len()
    }

    /// While stalled, `getUpdates` and `getMe` get no answer (they hang until unstalled).
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }
}

/// Every method (uploads up to 64 MiB) on one handler.
fn telegram_routes() -> Router<Arc<TelegramShared>> {
    Router::new()
        .route("/{bot_path}/{method}", any(telegram))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

fn telegram_ok(result: Value) -> Response {
    json_response(StatusCode::OK, &json!({"ok": true, "result": result}))
}

fn telegram_error(status: StatusCode, description: &str) -> Response {
    json_response(
        status,
        &json!({"ok": false, "error_code": status.as_u16(), "description": description}),
    )
}

async fn telegram(
    State(shared): State<Arc<TelegramShared>>,
    Path((bot_path, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = bot_path.strip_prefix("bot") else {
        return telegram_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if token != shared.token {
        return telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let params = Params::parse(&headers, query.as_deref(), &body);
    // Method names are case-insensitive.
    let method_key = method.to_ascii_lowercase();
    if method_key == "getupdates" {
        shared.state.lock().polls.push(TelegramPoll {
            offset: params.int("offset"),
            at: Instant::now(),
        });
    }
    if method_key == "getupdates" || method_key == "getme" {
        shared.wait_unstalled().await;
    }
    if let Some(failure) = shared.recorder.failure(telegram_error) {
        return failure;
    }
    match method_key.as_str() {
        "getme" => telegram_ok(shared.bot_user()),
        "getupdates" => telegram_get_updates(&shared, &params).await,
        "sendmessage" => telegram_send_message(&shared, &method, &params),
        "sendvoice" => telegram_send_voice(&shared, &method, &params),
        "deletewebhook" | "sendchataction" => telegram_ok(Value::Bool(true)),
        "getwebhookinfo" => {
            let pending = shared.state.lock().updates.len();
            telegram_ok(json!({"url": "", "has_custom_certificate": false,
                               "pending_update_count": pending}))
        }
        _ => telegram_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn telegram_get_updates(shared: &TelegramShared, params: &Params) -> Response {
    let hold = params
        .int("timeout")
        .unwrap_or(0)
        .clamp(0, TELEGRAM_MAX_HOLD) as u64;
    let limit = params.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    // Every update here is a `message`: a filter without it leaves nothing to answer.
    let allowed: Option<Vec<String>> = match params.fields.get("allowed_updates") {
        Some(Value::String(text)) => serde_json::from_str(text).ok(),
        Some(other) => serde_json::from_value(other.clone()).ok(),
        None => None,
    };
    let wants_messages = allowed
        .as_ref()
        .is_none_or(|kinds| kinds.is_empty() || kinds.iter().any(|k| k == "message"));
    let generation = {
        let mut state = shared.state.lock();
        state.confirm(params.int("offset"));
        state.poll_generation += 1;
        state.poll_generation
    };
    // Overtakes any call still held.
    shared.notify.notify_waiters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(hold);
    loop {
        // Created before looking, so no wake-up between the look and the wait is missed.
        let notified = shared.notify.notified();
        let stalled = shared.stalled.load(Ordering::SeqCst);
        {
            let state = shared.state.lock();
            if state.poll_generation != generation {
                return telegram_error(StatusCode::CONFLICT, TELEGRAM_CONFLICT);
            }
            if !stalled {
                let ready: Vec<Value> = if wants_messages {
                    state
                        .updates
                        .iter()
                        .take(limit)
                        .map(|(_, update)| update.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                    return telegram_ok(Value::Array(ready));
                }
            }
        }
        if stalled {
            notified.await;
        } else {
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

fn telegram_send_message(shared: &TelegramShared, method: &str, params: &Params) -> Response {
    let Some(chat_id) = params.int("chat_id") else {
        return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    };
    let Some(text) = params.text("text").filter(|t| !t.is_empty()) else {
        return telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
        );
    };
    let message = shared.outgoing(chat_id, json!({"text": text}));
    shared.recorder.push(TelegramSent {
        method: method.to_string(),
        chat_id,
        text: Some(text),
        voice_bytes: None,
        voice_filename: None,
        reply_to_message_id: params.int("reply_to_message_id"),
        parse_mode: params.text("parse_mode"),
    });
    telegram_ok(message)
}

fn telegram_send_voice(shared: &TelegramShared, method: &str, params: &Params) -> Response {
    let Some(chat_id) = params.int("chat_id") else {
        return telegram_error(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    };
    // An upload, or a file_id / URL as a plain field.
    let upload = params.file("voice");
    if upload.is_none() && params.text("voice").is_none() {
        return telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: there is no voice in the request",
        );
    }
    let voice_bytes = upload.map(|part| part.data.len());
    let message = shared.outgoing(
        chat_id,
        json!({"voice": {"file_id": format!("voice-{}", unix_millis()),
                         "file_unique_id": "voice", "duration": 1, "mime_type": "audio/ogg",
                         "file_size": voice_bytes.unwrap_or(0)}}),
    );
    shared.recorder.push(TelegramSent {
        method: method.to_string(),
        chat_id,
        text: params.text("caption"),
        voice_bytes,
        voice_filename: upload.and_then(|part| part.filename.clone()),
        reply_to_message_id: params.int("reply_to_message_id"),
        parse_mode: params.text("parse_mode"),
    });
    telegram_ok(message)
}

// ---------------------------------------------------------------------------------------------
// WhatsApp

/// A message sent through the Cloud API.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsAppSent {
    pub to: String,
    /// `text.body` (empty for other message types).
    pub text: String,
    /// `/<version>/<phone number id>/messages`.
    pub path: String,
    /// The whole request.
    pub body: Value,
}

#[derive(Default)]
struct WhatsAppShared {
    phone_number_id: String,
    token: String,
    recorder: Recorder<WhatsAppSent>,
    /// Messages accepted so far (their ids count from 1).
    accepted: AtomicU64,
}

impl WhatsAppShared {
    /// The Graph API's refusal of a request, if it has one.
    fn refuse(&self, headers: &HeaderMap, phone_number_id: &str) -> Option<Response> {
        if auth_credential(headers, "Bearer") != Some(self.token.as_str()) {
            return Some(graph_error(
                StatusCode::UNAUTHORIZED,
                "Invalid OAuth access token.",
                "OAuthException",
                190,
            ));
        }
        let answer = |status, reason: &str| graph_error(status, reason, "OAuthException", 2);
        if let Some(failure) = self.recorder.failure(answer) {
            return Some(failure);
        }
        if phone_number_id != self.phone_number_id {
            let message =
                format!("Unsupported request. Object with ID '{phone_number_id}' does not exist");
            return Some(graph_error(
                StatusCode::BAD_REQUEST,
                &message,
                "GraphMethodException",
                100,
            ));
        }
        None
    }
}

double! {
    /// The WhatsApp Business Cloud API (outbound); dropping it stops the server.
    WhatsAppDouble(WhatsAppShared, "whatsapp double") records WhatsAppSent as sent, wait_sent;
    /// `http://127.0.0.1:PORT`; the client appends `/v21.0/<phone number id>/messages` (any
    /// version is accepted).
    base_url = "", routes = whatsapp_routes(), start(phone_number_id, token)
}

fn whatsapp_routes() -> Router<Arc<WhatsAppShared>> {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(whatsapp_send))
        .route("/{version}/{phone_number_id}", get(whatsapp_phone))
}

fn graph_error(status: StatusCode, message: &str, kind: &str, code: i64) -> Response {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "x"}}),
    )
}

async fn whatsapp_send(
    State(shared): State<Arc<WhatsAppShared>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = shared.refuse(&headers, &phone_number_id) {
        return refusal;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let missing = |param: &str| {
        graph_error(
            StatusCode::BAD_REQUEST,
            &format!("(#100) The parameter {param} is required."),
            "OAuthException",
            100,
        )
    };
    if request["messaging_product"].as_str() != Some("whatsapp") {
        return missing("messaging_product");
    }
    let Some(to) = request["to"].as_str().map(str::to_string) else {
        return missing("to");
    };
    let id = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    shared.recorder.push(WhatsAppSent {
        to: to.clone(),
        text: request["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        path: format!("/{version}/{phone_number_id}/messages"),
        body: request,
    });
    json_response(
        StatusCode::OK,
        &json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.{id}")}]}),
    )
}

async fn whatsapp_phone(
    State(shared): State<Arc<WhatsAppShared>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = shared.refuse(&headers, &phone_number_id) {
        return refusal;
    }
    json_response(
        StatusCode::OK,
        &json!({"id": phone_number_id, "display_phone_number": "+1 555 0100",
                "verified_name": "Argent Test"}),
    )
}

/// The webhook notification Meta posts for an inbound text message.
pub fn whatsapp_inbound_body(
    phone_number_id: &str,
    from: &str,
    message_id: &str,
    text: &str,
) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [{
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Tester"}, "wa_id": from}],
            "messages": [{"from": from, "id": message_id, "timestamp": unix_secs().to_string(),
                          "type": "text", "text": {"body": text}}]
        },
        "field": "messages"}]}]})
    .to_string()
}

/// `X-Hub-Signature-256` of a webhook body: `sha256=` and the lower-case hex
/// HMAC-SHA256 of the body under the app secret.
pub fn whatsapp_signature(app_secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(app_secret.as_bytes(), body))
}

// ---------------------------------------------------------------------------------------------
// Slack

/// A message posted with `chat.postMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackSent {
    pub channel: String,
    pub text: String,
    pub thread_ts: Option<String>,
}

#[derive(Default)]
struct SlackShared {
    token: String,
    recorder: Recorder<SlackSent>,
    posted: AtomicU64,
}

impl SlackShared {
    /// Slack's refusal of a request, if it has one (auth errors come with HTTP 200).
    fn refuse(&self, headers: &HeaderMap, params: &Params) -> Option<Response> {
        let token = auth_credential(headers, "Bearer")
            .map(str::to_string)
            .or_else(|| params.text("token"));
        match token {
            None => return Some(slack_error(StatusCode::OK, "not_authed")),
            Some(token) if token != self.token => {
                return Some(slack_error(StatusCode::OK, "invalid_auth"))
            }
            Some(_) => {}
        }
        self.recorder
            .failure(|status, _| slack_error(status, "internal_error"))
    }
}

double! {
    /// The Slack Web API; dropping it stops the server.
    SlackDouble(SlackShared, "slack double") records SlackSent as sent, wait_sent;
    /// `http://127.0.0.1:PORT`; the client posts to `<base>/chat.postMessage`.
    base_url = "", routes = slack_routes(), start(token)
}

fn slack_routes() -> Router<Arc<SlackShared>> {
    Router::new()
        .route("/chat.postMessage", slack_method(slack_post_message))
        .route("/auth.test", slack_method(slack_auth_test))
        .fallback(slack_unknown_method)
}

/// A Web API method (`POST`): the call's parameters, from its query string and its body, go
/// to `answer` once they pass Slack's checks.
fn slack_method(answer: fn(&SlackShared, &Params) -> Response) -> MethodRouter<Arc<SlackShared>> {
    post(
        move |State(shared): State<Arc<SlackShared>>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Bytes| async move {
            let params = Params::parse(&headers, query.as_deref(), &body);
            match shared.refuse(&headers, &params) {
                Some(refusal) => refusal,
                None => answer(&shared, &params),
            }
        },
    )
}

fn slack_error(status: StatusCode, error: &str) -> Response {
    json_response(status, &json!({"ok": false, "error": error}))
}

async fn slack_unknown_method() -> Response {
    slack_error(StatusCode::NOT_FOUND, "unknown_method")
}

fn slack_post_message(shared: &SlackShared, params: &Params) -> Response {
    let Some(channel) = params.text("channel").filter(|c| !c.is_empty()) else {
        return slack_error(StatusCode::OK, "channel_not_found");
    };
    let text = params.text("text").unwrap_or_default();
    if text.is_empty() && !params.fields.contains_key("blocks") {
        return slack_error(StatusCode::OK, "no_text");
    }
    let thread_ts = params.text("thread_ts");
    // 1700000000.000100, 1700000000.000200, …
    let micros = 1_700_000_000_000_100 + shared.posted.fetch_add(1, Ordering::SeqCst) * 100;
    let ts = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let mut message = json!({"type": "message", "text": text, "user": "U0BOT", "bot_id": "B1",
                             "ts": ts});
    if let Some(thread_ts) = &thread_ts {
        message["thread_ts"] = Value::String(thread_ts.clone());
    }
    shared.recorder.push(SlackSent {
        channel: channel.clone(),
        text,
        thread_ts,
    });
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
    )
}

fn slack_auth_test(_: &SlackShared, _: &Params) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "url": "https://argent-test.slack.com/", "team": "Argent",
                "user": "argentbot", "team_id": "T1", "user_id": "U0BOT", "bot_id": "B1"}),
    )
}

/// `X-Slack-Signature` of a request: `v0=` and the hex HMAC-SHA256 of
/// `v0:<timestamp>:<body>` under the signing secret.
pub fn slack_signature(signing_secret: &str, timestamp: u64, body: &str) -> String {
    let base = format!("v0:{timestamp}:{body}");
    format!(
        "v0={}",
        hmac_sha256_hex(signing_secret.as_bytes(), base.as_bytes())
    )
}

/// The Events API's `url_verification` challenge.
pub fn slack_url_verification_body(challenge: &str) -> String {
    json!({"token": "legacy", "challenge": challenge, "type": "url_verification"}).to_string()
}

/// The Events API's `event_callback` for a direct message.
pub fn slack_message_event_body(event_id: &str, user: &str, channel: &str, text: &str) -> String {
    let now = unix_secs();
    let ts = format!("{now}.000200");
    json!({"token": "legacy", "team_id": "T1", "api_app_id": "A1",
           "event": {"type": "message", "channel_type": "im", "user": user, "text": text,
                     "ts": ts, "channel": channel, "event_ts": ts},
           "type": "event_callback", "event_id": event_id, "event_time": now})
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Discord

/// A message created in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordSent {
    pub channel_id: String,
    pub content: String,
}

/// The id of the first message the double creates.
const DISCORD_FIRST_SNOWFLAKE: u64 = 1_300_000_000_000_000_000;

#[derive(Default)]
struct DiscordShared {
    token: String,
    recorder: Recorder<DiscordSent>,
    /// Messages created so far.
    created: AtomicU64,
}

impl DiscordShared {
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        if auth_credential(headers, "Bot") != Some(self.token.as_str()) {
            return Some(discord_error(
                StatusCode::UNAUTHORIZED,
                "401: Unauthorized",
                0,
            ));
        }
        self.recorder
            .failure(|status, reason| discord_error(status, reason, 0))
    }
}

/// Passes the requests Discord would serve (the bot's token, the double not failing) and
/// answers the others with Discord's refusal.
struct DiscordAuthorized;

impl FromRequestParts<Arc<DiscordShared>> for DiscordAuthorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<DiscordShared>,
    ) -> Result<Self, Response> {
        match shared.refuse(&parts.headers) {
            Some(refusal) => Err(refusal),
            None => Ok(DiscordAuthorized),
        }
    }
}

double! {
    /// Discord's REST API v10; dropping it stops the server.
    DiscordDouble(DiscordShared, "discord double") records DiscordSent as sent, wait_sent;
    /// `http://127.0.0.1:PORT/api/v10`.
    base_url = "/api/v10", routes = discord_routes(), start(token)
}

fn discord_error(status: StatusCode, message: &str, code: i64) -> Response {
    json_response(status, &json!({"message": message, "code": code}))
}

fn discord_bot_user() -> Value {
    json!({"id": "42", "username": "argent", "bot": true})
}

fn discord_routes() -> Router<Arc<DiscordShared>> {
    Router::new()
        .route(
            "/api/v10/channels/{channel_id}/messages",
            post(discord_message),
        )
        .route("/api/v10/users/@me/channels", post(discord_dm_channel))
        .route("/api/v10/users/@me", get(discord_me))
}

async fn discord_message(
    State(shared): State<Arc<DiscordShared>>,
    Path(channel_id): Path<String>,
    _: DiscordAuthorized,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let content = request["content"].as_str().unwrap_or_default().to_string();
    if content.is_empty() {
        return discord_error(
            StatusCode::BAD_REQUEST,
            "Cannot send an empty message",
            50006,
        );
    }
    let id = DISCORD_FIRST_SNOWFLAKE + shared.created.fetch_add(1, Ordering::SeqCst);
    shared.recorder.push(DiscordSent {
        channel_id: channel_id.clone(),
        content: content.clone(),
    });
    json_response(
        StatusCode::OK,
        &json!({"id": id.to_string(), "type": 0, "channel_id": channel_id, "content": content,
                "author": discord_bot_user(), "tts": false}),
    )
}

async fn discord_dm_channel(_: DiscordAuthorized, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recipient = match &request["recipient_id"] {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => {
            return discord_error(StatusCode::BAD_REQUEST, "Invalid Form Body", 50035);
        }
    };
    json_response(
        StatusCode::OK,
        &json!({"id": format!("dm-{recipient}"), "type": 1,
                "recipients": [{"id": recipient}]}),
    )
}

async fn discord_me(_: DiscordAuthorized) -> Response {
    json_response(StatusCode::OK, &discord_bot_user())
}

// ---------------------------------------------------------------------------------------------
// Signal

/// The signal-cli version the double claims.
const SIGNAL_CLI_VERSION: &str = "0.13.9";
/// Between the `:` comment lines that keep an idle event stream open.
const SIGNAL_KEEPALIVE: Duration = Duration::from_secs(5);

/// A message sent with the JSON-RPC `send` method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSent {
    /// `params.account` (the daemon's account when absent).
    pub account: String,
    pub recipients: Vec<String>,
    pub group_id: Option<String>,
    pub message: String,
}

#[derive(Default)]
struct SignalEvents {
    /// One sender per open event stream.
    subscribers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Frames pushed while no stream was open, for the next one.
    pending: Vec<Bytes>,
}

#[derive(Default)]
struct SignalShared {
    account: String,
    recorder: Recorder<SignalSent>,
    events: Mutex<SignalEvents>,
    streams_opened: AtomicUsize,
    last_timestamp: Mutex<u64>,
}

impl SignalShared {
    /// Milliseconds since the epoch, never twice the same.
    fn next_timestamp(&self) -> u64 {
        let mut last = self.last_timestamp.lock();
        *last = unix_millis().max(*last + 1);
        *last
    }

    /// Whether a phone number names the daemon's account (tolerates a `+` that a query
    /// string turned into a space, or lost).
    fn is_account(&self, number: &str) -> bool {
        number.trim_start_matches([' ', '+']) == self.account.trim_start_matches('+')
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut events = self.events.lock();
        for frame in events.pending.drain(..) {
            let _ = tx.send(frame);
        }
        events.subscribers.push(tx);
        rx
    }

    fn publish(&self, frame: Bytes) {
        let mut events = self.events.lock();
        events.subscribers.retain(|tx| !tx.is_closed());
        if events.subscribers.is_empty() {
            events.pending.push(frame);
            return;
        }
        for tx in &events.subscribers {
            let _ = tx.send(frame.clone());
        }
    }

    /// The JSON-RPC `send` method's answer.
    fn send(&self, params: &Value, id: Value) -> Value {
        let account = params["account"]
            .as_str()
            .unwrap_or(&self.account)
            .to_string();
        if !self.is_account(&account) {
            return rpc_error(id, -32602, "Specified account does not exist");
        }
        let recipients: Vec<String> = match &params["recipient"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let group_id = params["groupId"].as_str().map(str::to_string);
        if recipients.is_empty() && group_id.is_none() {
            return rpc_error(id, -32602, "No recipients given");
        }
        let results: Vec<Value> = recipients
            .iter()
            .map(|number| json!({"recipientAddress": {"number": number}, "type": "SUCCESS"}))
            .collect();
        self.recorder.push(SignalSent {
            account,
            recipients,
            group_id,
            message: params["message"].as_str().unwrap_or_default().to_string(),
        });
        let timestamp = self.next_timestamp();
        json!({"jsonrpc": "2.0", "result": {"timestamp": timestamp, "results": results}, "id": id})
    }
}

double! {
    /// A `signal-cli daemon --http`; dropping it stops the server and ends its event streams.
    SignalDouble(SignalShared, "signal double") records SignalSent as sent, wait_sent;
    /// `http://127.0.0.1:PORT`; the client appends `/api/v1/rpc`, `/api/v1/events`.
    base_url = "", routes = signal_routes(), start(account)
}

impl SignalDouble {
    /// Delivers a text message from `from` on the event streams (or to the next one opened
    /// when none is); returns its timestamp.
    pub fn push_text(&self, from: &str, text: &str) -> u64 {
        let timestamp = self.shared.next_timestamp();
        let event = json!({"envelope": {"source": from, "sourceNumber": from, "sourceName": "Tester",
                                        "sourceDevice": 1, "timestamp": timestamp,
                                        "dataMessage": {"timestamp": timestamp, "message": text}},
                           "account": self.shared.account});
        self.shared
            .publish(Bytes::from(format!("event:receive\ndata:{event}\n\n")));
        timestamp
    }

    /// How many `/api/v1/events` streams were opened so far.
    pub fn event_streams_opened(&self) -> usize {
        self.shared.streams_opened.load(Ordering::SeqCst)
    }
}

impl Drop for SignalDouble {
    fn drop(&mut self) {
        // Connections outlive the server task: end their streams.
        self.shared.events.lock().subscribers.clear();
    }
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
}

fn signal_routes() -> Router<Arc<SignalShared>> {
    Router::new()
        .route("/api/v1/rpc", post(signal_rpc))
        .route("/api/v1/events", get(signal_events))
        .route("/api/v1/check", get(signal_check))
}

async fn signal_rpc(State(shared): State<Arc<SignalShared>>, body: Bytes) -> Response {
    let answer =
        |status, reason: &str| json_response(status, &rpc_error(Value::Null, -32603, reason));
    if let Some(failure) = shared.recorder.failure(answer) {
        return failure;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::OK,
            &rpc_error(Value::Null, -32700, "Parse error"),
        );
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let answer = match request["method"].as_str() {
        None => rpc_error(id, -32600, "Invalid Request"),
        Some("version") => {
            json!({"jsonrpc": "2.0", "result": {"version": SIGNAL_CLI_VERSION}, "id": id})
        }
        Some("send") => shared.send(&request["params"], id),
        Some(_) => rpc_error(id, -32601, "Method not implemented"),
    };
    json_response(StatusCode::OK, &answer)
}

async fn signal_check() -> Response {
    Response::new(Body::empty())
}

async fn signal_events(
    State(shared): State<Arc<SignalShared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = |status, reason: &str| json_response(status, &json!({"error": reason}));
    if let Some(failure) = shared.recorder.failure(answer) {
        return failure;
    }
    let account = parse_form(query.as_deref().unwrap_or_default())
        .into_iter()
        .find(|(key, _)| key == "account")
        .map(|(_, value)| value);
    if let Some(account) = account {
        if !shared.is_account(&account) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "Specified account does not exist"}),
            );
        }
    }
    shared.streams_opened.fetch_add(1, Ordering::SeqCst);
    let rx = shared.subscribe();
    let keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + SIGNAL_KEEPALIVE,
        SIGNAL_KEEPALIVE,
    );
    let stream =
        futures_util::stream::unfold((rx, keepalive), |(mut rx, mut keepalive)| async move {
            let chunk = tokio::select! {
                frame = rx.recv() => frame,
                _ = keepalive.tick() => Some(Bytes::from_static(b":\n")),
            };
            let chunk = chunk?;
            Some((Ok::<Bytes, std::io::Error>(chunk), (rx, keepalive)))
        });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------------------------
// Generic webhook

/// A request the webhook receiver accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReceived {
    /// Every header, lower-case names.
    pub headers: HashMap<String, String>,
    /// The body parsed as JSON (`null` when it is not JSON).
    pub body: Value,
    pub raw: String,
}

impl WebhookReceived {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct WebhookShared {
    recorder: Recorder<WebhookReceived>,
}

double! {
    /// The far end of an outbound webhook (`POST /hook`); dropping it stops the server.
    WebhookReceiver(WebhookShared, "webhook receiver")
        records WebhookReceived as received, wait_received;
    /// `http://127.0.0.1:PORT/hook`.
    url = "/hook", routes = Router::new().route("/hook", post(webhook)), start()
}

async fn webhook(
    State(shared): State<Arc<WebhookShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer =
        |status, reason: &str| json_response(status, &json!({"ok": false, "error": reason}));
    if let Some(failure) = shared.recorder.failure(answer) {
        return failure;
    }
    let header_pairs = headers.iter().map(|(name, value)| {
        let value = value.to_str().unwrap_or_default();
        (name.as_str().to_string(), value.to_string())
    });
    shared.recorder.push(WebhookReceived {
        headers: header_pairs.collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: String::from_utf8_lossy(&body).into_owned(),
    });
    json_response(StatusCode::OK, &json!({"ok": true}))
}

/// A signed webhook's signature header: `sha256=` and the hex HMAC-SHA256 of the body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_signatures_match_known_vectors() {
        // RFC 4231, test case 2.
        let rfc = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            webhook_signature("Jefe", b"what do ya want for nothing?"),
            format!("sha256={rfc}")
        );
        assert_eq!(
            whatsapp_signature("Jefe", b"what do ya want for nothing?"),
            format!("sha256={rfc}")
        );
        // Slack's documented example ("Verifying requests from Slack").
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("%2B15550100", true), "+15550100");
        assert_eq!(percent_decode("caf%C3%A9", true), "café");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(
            parse_form("chat_id=42&text=hi%21+there&empty=&flag"),
            vec![
                ("chat_id".to_string(), "42".to_string()),
                ("text".to_string(), "hi! there".to_string()),
                ("empty".to_string(), String::new()),
                ("flag".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn multipart_fields_and_files() {
        let content_type = "multipart/form-data; boundary=\"XyZ-42\"";
        let mut body = Vec::new();
        body.extend_from_slice(b"preamble\r\n--XyZ-42\r\n");
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"chat_id\"\r\n\r\n");
        body.extend_from_slice(b"123\r\n--XyZ-42\r\n");
        body.extend_from_slice(
            b"content-disposition: form-data; name=\"voice\"; filename=\"reply.ogg\"\r\n",
        );
        body.extend_from_slice(b"Content-Type: audio/ogg\r\n\r\n");
        body.extend_from_slice(b"OggS\0\r\n--not-it\xff");
        body.extend_from_slice(b"\r\n--XyZ-42--\r\n");
        let parts = parse_multipart(content_type, &body).expect("parses");
        assert_eq!(
            parts,
            vec![
                MultipartPart {
                    name: "chat_id".into(),
                    filename: None,
                    data: b"123".to_vec(),
                },
                MultipartPart {
                    name: "voice".into(),
                    filename: Some("reply.ogg".into()),
                    data: b"OggS\0\r\n--not-it\xff".to_vec(),
                },
            ]
        );
        // Cut short, or no boundary.
        assert_eq!(parse_multipart(content_type, &body[..60]), None);
        assert_eq!(parse_multipart("multipart/form-data", &body), None);
    }
}
