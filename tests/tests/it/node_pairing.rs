//! The legacy node pairing store across gateways (PROTOCOL.md §5.13 `node.pair.*`,
//! `node.rename`): requested on one gateway, approved on another, tokens shown once.

use std::time::Duration;

use serde_json::json;

use argent_client::ClientError;
use argent_tests::{Gateway, Nats};

const WAIT: Duration = Duration::from_secs(5);

fn error_message(result: Result<serde_json::Value, ClientError>) -> String {
    match result {
        Err(ClientError::Call(e)) => e.message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn request_on_one_gateway_approve_on_another() {
    let nats = Nats::start().await.unwrap();
    let a = Gateway::cluster(&nats).start().await.unwrap();
    let b = Gateway::cluster(&nats).start().await.unwrap();
    let on_a = a.client().await.unwrap();
    let mut on_b = b.client().await.unwrap();

    let params =
        json!({"nodeId":"mac studio","displayName":"Studio","platform":"macos","caps":["canvas"]});
    let first = on_a
        .call("node.pair.request", params.clone())
        .await
        .unwrap();
    assert_eq!(first["status"], "pending");
    assert_eq!(first["created"], true);
    let request_id = first["request"]["requestId"].as_str().unwrap().to_string();
    let again = on_a.call("node.pair.request", params).await.unwrap();
    assert_eq!(again["created"], false, "one pending request per node");
    assert_eq!(again["request"]["requestId"], request_id.as_str());

    let requested = on_b
        .wait_event("node.pair.requested", WAIT)
        .await
        .expect("event on B");
    assert_eq!(requested.payload["nodeId"], "mac studio");
    let list = on_b.call("node.pair.list", json!({})).await.unwrap();
    assert_eq!(list["pending"][0]["requestId"], request_id.as_str());

    let approved = on_b
        .call("node.pair.approve", json!({"requestId": request_id}))
        .await
        .unwrap();
    let token = approved["node"]["token"].as_str().unwrap().to_string();
    assert_eq!(approved["node"]["displayName"], "Studio");
    let resolved = on_b
        .wait_event("node.pair.resolved", WAIT)
        .await
        .expect("resolved");
    assert_eq!(resolved.payload["decision"], "approved");

    let list = on_a.call("node.pair.list", json!({})).await.unwrap();
    assert_eq!(list["pending"], json!([]));
    assert_eq!(list["paired"][0]["nodeId"], "mac studio");
    assert!(
        !list.to_string().contains(&token),
        "the token is shown once"
    );
    assert!(list["paired"][0].get("tokenHash").is_none());

    let ok = on_a
        .call(
            "node.pair.verify",
            json!({"nodeId":"mac studio","token": token}),
        )
        .await
        .unwrap();
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["node"]["platform"], "macos");
    let no = on_a
        .call(
            "node.pair.verify",
            json!({"nodeId":"mac studio","token":"nope"}),
        )
        .await
        .unwrap();
    assert_eq!(no, json!({"ok": false}));

    let renamed = on_a
        .call(
            "node.rename",
            json!({"nodeId":"mac studio","displayName":"Big Mac"}),
        )
        .await
        .unwrap();
    assert_eq!(renamed["displayName"], "Big Mac");
    assert_eq!(
        error_message(
            on_a.call("node.rename", json!({"nodeId":"ghost","displayName":"x"}))
                .await
        ),
        "unknown nodeId"
    );
    assert_eq!(
        error_message(
            on_b.call("node.pair.approve", json!({"requestId": request_id}))
                .await
        ),
        "unknown requestId"
    );

    // Rejection ends a request.
    let other = on_a
        .call("node.pair.request", json!({"nodeId":"pi"}))
        .await
        .unwrap();
    let other_id = other["request"]["requestId"].as_str().unwrap().to_string();
    let rejected = on_b
        .call("node.pair.reject", json!({"requestId": other_id}))
        .await
        .unwrap();
    assert_eq!(rejected["nodeId"], "pi");
    assert_eq!(
        error_message(
            on_b.call("node.pair.reject", json!({"requestId": other_id}))
                .await
        ),
        "unknown requestId"
    );
}
