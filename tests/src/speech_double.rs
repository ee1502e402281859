//! Stand-ins for the two cloud speech APIs, served on loopback for the voice tests, each
//! speaking its service's wire format:
//!
//! * OpenAI `POST /v1/audio/speech` (`Authorization: Bearer …`, JSON `{model, input, voice,
//!   response_format}`) → the audio bytes; errors as OpenAI's `{error: {message, type}}`;
//! * ElevenLabs `POST /v1/text-to-speech/{voiceId}?output_format=…` (`xi-api-key`, JSON
//!   `{text, model_id, voice_settings, …}`) → the audio bytes; errors as
//!   `{detail: {status, message}}`.
//!
//! The audio returned is [`SpeechDouble::audio_for`]: a recognisable header for the format
//! asked (MP3, Ogg Opus) followed by the provider's name and the text, so a test can tell
//! exactly which provider produced which bytes. Each provider can be made to fail (HTTP
//! 500); its error then echoes the key it was sent, as a careless server might, so a test
//! can check that no error hands it on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A request as a double saw it.
#[derive(Debug, Clone)]
pub struct SpeechRequest {
    /// `openai` or `elevenlabs`.
    pub provider: &'static str,
    /// The request path (`/v1/audio/speech`, `/v1/text-to-speech/<voiceId>`).
    pub path: String,
    /// The query string's parameters.
    pub query: HashMap<String, String>,
    /// Every header, lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// Answered with an error (the provider was failing).
    pub failed: bool,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<SpeechRequest>>,
    openai_failing: AtomicBool,
    elevenlabs_failing: AtomicBool,
}

/// The running doubles (one server, both APIs); dropping it stops the server.
pub struct SpeechDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl SpeechDouble {
    pub async fn start() -> SpeechDouble {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/audio/speech", post(openai))
            .route("/v1/text-to-speech/{voice_id}", post(elevenlabs))
            .with_state(shared.clone());
        let (addr, server) = crate::serve_double("speech double", app).await;
        SpeechDouble {
            addr,
            shared,
            server,
        }
    }

    /// `messages.tts.openai.baseUrl`: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `messages.tts.elevenlabs.baseUrl`: `http://127.0.0.1:PORT`.
    pub fn elevenlabs_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_openai_failing(&self, failing: bool) {
        self.shared.openai_failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_elevenlabs_failing(&self, failing: bool) {
        self.shared
            .elevenlabs_failing
            .store(failing, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<SpeechRequest> {
        self.shared.requests.lock().clone()
    }

    /// The bytes a provider answers for a text in a format: an MP3 (ID3) or Ogg Opus
    /// header, then `<provider>:<text>`.
    pub fn audio_for(provider: &str, format: &str, text: &str) -> Vec<u8> {
        let mut audio = if format.starts_with("opus") {
            b"OggS\0\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0OpusHead".to_vec()
        } else {
            b"ID3\x04\0\0\0\0\0\0".to_vec()
        };
        audio.extend_from_slice(format!("{provider}:{text}").as_bytes());
        audio
    }
}

impl Drop for SpeechDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn record(
    shared: &Shared,
    provider: &'static str,
    path: String,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    failed: bool,
) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    shared.requests.lock().push(SpeechRequest {
        provider,
        path,
        query,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: body.clone(),
        failed,
    });
    body
}

fn audio(bytes: Vec<u8>, content_type: &str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Body::from(bytes))
        .expect("a valid response")
}

fn json_error(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let failing = shared.openai_failing.load(Ordering::SeqCst);
    let request = record(
        &shared,
        "openai",
        "/v1/audio/speech".into(),
        HashMap::new(),
        &headers,
        &body,
        failing,
    );
    if failing {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": format!("the speech double is failing on purpose (you sent {sent})"),
                             "type": "server_error"}}),
        );
    }
    let (Some(input), Some(format)) = (
        request["input"].as_str(),
        request["response_format"].as_str(),
    ) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "input and response_format are required", "type": "invalid_request_error"}}),
        );
    };
    audio(
        SpeechDouble::audio_for("openai", format, input),
        "audio/mpeg",
    )
}

async fn elevenlabs(
    State(shared): State<Arc<Shared>>,
    Path(voice_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failing = shared.elevenlabs_failing.load(Ordering::SeqCst);
    // The values here are plain words (`mp3_44100_128`): no percent-decoding needed.
    let query: HashMap<String, String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let format = query.get("output_format").cloned().unwrap_or_default();
    let request = record(
        &shared,
        "elevenlabs",
        format!("/v1/text-to-speech/{voice_id}"),
        query,
        &headers,
        &body,
        failing,
    );
    if failing {
        let sent = headers
            .get("xi-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"detail": {"status": "server_error",
                              "message": format!("the speech double is failing on purpose (key {sent})")}}),
        );
    }
    let Some(text) = request["text"].as_str() else {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": {"status": "invalid_request", "message": "text is required"}}),
        );
    };
    audio(
        SpeechDouble::audio_for("elevenlabs", &format, text),
        "audio/mpeg",
    )
}
