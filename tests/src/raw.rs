//! A raw WebSocket peer for tests of malformed input and close codes: it sends exactly the
//! bytes it is told and reports exactly what comes back.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the server did next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Frame(Value),
    Close(u16, String),
    /// The socket ended without a close frame.
    Ended,
    /// Nothing within the wait.
    Silent,
}

pub struct RawWs {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawWs {
    /// Opens the socket (no handshake); `headers` are added to the upgrade request.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<RawWs> {
        let mut request = url.into_client_request()?;
        for (k, v) in headers {
            request.headers_mut().insert(http_name(k), v.parse()?);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
        Ok(RawWs { socket })
    }

    /// Opens the socket and consumes `connect.challenge`, returning its payload.
    pub async fn open_challenged(url: &str) -> anyhow::Result<(RawWs, Value)> {
        let mut ws = Self::open(url, &[]).await?;
        match ws.next(Duration::from_secs(5)).await {
            Next::Frame(frame) if frame["event"] == "connect.challenge" => {
                Ok((ws, frame["payload"].clone()))
            }
            other => anyhow::bail!("expected connect.challenge, got {other:?}"),
        }
    }

    /// Opens, reads the challenge, and completes a CLI-style handshake with `token`.
    pub async fn connected(url: &str, token: &str) -> anyhow::Result<RawWs> {
        let (mut ws, _) = Self::open_challenged(url).await?;
        ws.send_json(&connect_frame("c1", token)).await?;
        match ws.next(Duration::from_secs(5)).await {
            Next::Frame(frame) if frame["ok"] == true => Ok(ws),
            other => anyhow::bail!("handshake failed: {other:?}"),
        }
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(Message::text(text.to_string())).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.socket.send(Message::binary(bytes)).await?;
        Ok(())
    }

    pub async fn send_json(&mut self, value: &Value) -> anyhow::Result<()> {
        self.send_text(&value.to_string()).await
    }

    /// Writes one client frame byte for byte (masked as a client must), bypassing the
    /// library: `first` is the frame's first byte (FIN, RSV bits, opcode). For frames no
    /// well-behaved client sends (RSV bits, invalid UTF-8 in a text frame).
    /// The whole frame goes out in one write, as one piece.
    pub async fn send_raw_frame(&mut self, first: u8, payload: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(first);
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        match self.socket.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp.write_all(&frame).await?,
            _ => anyhow::bail!("plain sockets only"),
        }
        Ok(())
    }

    /// Sends any message (a ping, a close…) as it is.
    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        self.socket.send(message).await?;
        Ok(())
    }

    /// The next message of any kind, as the library parsed it (`None`: ended or nothing
    /// within `wait`).
    pub async fn next_message(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.socket.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            _ => None,
        }
    }

    /// The next frame, close or end, within `wait` (pings are skipped).
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let item = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Next::Silent,
                Ok(item) => item,
            };
            return match item {
                Some(Ok(Message::Text(text))) => Next::Frame(
                    serde_json::from_str(&text).unwrap_or(Value::String(text.to_string())),
                ),
                Some(Ok(Message::Close(Some(frame)))) => {
                    Next::Close(u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => Next::Close(1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Next::Ended,
            };
        }
    }

    /// Skips events until the response with `id`.
    pub async fn response(&mut self, id: &str, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Frame(frame) if frame["type"] == "event" => continue,
                Next::Frame(frame) if frame["type"] == "res" && frame["id"] != id => continue,
                other => return other,
            }
        }
    }

    /// Sends a request and waits for its response frame.
    pub async fn call(&mut self, id: &str, method: &str, params: Value) -> Next {
        let frame = json!({"type":"req","id":id,"method":method,"params":params});
        if self.send_json(&frame).await.is_err() {
            return Next::Ended;
        }
        self.response(id, Duration::from_secs(10)).await
    }

    /// Waits for the close (skipping frames).
    pub async fn closed(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Frame(_) => continue,
                other => return other,
            }
        }
    }
}

fn http_name(name: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
        .expect("valid header name")
}

/// A CLI `connect` request frame.
pub fn connect_frame(id: &str, token: &str) -> Value {
    json!({"type":"req","id":id,"method":"connect","params":{
        "minProtocol":3,"maxProtocol":3,
        "client":{"id":"cli","version":"test","platform":"linux","mode":"cli"},
        "auth":{"token":token}}})
}
