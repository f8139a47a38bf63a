//! SIGTERM: every request in flight gets its whole answer.

use super::*;

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let mut server = Server::start(json!({
        "slow": mutator(json!({"allowedToMutate": true, "timeoutEvalSeconds": 2})),
    }));
    let spin = review_of(
        &pod(json!({"test.sidecars.dev/spin": "true"})),
        "66666666-0000-0000-0000-000000000001",
    );
    let client = server.client.clone();
    let url = format!("{}/validate/slow", server.base);
    let in_flight = std::thread::spawn(move || {
        let response = client.post(url).body(spin.to_string()).send().unwrap();
        let status = response.status().as_u16();
        let mut body = String::new();
        response.take(1 << 20).read_to_string(&mut body).unwrap();
        (status, body)
    });
    // The request is evaluating (it spins until its 2 s deadline) when SIGTERM arrives.
    std::thread::sleep(Duration::from_millis(700));
    let exit = server.terminate();
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        "66666666-0000-0000-0000-000000000001"
    );
    assert_eq!(answer["response"]["status"]["code"], 500);
    assert!(exit.success(), "{exit}");
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("finishing requests in flight")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.ends_with(" INFO stopped")), "{log:?}");
}

/// Under load: more requests in flight than workers (the rest wait for one), SIGTERM,
/// and every one of them gets its whole answer before the server exits.
#[test]
fn sigterm_under_load_finishes_every_request_in_flight() {
    let hostile = module("test-policies/hostile-policy.wasm");
    let mut server = Server::start_with(
        json!({"spin": {"module": p(&hostile), "settings": {"behaviour": "spin"}, "timeoutEvalSeconds": 1}}),
        &["--workers", "2"],
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let client = server.client.clone();
            let url = format!("{}/validate/spin", server.base);
            let uid = format!("77777777-0000-0000-0000-{i:012}");
            let review = review_of(&pod(json!({})), &uid);
            std::thread::spawn(move || {
                let response = client.post(url).body(review.to_string()).send().unwrap();
                let status = response.status().as_u16();
                let answer: Value = response.json().unwrap();
                (uid, status, answer)
            })
        })
        .collect();
    // Two evaluate, six wait: four rounds of the 1 s deadline, well inside the grace.
    std::thread::sleep(Duration::from_millis(400));
    let exit = server.terminate();
    for client in clients {
        let (uid, status, answer) = client.join().unwrap();
        assert_eq!(status, 200, "{uid}: {answer}");
        assert_eq!(answer["response"]["uid"], uid.as_str());
        assert_eq!(answer["response"]["status"]["code"], 500, "{answer}");
    }
    assert!(exit.success(), "{exit}");
}
