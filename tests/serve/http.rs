//! HTTP as a webhook server meets it: malformed requests, plain HTTP only when asked, slow
//! clients, a busy pool.

use super::*;

#[test]
fn malformed_requests_get_http_errors_with_a_reason() {
    let server = Server::start_with(
        json!({"null": {"module": p(&null_policy())}}),
        &["--max-body-bytes", "4096"],
    );
    let (status, body) = server.post("/validate/null", "{\"apiVersion\": ");
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, body) = server.post("/validate/null", r#"{"kind": "AdmissionReview"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("has no request"), "{body}");
    let review = review_of(&pod(json!({})), "22222222-0000-0000-0000-000000000001");
    let (status, body) = server.post("/validate/nope", review.to_string());
    assert_eq!(status, 404);
    assert!(body.contains("unknown policy \"nope\""), "{body}");
    let mut big = pod(json!({"padding": "x".repeat(8192)}));
    big["metadata"]["name"] = json!("big");
    let (status, _) = server.post("/validate/null", review_of(&big, "u").to_string());
    assert_eq!(status, 413, "a body over --max-body-bytes is refused");
    let (status, _) = server.get("/validate/null");
    assert_eq!(status, 405);
    // None of that disturbed the server.
    assert_eq!(server.review("/validate/null", &review)["allowed"], true);
}

#[test]
fn plain_http_only_when_asked_for() {
    let config = json!({"null": {"module": p(&null_policy())}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = run(&["serve", "--config", p(&file), "--addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--insecure-plain-http"),
        "{}",
        stderr(&out)
    );

    let server = Server::start_with(config, &["--insecure-plain-http"]);
    assert!(server.base.starts_with("http://"));
    let review = review_of(&pod(json!({})), "55555555-0000-0000-0000-000000000001");
    assert_eq!(server.review("/validate/null", &review)["allowed"], true);
}

/// A client that sends its headers, or its body, a byte at a time is cut off after the
/// read timeout and holds no worker meanwhile: with one worker, a normal request is
/// answered while four slow clients drip.
#[test]
fn slow_clients_are_cut_off_and_hold_no_worker() {
    use std::io::{Read, Write};
    let server = Server::start_with(
        json!({"calm": {"module": p(&module("test-policies/hostile-policy.wasm"))}}),
        &[
            "--workers",
            "1",
            "--read-timeout",
            "2",
            "--insecure-plain-http",
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    let start = std::time::Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(&addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                // Two slow headers, then two slow bodies.
                let (head, body) = if i < 2 {
                    (format!("POST /validate/calm HTTP/1.1\r\nHost: {addr}\r\n{}", "X-Pad: y\r\n".repeat(20)), String::new())
                } else {
                    (String::new(), format!("POST /validate/calm HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"))
                };
                stream.write_all(body.as_bytes()).unwrap();
                let started = start;
                let drip = if head.is_empty() { "x".repeat(300) } else { head };
                for byte in drip.bytes() {
                    if stream.write_all(&[byte]).is_err() {
                        return started.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    match stream.read(&mut buf) {
                        // Closed, or answered (a body timeout is a 4xx) and closed.
                        Ok(_) => return started.elapsed(),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return started.elapsed(),
                    }
                    std::thread::sleep(Duration::from_millis(80));
                }
                panic!("slow client {i} was never cut off");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let review = review_of(&pod(json!({})), "88888888-0000-0000-0000-000000000001");
    assert_eq!(server.review("/validate/calm", &review)["allowed"], true);
    let answered = start.elapsed();
    for (i, s) in slow.into_iter().enumerate() {
        let cut = s.join().unwrap();
        // Answered while every slow client still held its connection: they hold no
        // worker. Cut off near the 2 s timeout, long before the drip would end (8-24 s).
        assert!(
            answered < cut,
            "answered after {answered:?}, client {i} cut after {cut:?}"
        );
        assert!(
            cut < Duration::from_secs(6),
            "slow client {i} cut after {cut:?}"
        );
    }
}

/// One spinning evaluation holds the only worker: a request behind it waits (and
/// `/metrics` shows one slot in use, one request waiting) and is answered once the worker
/// is free; with a short `--pool-wait-ms` it is answered 503 with Retry-After instead,
/// and counted.
#[test]
fn a_request_behind_a_busy_pool_waits_then_is_told_to_retry() {
    let config = |wait: &str| {
        let hostile = module("test-policies/hostile-policy.wasm");
        Server::start_with(
            json!({
                "spin": {"module": p(&hostile), "settings": {"behaviour": "spin"}, "timeoutEvalSeconds": 2},
                "calm": {"module": p(&hostile), "maxMemoryMib": 384},
            }),
            &["--workers", "1", "--pool-wait-ms", wait],
        )
    };
    let spinning = |server: &Server| {
        let client = server.client.clone();
        let url = format!("{}/validate/spin", server.base);
        let review = review_of(&pod(json!({})), "99999999-0000-0000-0000-000000000001");
        let handle = std::thread::spawn(move || {
            client
                .post(url)
                .body(review.to_string())
                .send()
                .unwrap()
                .status()
                .as_u16()
        });
        // The spin has the worker well before the next request comes.
        std::thread::sleep(Duration::from_millis(300));
        handle
    };
    // The pool's figures, in this order: slots, slot memory, in use, waiting, timeouts.
    let pool = |server: &Server| -> [f64; 5] {
        let (_, text) = server.get("/metrics");
        [
            "slots",
            "slot_memory_bytes",
            "in_use",
            "waiting",
            "wait_timeouts_total",
        ]
        .map(|name| {
            let name = format!("sidecarctl_instance_pool_{name}");
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap()
        })
    };
    // A slot holds the largest limit of any policy, here above the 256 MiB default.
    let slot = (384u64 << 20) as f64;
    let plain = review_of(&pod(json!({})), "99999999-0000-0000-0000-000000000002");

    let server = config("10000");
    let spin = spinning(&server);
    let waiter = {
        let (client, url, body) = (
            server.client.clone(),
            format!("{}/validate/calm", server.base),
            plain.to_string(),
        );
        std::thread::spawn(move || {
            let response = client.post(url).body(body).send().unwrap();
            (response.status().as_u16(), response.text().unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool(&server), [1.0, slot, 1.0, 1.0, 0.0]);
    let (status, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");
    assert_eq!(spin.join().unwrap(), 200);
    assert_eq!(pool(&server), [1.0, slot, 0.0, 0.0, 0.0]);
    drop(server);

    let server = config("100");
    let spin = spinning(&server);
    let response = server
        .client
        .post(format!("{}/validate/calm", server.base))
        .body(plain.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let text = response.text().unwrap();
    assert!(
        text.contains("every worker has been busy for 100ms"),
        "{text}"
    );
    assert_eq!(spin.join().unwrap(), 200);
    assert_eq!(pool(&server), [1.0, slot, 0.0, 0.0, 1.0]);
    // Once the worker is free, the same request is served.
    assert_eq!(server.review("/validate/calm", &plain)["allowed"], true);
}

/// Over HTTP/2 too (the API server speaks it to webhooks that offer it in TLS), a body over
/// `--max-body-bytes` is answered 413, not a reset stream; the connection serves on.
#[test]
fn an_oversized_body_over_http2_is_answered_413() {
    let config = json!({"null": {"module": p(&null_policy())}});
    let tls = Server::start_with(config.clone(), &["--max-body-bytes", "4096"]);
    let plain = Server::start_with(
        config,
        &["--max-body-bytes", "4096", "--insecure-plain-http"],
    );
    let h2c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut big = pod(json!({"padding": "x".repeat(1 << 20)}));
    big["metadata"]["name"] = json!("big");
    let review = review_of(&pod(json!({})), "22222222-0000-0000-0000-000000000002");
    for (server, client) in [(&tls, &tls.client), (&plain, &h2c)] {
        let bodies = [
            review_of(&big, "u").to_string(),
            "x".repeat(8192),
            "y".repeat(4 << 20),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            // The last one streamed: no Content-Length, so only reading tells its size.
            let body = match i {
                2 => reqwest::blocking::Body::new(std::io::Cursor::new(body.into_bytes())),
                _ => body.into(),
            };
            let response = client
                .post(format!("{}/validate/null", server.base))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .unwrap_or_else(|e| panic!("{}: {e:?}", server.base));
            assert_eq!(
                response.version(),
                reqwest::Version::HTTP_2,
                "{}",
                server.base
            );
            assert_eq!(response.status().as_u16(), 413, "{}", server.base);
        }
        let answer = client
            .post(format!("{}/validate/null", server.base))
            .body(review.to_string())
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
    }
}
