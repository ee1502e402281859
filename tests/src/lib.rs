//! Test harness: real `nats-server`, gateways and node-agents as processes on free loopback
//! ports, each with its own temp dir, killed when dropped.
//!
//! ```text
//! let nats = Nats::start().await?;
//! let gw = Gateway::cluster(&nats, TOKEN).start().await?;
//! let client = gw.client().await?;
//! client.call("health", json!({})).await?;
//! ```

#![forbid(unsafe_code)]

pub mod channel_doubles;
pub mod device;
pub mod documents;
pub mod embeddings_double;
pub mod model_double;
pub mod raw;
pub mod speech_double;
pub mod tmpfs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tempfile::TempDir;

use argent_client::{Client, ConnectOptions};

/// The shared secret test clusters use.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Directory holding the workspace's binaries (`target/debug` next to the test binary).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// `nats-server` from `NATS_SERVER_BIN` or `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    PathBuf::from("nats-server")
}

/// A child process killed on drop; its stderr goes to a log file shown when a test fails.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Lines the process printed on stdout after the first one.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Proc {
    fn spawn(
        name: &str,
        mut command: Command,
        log: PathBuf,
    ) -> anyhow::Result<(Self, Option<Value>)> {
        let stderr = std::fs::File::create(&log)?;
        command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().expect("piped");
        // The first stdout line announces where it listens (gateways and node-agents), or
        // that a node waits for approval; later lines stay readable with `next_line`.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let mut proc = Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            lines: Some(rx),
        };
        match first {
            Ok(line) => {
                let value = serde_json::from_str(&line)
                    .with_context(|| format!("{name} printed {line:?}"))?;
                Ok((proc, Some(value)))
            }
            Err(_) => {
                let status = proc.try_wait();
                bail!("{name} did not start ({status:?}):\n{}", proc.log_tail())
            }
        }
    }

    /// The next JSON line the process prints on stdout, within `within`.
    pub fn next_line(&self, within: Duration) -> Option<Value> {
        let line = self.lines.as_ref()?.recv_timeout(within).ok()?;
        serde_json::from_str(&line).ok()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not exit within {within:?} after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_tail());
        }
        self.kill();
    }
}

/// A `nats-server` with JetStream on a free port and its own storage dir.
/// NATS' default `max_payload` (bytes), which the test servers keep: every cluster test
/// with a value over it goes through the object store (`argent_planes::blobs`).
pub const NATS_MAX_PAYLOAD: usize = 1024 * 1024;

pub struct Nats {
    pub url: String,
    port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

impl Nats {
    pub async fn start() -> anyhow::Result<Nats> {
        let dir = tempfile::tempdir()?;
        let mut nats = Nats {
            url: String::new(),
            port: 0,
            dir,
            proc: None,
        };
        nats.launch(None)?;
        Ok(nats)
    }

    fn launch(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let store = self.dir.path().join("js");
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports)?;
        let config = self.dir.path().join("nats.conf");
        std::fs::write(&config, format!("max_payload: {NATS_MAX_PAYLOAD}\n"))?;
        let mut command = Command::new(nats_server_bin());
        command
            .arg("-c")
            .arg(&config)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into()))
            .arg("-sd")
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(&ports);
        let log = self.dir.path().join("nats.log");
        let stderr = std::fs::File::create(&log)?;
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start nats-server (install it: see README)")?;
        let proc = Proc {
            name: "nats-server".into(),
            child: Some(child),
            log,
            lines: None,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let url = loop {
            if let Some(url) = read_ports_file(&ports) {
                break url;
            }
            if std::time::Instant::now() > deadline {
                bail!("nats-server did not start:\n{}", proc.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        self.url = url;
        self.proc = Some(proc);
        Ok(())
    }

    /// Kills the server (as a crash).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let port = self.port;
        self.launch(Some(port))
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(&self.url).await?)
    }
}

fn read_ports_file(dir: &Path) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        if let Some(url) = value["nats"][0].as_str() {
            return Some(url.to_string());
        }
    }
    None
}

/// How to start a gateway.
pub struct GatewayBuilder {
    nats: Option<String>,
    token: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    state_dir: Option<PathBuf>,
    /// Listen where the config says (no `--port 0`).
    configured_port: bool,
}

/// A running `argent gateway run`.
pub struct Gateway {
    pub ws: String,
    pub http: String,
    pub id: String,
    pub token: String,
    pub proc: Proc,
    pub state_dir: PathBuf,
    _dir: Option<TempDir>,
}

impl Gateway {
    /// The one-process default in a fresh state dir (token generated on first run).
    pub fn local() -> GatewayBuilder {
        GatewayBuilder {
            nats: None,
            token: None,
            args: Vec::new(),
            env: Vec::new(),
            state_dir: None,
            configured_port: false,
        }
    }

    /// A cluster gateway with the shared token in its environment.
    pub fn cluster(nats: &Nats) -> GatewayBuilder {
        GatewayBuilder {
            nats: Some(nats.url.clone()),
            token: Some(TOKEN.to_string()),
            args: Vec::new(),
            env: Vec::new(),
            state_dir: None,
            configured_port: false,
        }
    }

    /// Connect options for a CLI-style operator with the right token.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::cli(&self.ws, Some(self.token.clone()))
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.options()).await?)
    }

    /// A client with custom options (role, scopes, mode…).
    pub async fn client_with(&self, f: impl FnOnce(&mut ConnectOptions)) -> anyhow::Result<Client> {
        let mut options = self.options();
        f(&mut options);
        Ok(Client::connect(&options).await?)
    }

    /// A value of the gateway's `/metrics` (the first sample whose name starts with
    /// `name`).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = self.http_get("/metrics").await?;
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("metric {name} missing"))
    }

    /// `GET` on the operations listener: (status, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_request(&self.http, "GET", path, &[], b"").await
    }
}

/// The error response of a call that must fail (panics on a success or a transport
/// failure, saying which).
pub fn call_error(
    result: Result<Value, argent_client::ClientError>,
) -> argent_proto::errors::ErrorShape {
    match result {
        Err(argent_client::ClientError::Call(e)) => e,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// [`call_error`] with its code, and a message containing `fragment`.
pub fn expect_error(
    result: Result<Value, argent_client::ClientError>,
    code: &str,
    fragment: &str,
) -> argent_proto::errors::ErrorShape {
    let error = call_error(result);
    assert_eq!(error.code, code, "{}", error.message);
    assert!(
        error.message.contains(fragment),
        "{:?} does not contain {fragment:?}",
        error.message
    );
    error
}

/// One HTTP/1.1 request on a fresh connection to `base` (`http://host:port` or
/// `ws://host:port`): (status, body).
pub async fn http_request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response {response:?}"))?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, body))
}

impl GatewayBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Reuse a state dir (restart tests).
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// Listen on the port the state dir's config names, not on a free one.
    pub fn configured_port(mut self) -> Self {
        self.configured_port = true;
        self
    }

    pub async fn start(self) -> anyhow::Result<Gateway> {
        let temp = match &self.state_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir()?),
        };
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| temp.as_ref().expect("made above").path().to_path_buf());
        let mut command = Command::new(binary("argent"));
        command
            .args(["gateway", "run", "--http-port", "0"])
            .args(if self.configured_port {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&self.args)
            .env_remove("ARGENT_GATEWAY_TOKEN")
            .env_remove("ARGENT_NATS_URL")
            .env(
                "ARGENT_LOG",
                std::env::var("TEST_ARGENT_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(nats) = &self.nats {
            command.arg("--nats").arg(nats);
        }
        if let Some(token) = &self.token {
            command.env("ARGENT_GATEWAY_TOKEN", token);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = state_dir.join(format!("gateway-{}.log", uuid::Uuid::new_v4().simple()));
        let (proc, line) = Proc::spawn("gateway", command, log)?;
        let line = line.ok_or_else(|| anyhow!("gateway printed nothing"))?;
        // A gateway configured for password auth has no token.
        let token = match self.token {
            Some(token) => token,
            None => read_token(&state_dir).unwrap_or_default(),
        };
        Ok(Gateway {
            ws: line["ws"].as_str().unwrap_or_default().to_string(),
            http: line["http"].as_str().unwrap_or_default().to_string(),
            id: line["gatewayId"].as_str().unwrap_or_default().to_string(),
            token,
            proc,
            state_dir,
            _dir: temp,
        })
    }
}

/// The token the gateway wrote into `<state dir>/argent.json`.
/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

pub fn read_token(state_dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(state_dir.join("argent.json"))?;
    let value: Value = serde_json::from_str(&text)?;
    value["gateway"]["auth"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no gateway.auth.token in argent.json"))
}

/// A running `argent-node run`.
pub struct Node {
    pub id: String,
    pub grpc: String,
    pub proc: Proc,
    _dir: Option<TempDir>,
}

impl Node {
    pub async fn start(nats: &Nats, id: &str) -> anyhow::Result<Node> {
        Self::start_with(nats, id, &[]).await
    }

    pub async fn start_with(nats: &Nats, id: &str, args: &[&str]) -> anyhow::Result<Node> {
        Self::start_with_env(nats, id, args, &[]).await
    }

    pub async fn start_with_env(
        nats: &Nats,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let mut node = Self::start_in(nats, id, dir.path(), args, env).await?;
        node._dir = Some(dir);
        Ok(node)
    }

    /// A node-agent keeping its state in `state_dir` (which outlives it: start another
    /// one there to see what a restart keeps).
    pub async fn start_in(
        nats: &Nats,
        id: &str,
        state_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Node> {
        let mut command = Command::new(binary("argent-node"));
        command
            .args(["run", "--grpc-listen", "127.0.0.1:0", "--node-id", id])
            .arg("--nats")
            .arg(&nats.url)
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .env("ARGENT_GATEWAY_TOKEN", TOKEN)
            .env("ARGENT_LOG", "info")
            .envs(env.iter().copied());
        let log = state_dir.join("node.log");
        let (proc, line) = Proc::spawn(&format!("node {id}"), command, log)?;
        let line = line.ok_or_else(|| anyhow!("node printed nothing"))?;
        Ok(Node {
            id: id.to_string(),
            grpc: line["grpc"].as_str().unwrap_or_default().to_string(),
            proc,
            _dir: None,
        })
    }
}

/// A node-agent that joins by pairing (no cluster secret): `first` is its first line,
/// `{"event":"pairing",…}` while it waits for approval or `{"event":"listening",…}`.
pub struct JoiningNode {
    pub proc: Proc,
    pub first: Value,
}

impl JoiningNode {
    pub async fn start(nats: &Nats, gateway_ws: &str, state_dir: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(binary("argent-node"));
        command
            .args(["run", "--grpc-listen", "127.0.0.1:0"])
            .arg("--nats")
            .arg(&nats.url)
            .arg("--gateway")
            .arg(gateway_ws)
            .arg("--state-dir")
            .arg(state_dir)
            .env_remove("ARGENT_GATEWAY_TOKEN")
            .env(
                "ARGENT_LOG",
                std::env::var("TEST_ARGENT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = state_dir.join(format!("node-{}.log", uuid::Uuid::new_v4().simple()));
        let (proc, first) = Proc::spawn("joining node", command, log)?;
        Ok(JoiningNode {
            proc,
            first: first.unwrap_or(Value::Null),
        })
    }
}

/// Polls `check` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal (`STOP`, `CONT`, `KILL`, …) to a process the test started.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The node the gateways route `key` to among the node ids `ids` that serve `capability`
/// (rendezvous hashing, as `argent_gateway::select` ranks them).
pub fn route_owner(capability: &str, key: &str, ids: &[&str]) -> String {
    let records: Vec<argent_planes::members::NodeRecord> = ids
        .iter()
        .map(|id| argent_planes::members::NodeRecord {
            id: id.to_string(),
            address: String::new(),
            capabilities: vec![capability.into()],
            version: String::new(),
            host: String::new(),
            in_flight: 0,
            paired: false,
            started_at_ms: 0,
            heartbeat_at_ms: 0,
        })
        .collect();
    argent_gateway::select::rank(&records, capability, key)[0]
        .id
        .clone()
}

/// Serves a third-party double's `app` on a free loopback port until the handle is
/// aborted; returns its address. Small streamed chunks do not wait for the client's
/// delayed ACK (no Nagle).
pub async fn serve_double(
    what: &str,
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the {what} on loopback: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    let server = tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // Only ends when aborted; an accept error has nowhere better to go.
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}
