//! A client of the gateway protocol, as the upstream Node client behaves (PROTOCOL.md §7.1):
//! waits for `connect.challenge`, sends `connect`, then multiplexes requests by id and
//! delivers events in order. Used by the `argent` CLI, the node-agent's gateway link, the
//! cluster tests and the benchmark.

#![forbid(unsafe_code)]

pub mod device;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use argent_proto::errors::ErrorShape;
use argent_proto::version::Protocol;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub token: Option<String>,
    pub password: Option<String>,
    pub role: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub client_id: String,
    pub client_mode: String,
    pub client_version: String,
    pub platform: String,
    pub display_name: Option<String>,
    pub instance_id: Option<String>,
    pub caps: Vec<String>,
    /// `Origin` header (browser clients).
    pub origin: Option<String>,
    /// Deadline for the whole handshake and the default per-call timeout.
    pub timeout: Duration,
    /// Events queued for the owner before new ones are dropped (counted in `dropped_events`).
    pub event_capacity: usize,
    /// Proves this device identity at connect (signs over the challenge nonce).
    pub device: Option<device::DeviceKey>,
}

impl ConnectOptions {
    /// A CLI-style operator connection (`client.id` and mode `cli`, all operator scopes).
    pub fn cli(url: &str, token: Option<String>) -> Self {
        ConnectOptions {
            url: url.to_string(),
            token,
            password: None,
            role: Some("operator".into()),
            scopes: Some(vec![
                "operator.admin".into(),
                "operator.approvals".into(),
                "operator.pairing".into(),
            ]),
            client_id: "cli".into(),
            client_mode: "cli".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            platform: std::env::consts::OS.into(),
            display_name: None,
            instance_id: Some(uuid::Uuid::new_v4().to_string()),
            caps: Vec::new(),
            origin: None,
            timeout: Duration::from_secs(10),
            event_capacity: 10_000,
            device: None,
        }
    }

    /// The `connect` params these options produce.
    pub fn connect_params(&self) -> Value {
        let mut client = Map::new();
        client.insert("id".into(), json!(self.client_id));
        client.insert("version".into(), json!(self.client_version));
        client.insert("platform".into(), json!(self.platform));
        client.insert("mode".into(), json!(self.client_mode));
        if let Some(name) = &self.display_name {
            client.insert("displayName".into(), json!(name));
        }
        if let Some(id) = &self.instance_id {
            client.insert("instanceId".into(), json!(id));
        }
        let mut params = Map::new();
        params.insert("minProtocol".into(), json!(Protocol::V3.number()));
        params.insert("maxProtocol".into(), json!(Protocol::V3.number()));
        params.insert("client".into(), Value::Object(client));
        params.insert("caps".into(), json!(self.caps));
        if let Some(role) = &self.role {
            params.insert("role".into(), json!(role));
        }
        if let Some(scopes) = &self.scopes {
            params.insert("scopes".into(), json!(scopes));
        }
        let mut auth = Map::new();
        if let Some(token) = &self.token {
            auth.insert("token".into(), json!(token));
        }
        if let Some(password) = &self.password {
            auth.insert("password".into(), json!(password));
        }
        if !auth.is_empty() {
            params.insert("auth".into(), Value::Object(auth));
        }
        Value::Object(params)
    }
}

/// How the server closed the socket.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("gateway refused the connection: {} ({})", .error.message, .error.code)]
    Rejected {
        error: ErrorShape,
        close: Option<CloseInfo>,
    },
    #[error("{} ({})", .0.message, .0.code)]
    Call(ErrorShape),
    #[error("connection closed{}", .0.as_ref().map(|c| format!(" ({} {})", c.code, c.reason)).unwrap_or_default())]
    Closed(Option<CloseInfo>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A response frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub ok: bool,
    pub payload: Option<Value>,
    pub error: Option<ErrorShape>,
}

/// An event frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub payload: Value,
    pub seq: Option<u64>,
    pub state_version: Option<Value>,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// Key suffix of the waiter for the second answer of a request answered twice.
const FINAL_SUFFIX: &str = "#final";

/// A connected, authenticated client.
pub struct Client {
    outgoing: mpsc::Sender<Message>,
    pending: Pending,
    events: mpsc::Receiver<Event>,
    closed: watch::Receiver<Option<CloseInfo>>,
    dropped_events: Arc<AtomicU64>,
    hello: Value,
    next_id: AtomicU64,
    timeout: Duration,
}

fn parse_error(v: &Value) -> ErrorShape {
    serde_json::from_value(v.clone()).unwrap_or(ErrorShape {
        code: "UNAVAILABLE".into(),
        message: v.to_string(),
        details: None,
        retryable: None,
        retry_after_ms: None,
    })
}

fn close_info(msg: &Message) -> Option<CloseInfo> {
    match msg {
        Message::Close(Some(frame)) => Some(CloseInfo {
            code: u16::from(frame.code),
            reason: frame.reason.to_string(),
        }),
        Message::Close(None) => Some(CloseInfo {
            code: u16::from(CloseCode::Status),
            reason: String::new(),
        }),
        _ => None,
    }
}

impl Client {
    /// Opens the socket and runs the handshake.
    pub async fn connect(options: &ConnectOptions) -> Result<Client, ClientError> {
        tokio::time::timeout(options.timeout, Self::handshake(options))
            .await
            .map_err(|_| ClientError::Timeout(options.timeout))?
    }

    async fn handshake(options: &ConnectOptions) -> Result<Client, ClientError> {
        let connect_err = |message: String| ClientError::Connect {
            url: options.url.clone(),
            message,
        };
        let mut request = options
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| connect_err(e.to_string()))?;
        if let Some(origin) = &options.origin {
            let value =
                http::HeaderValue::from_str(origin).map_err(|e| connect_err(e.to_string()))?;
            request.headers_mut().insert(http::header::ORIGIN, value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();

        // Wait for the challenge (real clients fall back after 750 ms; we are patient).
        let nonce = loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| ClientError::Protocol(format!("bad challenge frame: {e}")))?;
                    if v["event"] == "connect.challenge" {
                        break v["payload"]["nonce"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
                Some(Ok(msg @ Message::Close(_))) => {
                    return Err(ClientError::Closed(close_info(&msg)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(connect_err(e.to_string())),
                None => return Err(ClientError::Closed(None)),
            }
        };
        let connect_id = format!("connect-{}", uuid::Uuid::new_v4());
        let mut params = options.connect_params();
        if let Some(device) = &options.device {
            let signed_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            params["device"] = device.prove(&params, &nonce, signed_at);
        }
        let frame = json!({"type":"req","id":connect_id,"method":"connect","params":params});
        sink.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| connect_err(e.to_string()))?;

        let mut early_events = Vec::new();
        let hello = loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| ClientError::Protocol(format!("bad frame: {e}")))?;
                    match v["type"].as_str() {
                        Some("res") if v["id"] == connect_id.as_str() => {
                            if v["ok"] == true {
                                break v["payload"].clone();
                            }
                            let error = parse_error(&v["error"]);
                            // The server closes right after; report its close code too.
                            let close = loop {
                                match stream.next().await {
                                    Some(Ok(msg @ Message::Close(_))) => break close_info(&msg),
                                    Some(Ok(_)) => continue,
                                    _ => break None,
                                }
                            };
                            return Err(ClientError::Rejected { error, close });
                        }
                        Some("event") => early_events.push(v),
                        _ => {}
                    }
                }
                Some(Ok(msg @ Message::Close(_))) => {
                    return Err(ClientError::Closed(close_info(&msg)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(connect_err(e.to_string())),
                None => return Err(ClientError::Closed(None)),
            }
        };

        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (events_tx, events) = mpsc::channel(options.event_capacity.max(1));
        let (closed_tx, closed) = watch::channel(None);
        let dropped_events = Arc::new(AtomicU64::new(0));
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Message>(256);

        for v in early_events {
            let _ = events_tx.try_send(to_event(v));
        }

        tokio::spawn(async move {
            while let Some(msg) = outgoing_rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if sink.send(msg).await.is_err() || closing {
                    return;
                }
            }
            // The client was dropped: close the connection (the reader half would otherwise
            // keep the socket open for as long as the gateway does).
            let _ = sink.send(Message::Close(None)).await;
        });

        let reader_pending = pending.clone();
        let reader_dropped = dropped_events.clone();
        tokio::spawn(async move {
            let mut close = None;
            while let Some(item) = stream.next().await {
                let text = match item {
                    Ok(Message::Text(text)) => text,
                    Ok(msg @ Message::Close(_)) => {
                        close = close_info(&msg);
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                match kind.as_str() {
                    "res" => {
                        let id = v["id"].as_str().unwrap_or_default().to_string();
                        let response = Response {
                            ok: v["ok"] == true,
                            payload: v.get("payload").cloned(),
                            error: v.get("error").map(parse_error),
                        };
                        let mut pending = reader_pending.lock();
                        // A method answered twice (`agent`) waits under a second key.
                        let waiter = pending
                            .remove(&id)
                            .or_else(|| pending.remove(&format!("{id}{FINAL_SUFFIX}")));
                        drop(pending);
                        if let Some(tx) = waiter {
                            let _ = tx.send(response);
                        }
                    }
                    "event" if events_tx.try_send(to_event(v)).is_err() => {
                        reader_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            // Closed first, then the waiters dropped: a request registered after the clear
            // sees the close (`send_request`), so none waits for its timeout in vain.
            let _ = closed_tx.send(Some(close.unwrap_or(CloseInfo {
                code: 1006,
                reason: String::new(),
            })));
            reader_pending.lock().clear();
        });

        Ok(Client {
            outgoing,
            pending,
            events,
            closed,
            dropped_events,
            hello,
            next_id: AtomicU64::new(1),
            timeout: options.timeout,
        })
    }

    /// The `hello-ok` payload.
    pub fn hello(&self) -> &Value {
        &self.hello
    }

    /// Sends a request and waits for its response frame (ok or not).
    pub async fn request(&self, method: &str, params: Value) -> Result<Response, ClientError> {
        self.request_with_timeout(method, params, self.timeout)
            .await
    }

    pub async fn request_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let (id, first) = self.send_request(method, params, None).await?;
        self.first_response(&id, first, timeout).await
    }

    /// A request answered twice (`agent`: the ack, then the final result): waits for the
    /// first response and returns it with a receiver of the second.
    pub async fn request_twice(
        &self,
        method: &str,
        params: Value,
    ) -> Result<(Response, oneshot::Receiver<Response>), ClientError> {
        let (final_tx, last) = oneshot::channel();
        let (id, first) = self.send_request(method, params, Some(final_tx)).await?;
        let response = self.first_response(&id, first, self.timeout).await?;
        Ok((response, last))
    }

    /// Registers the waiter(s) of a new request and sends it.
    async fn send_request(
        &self,
        method: &str,
        params: Value,
        second: Option<oneshot::Sender<Response>>,
    ) -> Result<(String, oneshot::Receiver<Response>), ClientError> {
        let id = format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            pending.insert(id.clone(), tx);
            if let Some(second) = second {
                pending.insert(format!("{id}{FINAL_SUFFIX}"), second);
            }
        }
        let frame = json!({"type":"req","id":id,"method":method,"params":params});
        let closed = self.closed.borrow().is_some();
        if closed
            || self
                .outgoing
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
        {
            let mut pending = self.pending.lock();
            pending.remove(&id);
            pending.remove(&format!("{id}{FINAL_SUFFIX}"));
            return Err(ClientError::Closed(self.close_info()));
        }
        Ok((id, rx))
    }

    async fn first_response(
        &self,
        id: &str,
        rx: oneshot::Receiver<Response>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(ClientError::Closed(self.close_info())),
            Err(_) => {
                let mut pending = self.pending.lock();
                pending.remove(id);
                pending.remove(&format!("{id}{FINAL_SUFFIX}"));
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Calls a method; `Err(ClientError::Call)` carries the server's error object.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let response = self.request(method, params).await?;
        if response.ok {
            Ok(response.payload.unwrap_or(Value::Null))
        } else {
            Err(ClientError::Call(response.error.unwrap_or(ErrorShape {
                code: "UNAVAILABLE".into(),
                message: "error response without an error object".into(),
                details: None,
                retryable: None,
                retry_after_ms: None,
            })))
        }
    }

    /// Sends raw text (tests of malformed input).
    pub async fn send_raw(&self, text: String) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::text(text))
            .await
            .map_err(|_| ClientError::Closed(self.close_info()))
    }

    /// The next event, or `None` once the connection is closed and drained.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Waits up to `timeout` for the next event named `name`, skipping others.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.events.recv().await {
                if event.name == name {
                    return Some(event);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Events the owner did not read fast enough and that were dropped.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// How the server closed the socket, once it did.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone()
    }

    /// Waits until the server closes the socket.
    pub async fn closed(&mut self, timeout: Duration) -> Option<CloseInfo> {
        let mut closed = self.closed.clone();
        tokio::time::timeout(timeout, closed.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| v.clone()))
    }

    /// Closes the socket politely.
    pub async fn close(self) {
        let _ = self.outgoing.send(Message::Close(None)).await;
    }
}

fn to_event(v: Value) -> Event {
    Event {
        name: v["event"].as_str().unwrap_or_default().to_string(),
        payload: v.get("payload").cloned().unwrap_or(Value::Null),
        seq: v.get("seq").and_then(Value::as_u64),
        state_version: v.get("stateVersion").cloned(),
    }
}
