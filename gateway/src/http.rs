//! The HTTP listener for operations: `/healthz` (process alive), `/readyz` (ready for
//! traffic: not draining and, in cluster mode, connected to NATS), `/metrics` (Prometheus).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::context::Ctx;

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    if ctx.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !ctx.health.nats_connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "nats unreachable\n")
    } else if !ctx.state.is_healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "state store refuses writes\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    ctx.metrics
        .nats_connected
        .set(i64::from(ctx.health.nats_connected()));
    ctx.metrics.live_nodes.set(ctx.nodes.live().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

/// Serves until `stop` flips to true.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%err, "HTTP listener failed");
    }
}
