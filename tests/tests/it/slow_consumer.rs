//! One slow client never slows another (PROTOCOL.md §1.7): past its buffer a slow client
//! loses drop-if-slow events (and sees the gap in `seq`) or is closed with 1008
//! `slow consumer`, while a fast client on the same gateway gets every event in order.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use argent_tests::raw::{Next, RawWs};
use argent_tests::{Gateway, Nats};

const EVENTS: usize = 600;
const BATCH: usize = 10;

async fn publish(nats: &async_nats::Client, name: &str, count: usize, pad: usize) {
    let padding = "p".repeat(pad);
    for i in 0..count {
        let payload = json!({"i": i, "pad": padding}).to_string();
        nats.publish(format!("argent.evt.{name}"), Bytes::from(payload))
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();
}

/// NATS and a cluster gateway with a 1 MiB client buffer.
pub async fn small_buffer_gateway() -> (Nats, Gateway) {
    let nats = Nats::start().await.unwrap();
    let gw = Gateway::cluster(&nats)
        .args(&["--max-buffered-bytes", "1048576"])
        .start()
        .await
        .unwrap();
    (nats, gw)
}

/// A cluster gateway with a 1 MiB client buffer, a NATS publisher, and a client that
/// completed its handshake and then stops reading.
async fn setup() -> (Nats, Gateway, async_nats::Client, RawWs) {
    let (nats, gw) = small_buffer_gateway().await;
    let slow = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    let publisher = nats.client().await.unwrap();
    (nats, gw, publisher, slow)
}

#[tokio::test]
async fn slow_clients_are_closed_and_fast_ones_get_everything() {
    let (_nats, gw, publisher, mut slow) = setup().await;
    let mut fast = gw.client().await.unwrap();

    // `agent` events are not droppable: the slow client must be closed. They come in
    // batches the fast client takes as they arrive; the slow one takes nothing.
    let mut last_seq = None;
    let mut received = 0;
    while received < EVENTS {
        publish(&publisher, "agent", BATCH, 32 * 1024).await;
        let batch_end = received + BATCH;
        while received < batch_end {
            let event = tokio::time::timeout(Duration::from_secs(10), fast.next_event())
                .await
                .expect("fast client keeps receiving")
                .expect("fast client stays connected");
            if let Some(prev) = last_seq {
                assert_eq!(event.seq, Some(prev + 1), "no gap for the fast client");
            }
            last_seq = event.seq;
            if event.name == "agent" {
                assert_eq!(event.payload["i"], received % BATCH);
                received += 1;
            }
        }
    }
    assert_eq!(fast.dropped_events(), 0);
    assert_eq!(
        slow.closed(Duration::from_secs(20)).await,
        Next::Close(1008, "slow consumer".into())
    );
    assert!(fast.call("health", json!({})).await.is_ok());
}

#[tokio::test]
async fn droppable_events_are_skipped_with_a_visible_gap() {
    let (_nats, _gw, publisher, mut slow) = setup().await;
    // `heartbeat` is drop-if-slow. More than the kernel's socket buffers and the 1 MiB
    // outbox hold together, so some must be dropped while the client does not read.
    const MANY: usize = 2 * EVENTS;
    publish(&publisher, "heartbeat", MANY, 32 * 1024).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Then one small marker event; the client reads everything up to it.
    publisher
        .publish(
            "argent.evt.heartbeat",
            bytes::Bytes::from(r#"{"marker":true}"#),
        )
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let mut seqs = Vec::new();
    let marker = loop {
        match slow.next(Duration::from_secs(20)).await {
            Next::Frame(frame) if frame["payload"]["marker"] == true => {
                break frame["seq"].as_u64().unwrap()
            }
            Next::Frame(frame) if frame["event"] == "heartbeat" => {
                seqs.push(frame["seq"].as_u64().unwrap())
            }
            Next::Frame(_) => {}
            other => panic!("the slow client must stay open: {other:?}"),
        }
    };
    assert!(
        seqs.len() < MANY,
        "some events were dropped ({} of {MANY} arrived)",
        seqs.len()
    );
    // Every dropped event consumed a seq, so the client sees each gap where it happened.
    let gaps: u64 = seqs
        .windows(2)
        .map(|w| w[1] - w[0] - 1)
        .chain([marker - seqs.last().unwrap() - 1])
        .sum();
    assert!(gaps > 0, "the client sees the gap");
    assert!(
        marker > MANY as u64,
        "all {MANY} heartbeats were numbered: the marker is {marker}"
    );
    match slow.call("h", "health", json!({})).await {
        Next::Frame(frame) => assert_eq!(frame["ok"], true),
        other => panic!("{other:?}"),
    }
}
