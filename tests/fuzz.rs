//! Bounded fuzzing, on stable Rust, of the parsers that read what an LLM server sends: the
//! streamed reply (SSE, through the real client and a server that writes whatever bytes it is
//! given) and the model's JSON answer (validation). No input may panic; every input ends as a
//! reply or a classified error. `PROPTEST_CASES` sets the cases per target; each target prints
//! its cases and seconds (`cargo test --test fuzz -- --nocapture`). The ingest readers are
//! fuzzed in `tests/ingest_fuzz.rs`, `Retry-After` and the Prometheus text in unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palate::config::{Config, JobFile};
use palate::domain::Kind;
use palate::infer::{ChatRequest, LlmClient, OpenAiClient, Reply};
use palate::validate::{validate, Expect};
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cases(default: u32) -> Cases {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Cases {
        cases: n,
        failure_persistence: None,
        ..Cases::default()
    }
}

/// A valid streamed reply, as chunks, for the mutations to start from.
fn valid_stream() -> Vec<u8> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut s = String::new();
    for c in [
        chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        ),
        chunk(serde_json::json!({"content": "{\"summary\":"}), None),
        chunk(
            serde_json::json!({"content": "\"Good broth.\"}"}),
            Some("stop"),
        ),
    ] {
        s.push_str(&format!("data: {c}\n\n"));
    }
    s.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

/// Byte-level mutations of `base`: flips, inserted SSE syntax, cuts, splices.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static [u8]> = vec![
        b"\n",
        b"\r\n",
        b"\n\n",
        b"data: ",
        b"data:",
        b"event: error\n",
        b":",
        b"{",
        b"}",
        b"\"",
        b"[DONE]",
        b"\x00",
        b"\xff\xfe",
        b"retry: 1\n",
        b"null",
        b"1e999",
        "가".as_bytes(),
    ];
    let n = base.len();
    let op = prop_oneof![
        (0..n, any::<u8>()).prop_map(|(i, b)| (0u8, i, vec![b])),
        (0..n, proptest::sample::select(tokens)).prop_map(|(i, t)| (1u8, i, t.to_vec())),
        (0..n).prop_map(|i| (2u8, i, Vec::new())),
        (0..n, 0..n).prop_map(|(i, j)| (3u8, i, vec![(j % 251) as u8])),
    ];
    proptest::collection::vec(op, 1..6).prop_map(move |ops| {
        let mut b = base.clone();
        for (kind, i, bytes) in ops {
            let i = i.min(b.len());
            match kind {
                0 if i < b.len() => b[i] = bytes[0],
                1 => b.splice(i..i, bytes).for_each(drop),
                2 => b.truncate(i),
                3 => {
                    let j = (i + bytes[0] as usize).min(b.len());
                    b.drain(i..j);
                }
                _ => {}
            }
        }
        b
    })
}

/// A server that answers every request with the bytes currently in `body` as an event stream.
async fn server(body: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                let mut seen = Vec::new();
                while !request_complete(&seen) {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(&body).await;
            });
        }
    });
    url
}

/// Headers and the `Content-Length` body of a request have arrived.
fn request_complete(seen: &[u8]) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = (text[..end].lines())
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    seen.len() >= end + 4 + length
}

#[test]
fn fuzz_the_sse_stream_through_the_client() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = Arc::new(Mutex::new(Vec::new()));
    let url = rt.block_on(server(Arc::clone(&body)));
    let mut f = JobFile::default();
    f.llm.endpoints = vec![url];
    f.llm.model = "m".into();
    f.llm.attempts = 1;
    f.llm.read_timeout_s = 2.0;
    f.llm.keep_alive = false;
    // Most streams fail: the endpoint must not be ejected for it.
    f.llm.eject_after_failures = u32::MAX;
    let llm = OpenAiClient::new(&Config::validate(f).unwrap().llm).unwrap();
    let plan = common::plan_of(&["Great broth."]);
    let r = &plan.requests[1];
    let req = ChatRequest {
        restaurant_id: "x".into(),
        kind: r.kind,
        attempt: 1,
        messages: r.messages.clone(),
        schema: r.schema.clone(),
        max_tokens: r.max_tokens,
        prefill_tokens: 1,
    };
    // The unmutated stream is read as a reply.
    *body.lock().unwrap() = valid_stream();
    let o = rt.block_on(llm.chat(&req));
    assert_eq!(o.result.unwrap().content, "{\"summary\":\"Good broth.\"}");
    let (t, runs, ok) = (Instant::now(), AtomicU64::new(0), AtomicU64::new(0));
    let mut runner = TestRunner::new(cases(5_000));
    let strategy = prop_oneof![
        mutated(valid_stream()),
        proptest::collection::vec(any::<u8>(), 0..400),
    ];
    runner
        .run(&strategy, |bytes| {
            *body.lock().unwrap() = bytes;
            let o = rt.block_on(llm.chat(&req));
            runs.fetch_add(1, Ordering::Relaxed);
            ok.fetch_add(o.result.is_ok() as u64, Ordering::Relaxed);
            prop_assert_eq!(o.metrics.len(), 1, "one attempt, recorded");
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz sse: {} streams in {:.1} s ({} read as a reply, the rest a classified error)",
        runs.into_inner(),
        t.elapsed().as_secs_f64(),
        ok.into_inner()
    );
}

#[test]
fn fuzz_the_models_json_through_validation() {
    let plan = common::plan_of(&["Great broth.", "Rude staff but fast.", "가성비 좋아요"]);
    let valid = [
        (
            Kind::Sentiment,
            r#"{"R1":"positive","R2":"mixed","R3":"positive"}"#,
        ),
        (
            Kind::Summary,
            r#"{"summary":"Reviewers praise the broth and the prices, and some find the staff rude.","aspects":{"food":{"sentiment":"positive","summary":"The broth is praised."}}}"#,
        ),
        (
            Kind::Strengths,
            r#"{"strengths":[{"title":"Broth","detail":"Reviewers praise the broth.","evidence":[{"ref":"R1","quote":"Great broth."}]}]}"#,
        ),
    ];
    let (t, runs) = (Instant::now(), AtomicU64::new(0));
    for (kind, answer) in valid {
        let req = plan.requests.iter().find(|r| r.kind == kind).unwrap();
        let reply = |content: String| Reply {
            content,
            finish_reason: Some("stop".into()),
            model: "m".into(),
        };
        let expect = Expect {
            language: req.language,
            labels: None,
            instructions: &req.messages[0].content,
        };
        let checked = validate(kind, &reply(answer.into()), &req.refs, expect);
        assert!(checked.is_ok(), "{kind:?}: {checked:?}");
        let text = prop_oneof![
            mutated(answer.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..200),
            // Deep nesting.
            (1usize..5000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        ];
        let mut runner = TestRunner::new(cases(30_000));
        runner
            .run(&text, |bytes| {
                let content = String::from_utf8_lossy(&bytes).into_owned();
                let _ = validate(kind, &reply(content), &req.refs, expect);
                runs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
    }
    eprintln!(
        "fuzz model json: {} answers in {:.1} s",
        runs.into_inner(),
        t.elapsed().as_secs_f64()
    );
}
