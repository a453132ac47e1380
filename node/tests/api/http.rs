//! The HTTP API of PROTOCOL.md 4.1 and the node document of 5.1.

use meshrelay_protocol::node_doc::SignedNodeDoc;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn publishing_answers_201_then_200_for_a_duplicate() {
    let app = spawn_app().await;
    let p = signed(&NodeKey::generate(), 1, None, "general", "hi");
    let (status, mut body) = app.publish(&p).await;
    assert_eq!(status, 201);
    let first = body.as_object_mut().unwrap().remove("receipt");
    assert_eq!(
        body,
        json!({"id": p.id, "accepted": true, "duplicate": false})
    );
    let (status, mut body) = app.publish(&p).await;
    assert_eq!(status, 200);
    let again = body.as_object_mut().unwrap().remove("receipt");
    assert_eq!(
        body,
        json!({"id": p.id, "accepted": true, "duplicate": true})
    );
    assert!(first.is_some(), "an accepting answer carries a receipt");
    assert_eq!(
        first, again,
        "a duplicate's receipt names the first storage"
    );
}

#[tokio::test]
async fn a_held_id_with_another_signature_is_refused_for_it_and_changes_nothing() {
    let app = spawn_app().await;
    let p = signed(&NodeKey::generate(), 1, None, "general", "hi");
    let mut forged = p.clone();
    let flip = if forged.sig.starts_with('0') {
        "1"
    } else {
        "0"
    };
    forged.sig.replace_range(0..1, flip);
    let refused = |status: u16, body: &Value| {
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("invalid_signature")),
            "{body}"
        );
    };
    let (status, body) = app.post_raw(forged.to_json()).await;
    refused(status, &body);
    let (status, first) = app.publish(&p).await;
    assert_eq!(status, 201);
    // Held now (and in the node's cache of recent ids): a copy with the
    // verified signature is a duplicate, one with any other signature is
    // still checked, and refused (PROTOCOL.md 2.1; the `wrong-signature`
    // vector shares its id with a valid one).
    let (status, again) = app.publish(&p).await;
    assert_eq!((status, &again["receipt"]), (200, &first["receipt"]));
    let (status, body) = app.post_raw(forged.to_json()).await;
    refused(status, &body);
    let (_, got) = app.get_json(&format!("/v1/payloads/{}", p.id)).await;
    assert_eq!(got["sig"], json!(p.sig));
}

#[tokio::test]
async fn every_invalid_vector_is_refused_with_its_code_even_when_its_valid_twin_is_held() {
    let app = spawn_app().await;
    for case in vectors("payloads.json")["valid"].as_array().unwrap() {
        let (status, _) = app.post_raw(case["payload"].to_string()).await;
        assert_eq!(status, 201, "{}", case["name"]);
    }
    refuses_every_invalid_vector(&app).await;
}

/// Each invalid payload vector is refused 422 with its code and a message.
async fn refuses_every_invalid_vector(app: &TestApp) {
    for case in vectors("payloads.json")["invalid"].as_array().unwrap() {
        let (status, body) = app.post_raw(case["payload"].to_string()).await;
        assert_eq!(status, 422, "{}: {body}", case["name"]);
        assert_eq!(
            body["error"]["code"], case["code"],
            "{}: {body}",
            case["name"]
        );
        assert!(body["error"]["message"].as_str().unwrap().len() > 3);
    }
}

#[tokio::test]
async fn every_valid_vector_is_accepted_and_served_back_unchanged() {
    let app = spawn_app().await;
    for case in vectors("payloads.json")["valid"].as_array().unwrap() {
        let (status, _) = app.post_raw(case["payload"].to_string()).await;
        assert_eq!(status, 201, "{}", case["name"]);
        let id = case["id"].as_str().unwrap();
        let (status, got) = app.get_json(&format!("/v1/payloads/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(got, case["payload"], "{}", case["name"]);
    }
}

#[tokio::test]
async fn every_invalid_vector_is_refused_with_its_code_and_nothing_is_stored() {
    let app = spawn_app().await;
    refuses_every_invalid_vector(&app).await;
    assert_eq!(app.state.store.count_payloads().await.unwrap(), 0);
}

#[tokio::test]
async fn malformed_bodies_get_invalid_payload_and_oversize_gets_413() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_CONTENT_BYTES", "100")]).await;
    let key = NodeKey::generate();
    let good = signed(&key, 1, None, "general", "fine").to_json();
    for bad in [
        "not json".to_string(),
        "[]".to_string(),
        good.replacen(
            "\"kind\":\"post\"",
            "\"kind\":\"post\",\"kind\":\"post\"",
            1,
        ),
        good.replacen("\"fine\"", "\"\\udc00\"", 1),
        good.replacen("\"seq\":1", "\"seq\":1.0", 1),
        good.replacen("\"seq\":1", "\"seq\":1e0", 1),
        good.replacen("\"seq\":1", "\"seq\":-0", 1),
    ] {
        let (status, body) = app.post_raw(bad.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_payload")),
            "{bad}"
        );
    }
    let long = signed(&key, 1, None, "general", &"x".repeat(101));
    let (status, body) = app.publish(&long).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    // A body far over any payload's size is refused before it is parsed.
    let (status, body) = app.post_raw(vec![b' '; 8 * 1024 * 1024]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    assert_eq!(app.state.store.count_payloads().await.unwrap(), 0);
}

#[tokio::test]
async fn a_blocked_author_is_refused_with_403() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    app.state
        .store
        .block_author(&key.public_hex(), 1)
        .await
        .unwrap();
    let (status, body) = app.publish(&signed(&key, 1, None, "general", "x")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("blocked"))
    );
}

#[tokio::test]
async fn getting_a_payload_answers_404_for_unknown_and_400_for_malformed_ids() {
    let app = spawn_app().await;
    let (status, body) = app
        .get_json(&format!("/v1/payloads/{}", "ab".repeat(32)))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = app
        .get_json(&format!("/v1/payloads/{}", "AB".repeat(32)))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test]
async fn queries_filter_and_page_through_everything_once() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_LIMIT", "4")]).await;
    let key = NodeKey::generate();
    let mut want = Vec::new();
    for i in 0..9u64 {
        let channel = if i % 3 == 0 { "other" } else { "plural/a" };
        let p = signed_at(
            &key,
            i + 1,
            None,
            channel,
            &format!("n{i}"),
            1_700_000_000 + i / 2,
        );
        assert_eq!(app.publish(&p).await.0, 201);
        if channel != "other" {
            want.push(p);
        }
    }
    want.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = "/v1/payloads?channels=plural/*&limit=999".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        let page = body["payloads"].as_array().unwrap();
        assert!(page.len() <= 4, "limit is clamped to max_limit");
        got.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(got, want.iter().map(|p| p.id.clone()).collect::<Vec<_>>());

    let (_, body) = app
        .get_json(&format!(
            "/v1/payloads?authors={}&channels=other&since=1700000001",
            key.public_hex()
        ))
        .await;
    assert_eq!(body["payloads"].as_array().unwrap().len(), 2);
    let (_, body) = app.get_json("/v1/payloads?kinds=reaction").await;
    assert_eq!(body, json!({"payloads": [], "next_cursor": null}));
    for bad in [
        "/v1/payloads?foo=1",
        "/v1/payloads?since=x",
        "/v1/payloads?cursor=zz",
        "/v1/payloads?authors=ABC",
    ] {
        let (status, body) = app.get_json(bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn tag_queries_match_the_tag_value() {
    let app = spawn_app().await;
    for case in vectors("payloads.json")["valid"].as_array().unwrap() {
        app.post_raw(case["payload"].to_string()).await;
    }
    let (_, body) = app.get_json("/v1/payloads?tag_t=rust").await;
    let ids: Vec<&str> = body["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["057314ef4a65821f251b5f4d17fac7c3387acb2cbe9a33c6743a637ee89c50b1"]
    );
}

#[tokio::test]
async fn head_and_log_show_the_chain_with_forks() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    let author = key.public_hex();
    let p1 = signed(&key, 1, None, "general", "one");
    let p2 = signed(&key, 2, Some(&p1.id), "general", "two");
    let p2_fork = signed(&key, 2, Some(&p1.id), "general", "two, again");
    for p in [&p1, &p2, &p2_fork] {
        assert_eq!(app.publish(p).await.0, 201);
    }
    let (status, head) = app.get_json(&format!("/v1/authors/{author}/head")).await;
    assert_eq!(status, 200);
    let lowest = std::cmp::min(&p2.id, &p2_fork.id);
    assert_eq!(
        (&head["author"], &head["seq"], &head["id"]),
        (&json!(author), &json!(2), &json!(lowest))
    );

    let (_, log) = app
        .get_json(&format!("/v1/authors/{author}/log?limit=2"))
        .await;
    let seqs: Vec<u64> = log["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 2], "a page never ends inside a seq");
    let (_, log) = app
        .get_json(&format!("/v1/authors/{author}/log?after_seq=1"))
        .await;
    assert_eq!(log["payloads"].as_array().unwrap().len(), 2);
    assert_eq!(log["author"], author);

    let other = NodeKey::generate().public_hex();
    assert_eq!(
        app.get_json(&format!("/v1/authors/{other}/head")).await.0,
        404
    );
    for bad in [
        format!("/v1/authors/{}/head", "zz".repeat(32)),
        format!("/v1/authors/{author}/log?after_seq=-1"),
        format!("/v1/authors/{author}/log?bogus=1"),
    ] {
        let (status, body) = app.get_json(&bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_delete_hides_its_authors_payloads_everywhere_and_for_good() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    let author = key.public_hex();
    let p = signed(&key, 1, None, "general", "regret");
    app.publish(&p).await;
    let del = Payload::sign(
        &key,
        Draft {
            seq: 2,
            prev: Some(p.id.clone()),
            created_at: now(),
            kind: "delete".into(),
            channel: "general".into(),
            tags: vec![vec!["e".into(), p.id.clone()]],
            content: String::new(),
        },
    );
    assert_eq!(app.publish(&del).await.0, 201);
    assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 404);
    let (_, q) = app.get_json("/v1/payloads").await;
    let ids: Vec<&str> = q["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![del.id.as_str()],
        "the delete itself stays visible"
    );
    let (_, log) = app.get_json(&format!("/v1/authors/{author}/log")).await;
    assert_eq!(log["payloads"].as_array().unwrap().len(), 1);
    // Publishing it again answers duplicate and does not unhide it.
    let (status, answer) = app.publish(&p).await;
    assert_eq!(
        (status, without_receipt(answer)),
        (
            200,
            json!({"id": p.id, "accepted": true, "duplicate": true})
        )
    );
    assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 404);
}

#[tokio::test]
async fn a_delete_naming_another_authors_payload_hides_nothing() {
    let app = spawn_app().await;
    let v = vectors("payloads.json");
    let valid = v["valid"].as_array().unwrap();
    let by_name = |n: &str| valid.iter().find(|c| c["name"] == n).unwrap();
    app.post_raw(by_name("first-entry")["payload"].to_string())
        .await;
    let del = by_name("delete-other-author");
    assert_eq!(app.post_raw(del["payload"].to_string()).await.0, 201);
    let target = by_name("first-entry")["id"].as_str().unwrap();
    assert_eq!(app.get_json(&format!("/v1/payloads/{target}")).await.0, 200);
}

#[tokio::test]
async fn info_and_the_node_document_describe_this_node() {
    let app = spawn_app_with(&[("MESHRELAY_SUBSCRIBE", r#"[{"channels":["plural/*"]}]"#)]).await;
    let (status, info) = app.get_json("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["software"]["name"], "meshrelay");
    assert_eq!(info["limits"]["max_content_bytes"], 65536);
    assert_eq!(info["federation"]["subscribe"]["scope"], "filtered");
    let (status, doc) = app.get_json("/.well-known/meshrelay").await;
    assert_eq!(status, 200);
    let signed: SignedNodeDoc = serde_json::from_value(doc).unwrap();
    let key = signed.verify_signature().unwrap();
    assert_eq!(key.to_hex(), info["node"].as_str().unwrap());
    assert_eq!(signed.doc.url, app.base);
    assert_eq!(
        signed.doc.inbox,
        format!("{}/v1/federation/inbox", app.base)
    );
    assert!(signed.doc.issued_at.abs_diff(now()) < 5);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_json("/healthz").await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        app.get_json("/readyz").await,
        (200, json!({"status": "ready"}))
    );
    app.publish(&signed(&NodeKey::generate(), 1, None, "general", "m"))
        .await;
    let resp = app.get("/metrics").await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"meshrelay_payloads_ingested_total{via="http",outcome="stored"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/v2/nothing").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_what_is_served() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/payloads",
        "/v1/payloads/{id}",
        "/v1/authors/{key}/head",
        "/v1/authors/{key}/log",
        "/v1/info",
        "/v1/ws",
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/meshrelay",
        "/v1/blobs/{sha256}",
        "/v1/communities/{owner}/{name}",
        "/v1/federation/inbox",
        "/v1/federation/ihave",
        "/v1/federation/fetch",
        "/v1/federation/sync",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the document"
        );
    }
    let key = NodeKey::generate().public_hex();
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", &"ab".repeat(32))
            .replace("{sha256}", &"cd".repeat(32))
            .replace("{key}", &key);
        for method in item.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => app.client.get(format!("{}{concrete}", app.base)),
                "post" => app
                    .client
                    .post(format!("{}{concrete}", app.base))
                    .body("{}"),
                "put" => app.client.put(format!("{}{concrete}", app.base)).body("{}"),
                "head" => app.client.head(format!("{}{concrete}", app.base)),
                other => panic!("unexpected method {other}"),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                body["error"]["message"], "no such route",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn publishing_faster_than_the_limit_is_refused_with_429_and_retry_after() {
    let app = spawn_app_with(&[
        ("MESHRELAY_PUBLISH_RATE", "1"),
        ("MESHRELAY_PUBLISH_BURST", "2"),
    ])
    .await;
    let key = NodeKey::generate();
    assert_eq!(app.publish(&signed(&key, 1, None, "c", "1")).await.0, 201);
    assert_eq!(app.publish(&signed(&key, 2, None, "c", "2")).await.0, 201);
    let p = signed(&key, 3, None, "c", "3");
    let resp = app
        .client
        .post(format!("{}/v1/payloads", app.base))
        .body(p.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        app.get_json(&format!("/v1/payloads/{}", p.id)).await.0,
        404,
        "nothing stored"
    );

    // A WebSocket from the same address shares the budget HTTP spent: more
    // connections buy no more publishes (at most one refilled meanwhile).
    let mut ws = app.ws().await;
    for seq in 4..=6u64 {
        let p = signed(&key, seq, None, "c", "ws");
        ws.send_json(json!({"op": "publish", "payload": p})).await;
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(ws.next_json().await);
    }
    let refused: Vec<&Value> = answers.iter().filter(|a| a["accepted"] == false).collect();
    assert!(refused.len() >= 2, "{answers:?}");
    assert!(
        refused.iter().all(|r| r["code"] == "rate_limited"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn every_answer_carries_a_request_id_on_both_listeners() {
    let app = spawn_app().await;
    for base in [&app.base, &app.admin] {
        let made = app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(
            id.len(),
            36,
            "a UUID is made when the request has none: {id}"
        );
        let given = app
            .client
            .get(format!("{base}/admin/v1/stats"))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap();
        assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    }
}

#[tokio::test]
async fn the_websocket_route_answers_a_plain_get_with_the_json_error_body() {
    let app = spawn_app().await;
    let (status, v) = app.get_json("/v1/ws").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
}
