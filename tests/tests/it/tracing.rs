//! One trace spans gateway and node: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both export
//! spans over OTLP/gRPC, and the node's span of a forwarded call is a child of the
//! gateway's (trace context carried in gRPC metadata). The collector here is a test double
//! that speaks the real OTLP/gRPC wire format.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;

use argent_tests::{eventually, Gateway, Nats, Node};

/// (service name, span) pairs received by the collector.
#[derive(Default)]
struct Spans(std::sync::Mutex<Vec<(String, Span)>>);

struct Collector(Arc<Spans>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0 .0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn a_forwarded_call_is_one_trace_across_gateway_and_node() {
    let spans = Arc::new(Spans::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(spans.clone())))
            .serve_with_incoming(incoming),
    );
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let nats = Nats::start().await.unwrap();
    let mut builder = Gateway::cluster(&nats);
    for (k, v) in otel {
        builder = builder.env(k, v);
    }
    let gw = builder.start().await.unwrap();
    let _node = Node::start_with_env(&nats, "traced-node", &[], &otel)
        .await
        .unwrap();
    let client = gw.client().await.unwrap();
    eventually(Duration::from_secs(10), || async {
        client
            .call(
                "agents.files.get",
                json!({"agentId":"main","name":"SOUL.md"}),
            )
            .await
            .ok()
    })
    .await
    .expect("forwarded call succeeds");

    // An event published on NATS with a trace context is delivered inside that trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
    );
    let publisher = nats.client().await.unwrap();
    publisher
        .publish_with_headers("argent.evt.traced", headers, r#"{"x":1}"#.into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let delivered = eventually(Duration::from_secs(15), || async {
        let spans = spans.0.lock().unwrap();
        spans
            .iter()
            .any(|(service, span)| {
                service.contains("argent-gateway")
                    && span.name == "event.deliver"
                    && hex(&span.trace_id) == trace_id
            })
            .then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
        "no gateway span in the publisher's trace"
    );

    let linked = eventually(Duration::from_secs(15), || async {
        let spans = spans.0.lock().unwrap();
        let node_spans: Vec<&Span> = spans
            .iter()
            .filter(|(service, span)| service.contains("argent-node") && span.name == "node.invoke")
            .map(|(_, span)| span)
            .collect();
        node_spans.iter().find_map(|node_span| {
            spans
                .iter()
                .find(|(service, span)| {
                    service.contains("argent-gateway")
                        && span.trace_id == node_span.trace_id
                        && span.name == "request"
                })
                .map(|_| ())
        })
    })
    .await;
    assert!(
        linked.is_some(),
        "no gateway `request` span shares a trace with the node's `node.invoke` span: {:?}",
        spans
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, span)| format!("{s} {} {}", span.name, hex(&span.trace_id)))
            .collect::<Vec<_>>()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
