//! AEAP codec and transaction costs: `cargo bench --bench aeap`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::Instant;
use voxpbx::aeap::message::{decode, encode_request, Json};
use voxpbx::aeap::transaction::Transactions;

const SET_RESULTS: &str = r#"{"request":"set","id":"7d2a4b6e-1c3f-4a5b-9d8e-0f1a2b3c4d5e","params":{"results":[{"text":"hello world","score":87,"grammar":"g1","best":0},{"text":"hollow world","score":40,"grammar":"g1","best":1}]}}"#;
const SETUP_RESPONSE: &str = r#"{"response":"setup","id":"0b6f0c8e-2d1c-4e54-9a0c-5f0d3f5f7a11","codecs":[{"name":"ulaw","sampleRate":8000,"attributes":[]}],"params":{"language":"en-US"}}"#;

fn bench(c: &mut Criterion) {
    c.bench_function("aeap_decode_set_results", |b| {
        b.iter(|| decode(black_box(SET_RESULTS)))
    });
    c.bench_function("aeap_decode_setup_response", |b| {
        b.iter(|| decode(black_box(SETUP_RESPONSE)))
    });
    let big = format!(
        r#"{{"request":"set","id":"x","params":{{"results":[{}]}}}}"#,
        vec![r#"{"text":"the quick brown fox jumps over the lazy dog","score":50,"best":0}"#; 300]
            .join(",")
    );
    c.bench_function("aeap_decode_24k_results", |b| {
        b.iter(|| decode(black_box(&big)))
    });
    let body = vec![
        ("version".to_string(), Json::str("0.1.0")),
        (
            "codecs".to_string(),
            Json::Array(vec![Json::object([("name", Json::str("ulaw"))])]),
        ),
        (
            "params".to_string(),
            Json::object([("language", Json::str("en-US"))]),
        ),
    ];
    c.bench_function("aeap_encode_setup", |b| {
        b.iter(|| {
            encode_request(
                "setup",
                black_box("0b6f0c8e-2d1c-4e54-9a0c-5f0d3f5f7a11"),
                black_box(&body),
            )
        })
    });
    c.bench_function("aeap_transaction_roundtrip", |b| {
        let mut tx = Transactions::default();
        let now = Instant::now();
        b.iter(|| {
            let (id, _) = tx.send_request(now, "get", &[]);
            let reply = format!(r#"{{"response":"get","id":"{id}","params":{{"results":[]}}}}"#);
            tx.handle_text(now, &reply)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
