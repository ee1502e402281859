//! The gRPC face of the node-agent (`argent.node.v1.NodeAgent`).
//!
//! Every call must carry `authorization: Bearer <credential>`; anything else is refused with
//! `UNAUTHENTICATED` before any work is done. The gateway's deadline bounds the execution.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use argent_planes::calls::{bearer, reply_from_result, MethodHandler};
use argent_proto::errors::RpcError;
use argent_proto::grpc::node_agent_server::NodeAgent;
use argent_proto::grpc::{InvokeChunk, InvokeReply, InvokeRequest, PingReply, PingRequest};

use crate::worker::{Worker, CAPABILITIES};

pub struct NodeService {
    worker: Arc<Worker>,
    expected: String,
}

impl NodeService {
    pub fn new(worker: Arc<Worker>, credential: &str) -> Self {
        NodeService {
            worker,
            expected: bearer(credential),
        }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(self.expected.as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong node credential"))
        }
    }

    async fn execute(&self, request: Request<InvokeRequest>) -> Result<InvokeReply, Status> {
        self.authenticate(&request)?;
        let headers: HashMap<String, String> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                }
                _ => None,
            })
            .collect();
        let call = request.into_inner();
        let span = tracing::info_span!("node.invoke", method = %call.method, request_id = %call.request_id);
        argent_planes::trace::set_parent_from_headers(&span, &headers);
        let result = async {
            let params = serde_json::from_str(&call.params_json).map_err(|e| {
                RpcError::invalid_params(&call.method, &format!("params are not JSON: {e}"))
            })?;
            let caller = call.caller.clone().unwrap_or_default();
            // Relative to our own clock: the gateway's wall clock may differ from ours.
            let budget = match call.timeout_ms {
                0 => MAX_CALL_TIME,
                ms => Duration::from_millis(ms).min(MAX_CALL_TIME),
            };
            match tokio::time::timeout(budget, self.worker.invoke(&call.method, params, &caller))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(RpcError::unavailable(format!(
                    "{} did not finish before its deadline",
                    call.method
                ))),
            }
        }
        .instrument(span)
        .await;
        Ok(reply_from_result(result))
    }
}

/// Upper bound of one call, whatever the caller asked for.
const MAX_CALL_TIME: Duration = Duration::from_secs(600);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<InvokeChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NodeAgent for NodeService {
    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeReply>, Status> {
        self.execute(request).await.map(Response::new)
    }

    type InvokeStreamStream = ChunkStream;

    /// Methods of this release answer once, so the stream carries one final chunk.
    async fn invoke_stream(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<Self::InvokeStreamStream>, Status> {
        let reply = self.execute(request).await?;
        let chunk = InvokeChunk {
            reply: Some(reply),
            r#final: true,
        };
        let stream: ChunkStream = Box::pin(futures_util::stream::iter([Ok(chunk)]));
        Ok(Response::new(stream))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        self.authenticate(&request)?;
        Ok(Response::new(PingReply {
            node_id: self.worker.node_id().to_string(),
            version: crate::VERSION.to_string(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            in_flight: self.worker.in_flight() as u32,
        }))
    }
}
