//! A stand-in for an OpenAI-compatible embeddings endpoint (`POST /v1/embeddings`), served
//! on loopback for the knowledge-library tests.
//!
//! It speaks OpenAI's wire format (request `{model, input}`, answer `{object: "list",
//! data: [{object: "embedding", index, embedding}], model, usage}`) with deterministic
//! vectors that know a few synonyms: each group of [`CONCEPTS`] is one dimension, every
//! other word is hashed over the remaining ones. A text that shares no word with another
//! but shares a concept (`automobile` / `car`) is therefore nearer to it than to anything
//! else. [`EmbeddingsDouble::set_failing`] makes every request answer HTTP 500.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Length of every vector.
pub const DIMENSIONS: usize = 64;

/// Words that mean the same thing, one dimension per group (in this order).
pub const CONCEPTS: &[&[&str]] = &[
    &[
        "automobile",
        "automobiles",
        "car",
        "cars",
        "vehicle",
        "vehicles",
        "sedan",
        "sedans",
        "motorcar",
        "motorcars",
    ],
    &[
        "physician",
        "physicians",
        "doctor",
        "doctors",
        "clinician",
        "clinicians",
        "medic",
        "medics",
    ],
    &[
        "vessel", "vessels", "boat", "boats", "ship", "ships", "yacht", "yachts", "dinghy",
    ],
    &["money", "cash", "currency", "funds"],
];

/// A small constant in the last dimension: no text embeds as the zero vector.
const BIAS: f32 = 0.01;

/// The vector of `text`: concept counts, hashed word counts, the bias; unit length.
pub fn vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMENSIONS];
    let first_hashed = CONCEPTS.len();
    let hashed = DIMENSIONS - CONCEPTS.len() - 1;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        match CONCEPTS
            .iter()
            .position(|group| group.contains(&word.as_str()))
        {
            Some(concept) => v[concept] += 1.0,
            None => v[first_hashed + (fnv(&word) % hashed as u64) as usize] += 1.0,
        }
    }
    v[DIMENSIONS - 1] = BIAS;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn fnv(word: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Cosine similarity of two unit vectors.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A request as the double saw it.
#[derive(Debug, Clone)]
pub struct EmbeddingRequest {
    /// The `authorization` header.
    pub auth: Option<String>,
    /// The parsed request JSON (`null` when it was not JSON).
    pub body: Value,
    /// Whether it was answered with an error (the double was failing).
    pub failed: bool,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<EmbeddingRequest>>,
    failing: AtomicBool,
}

/// The running double; dropping it stops the server.
pub struct EmbeddingsDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl EmbeddingsDouble {
    /// Starts the server; returns once it is listening.
    pub async fn start() -> EmbeddingsDouble {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            // Ingest sends many chunks at once: no 2 MB default limit here.
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let (addr, server) = crate::serve_double("embeddings double", app).await;
        EmbeddingsDouble {
            addr,
            shared,
            server,
        }
    }

    /// `remote.baseUrl` for `agents.defaults.memorySearch`: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// From now on every request fails with HTTP 500 (`true`), or is answered (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<EmbeddingRequest> {
        self.shared.requests.lock().clone()
    }
}

impl Drop for EmbeddingsDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let failing = shared.failing.load(Ordering::SeqCst);
    shared.requests.lock().push(EmbeddingRequest {
        auth: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: request.clone(),
        failed: failing,
    });
    if failing {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the embeddings double is failing on purpose",
        );
    }
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "'input' must be a string or an array of strings",
            )
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": vector(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_are_nearer_than_anything_else() {
        let query = vector("automobile");
        let cars = vector("cars.txt\n\nA used car needs a careful look at the engine.");
        let doctors = vector("doctors.txt\n\nThe doctor listens to your heart and lungs.");
        assert!(similarity(&query, &cars) > similarity(&query, &doctors) + 0.1);
        let norm: f32 = cars.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(vector("same words"), vector("Same  words!"));
    }
}
