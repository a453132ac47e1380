//! Communities (PROTOCOL.md 9) on a real node over HTTP: every scenario of
//! `communities.json` in its publish order (each payload's status), then in
//! its written arrival orders and the reverse (refused payloads sent again
//! until a round accepts nothing new, as sync would): the node shows exactly
//! the expected payloads — by id, in queries, in the author's log — and
//! answers `GET /v1/communities/{owner}/{name}` as expected.

use std::collections::HashSet;

use serde_json::Value;

use crate::helpers::*;

fn status_of(expect: &str) -> u16 {
    match expect {
        "accepted" => 201,
        "duplicate" => 200,
        "forbidden" => 403,
        "invalid_payload" | "invalid_id" | "invalid_signature" => 422,
        other => panic!("unknown outcome {other}"),
    }
}

async fn post(app: &TestApp, payload: &Value) -> (u16, Value) {
    app.post_raw(payload.to_string()).await
}

/// What the node shows of a scenario's payloads and probes, asked three ways.
async fn shown(app: &TestApp, s: &Value) -> HashSet<String> {
    let all: Vec<&Value> = s["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .chain(s["probes"].as_array().unwrap())
        .map(|p| &p["payload"])
        .collect();
    let mut by_id = HashSet::new();
    for p in &all {
        let id = p["id"].as_str().unwrap();
        if app.get_json(&format!("/v1/payloads/{id}")).await.0 == 200 {
            by_id.insert(id.to_string());
        }
    }
    let scenario_ids: HashSet<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let (_, page) = app.get_json("/v1/payloads?limit=500").await;
    let queried: HashSet<String> = page["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .filter(|id| scenario_ids.contains(id.as_str()))
        .collect();
    assert_eq!(
        queried, by_id,
        "{}: a query shows what GET by id shows",
        s["name"]
    );
    let authors: HashSet<&str> = all.iter().map(|p| p["author"].as_str().unwrap()).collect();
    let mut logged = HashSet::new();
    for a in authors {
        let (_, log) = app
            .get_json(&format!("/v1/authors/{a}/log?limit=500"))
            .await;
        for p in log["payloads"].as_array().unwrap() {
            let id = p["id"].as_str().unwrap();
            if scenario_ids.contains(id) {
                logged.insert(id.to_string());
            }
        }
    }
    assert_eq!(
        logged, by_id,
        "{}: the logs show what GET by id shows",
        s["name"]
    );
    by_id
}

async fn check_end(app: &TestApp, s: &Value, what: &str) {
    let name = s["name"].as_str().unwrap();
    let expected: HashSet<String> = s["expected"]["visible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown(app, s).await, expected, "{name} ({what}): shown");
    let community = s["community"].as_str().unwrap().strip_prefix("g/").unwrap();
    let (status, answer) = app.get_json(&format!("/v1/communities/{community}")).await;
    assert_eq!(status, 200, "{name}");
    assert_eq!(
        answer, s["expected"]["community"],
        "{name} ({what}): GET /v1/communities"
    );
}

#[tokio::test]
async fn every_scenario_in_its_publish_order_gets_each_status() {
    let v = vectors("communities.json");
    for s in v["scenarios"].as_array().unwrap() {
        let app = spawn_app().await;
        let name = s["name"].as_str().unwrap();
        for step in s["payloads"]
            .as_array()
            .unwrap()
            .iter()
            .chain(s["probes"].as_array().unwrap())
        {
            let (status, body) = post(&app, &step["payload"]).await;
            let expect = step["expect"].as_str().unwrap();
            assert_eq!(
                status,
                status_of(expect),
                "{name}: {}: {body}",
                step["label"]
            );
            if status >= 400 {
                assert_eq!(body["error"]["code"], expect, "{name}: {}", step["label"]);
            }
        }
        check_end(&app, s, "publish order").await;
    }
}

#[tokio::test]
async fn every_scenario_shows_the_same_in_its_arrival_orders() {
    let v = vectors("communities.json");
    for s in v["scenarios"].as_array().unwrap() {
        let payloads = s["payloads"].as_array().unwrap();
        let mut orders: Vec<Vec<usize>> = s["arrival_orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as usize)
                    .collect()
            })
            .collect();
        orders.push((0..payloads.len()).rev().collect());
        for order in orders {
            let app = spawn_app().await;
            let mut refused = order.clone();
            loop {
                let before = refused.len();
                let mut still = Vec::new();
                for i in refused {
                    if post(&app, &payloads[i]["payload"]).await.0 != 201 {
                        still.push(i);
                    }
                }
                refused = still;
                if refused.len() == before || refused.is_empty() {
                    break;
                }
            }
            for probe in s["probes"].as_array().unwrap() {
                post(&app, &probe["payload"]).await;
            }
            check_end(&app, s, &format!("order {order:?}")).await;
        }
    }
}

#[tokio::test]
async fn every_field_rule_case_gets_its_status_and_bad_names_are_400() {
    let v = vectors("communities.json");
    let app = spawn_app().await;
    for case in v["invalid"]["payloads"].as_array().unwrap() {
        let (status, body) = post(&app, &case["payload"]).await;
        let expect = case["expect"].as_str().unwrap();
        assert_eq!(status, status_of(expect), "{}: {body}", case["label"]);
    }
    let key = "ab".repeat(32);
    for (path, want) in [
        (format!("/v1/communities/{key}/nothing-here"), 404),
        (format!("/v1/communities/{key}/Upper"), 400),
        ("/v1/communities/short/club".to_string(), 400),
    ] {
        assert_eq!(app.get_json(&path).await.0, want, "{path}");
    }
}

/// `meshrelay community` as a user runs it: (exit code, stdout, stderr).
async fn cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::common::command(dir)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_community_commands_create_grant_invite_join_moderate_and_ban() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let relay = app.base.as_str();
    let mut keys = std::collections::HashMap::new();
    for who in ["owner", "mod", "bob", "eve"] {
        let (code, out, err) = cli(d, &["keygen", "--out", &format!("{who}.key")]).await;
        assert_eq!(code, 0, "{err}");
        keys.insert(who, out.trim().to_string());
    }
    let signed_by = |who: &str| {
        vec![
            "--relay".to_string(),
            relay.to_string(),
            "--key".into(),
            format!("{who}.key"),
        ]
    };
    let run = |who: &'static str, args: &[&str]| {
        let mut all: Vec<String> = vec!["community".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(signed_by(who));
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            cli(d, &refs).await
        }
    };
    let (code, out, err) = run("owner", &["create", "club"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let root = format!("g/{}/club", keys["owner"]);
    assert!(out.contains(&format!("community {root}")), "{out}");

    // Authority is judged at whole seconds (9.3): what another key's payload
    // allows is used from the next second on.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(1100));
    let (code, _, err) = run("owner", &["grant", &root, &keys["mod"], "moderator"]).await;
    assert_eq!(code, 0, "{err}");
    tick().await;
    // Eve is nobody here: her post is refused with the rule that refused it.
    let post = |who: &str, text: &str| {
        let args: Vec<String> = [
            "publish",
            "--relay",
            relay,
            "--key",
            &format!("{who}.key"),
            "--channel",
            &root,
            text,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(d, &refs).await
        }
    };
    let (code, _, err) = post("eve", "let me in").await;
    assert_eq!(code, 2);
    assert!(err.contains("forbidden") && err.contains("member"), "{err}");

    // The moderator invites; Bob joins with the printed code and posts.
    let (code, out, err) = run("mod", &["invite", &root, "--uses", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (invite, secret) = (field("invite"), field("code"));
    let (code, _, err) = run(
        "bob",
        &["join", &root, "--invite", &invite, "--code", &secret],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = post("bob", "hello club").await;
    assert_eq!(code, 0, "{err}");
    let bob_post = out.split('\t').nth(3).unwrap().trim().to_string();

    let (code, out, _) = cli(d, &["community", "show", &root, "--relay", relay, "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    let (_, answer) = app
        .get_json(&format!(
            "/v1/communities/{}",
            root.strip_prefix("g/").unwrap()
        ))
        .await;
    assert_eq!(
        shown, answer,
        "computed from the governance payloads as the node answers"
    );
    let roles: Vec<(&str, &str)> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (keys["owner"].as_str(), "owner"),
            (keys["mod"].as_str(), "moderator"),
            (keys["bob"].as_str(), "member")
        ]
    );
    assert_eq!(shown["invites"][0]["uses_left"], 1);
    let (code, table, _) = cli(d, &["community", "show", &root, "--relay", relay]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("moderator") && table.contains(&keys["bob"]),
        "{table}"
    );

    // Moderation hides Bob's post; a ban hides whatever else he wrote.
    tick().await;
    let (code, _, err) = run("mod", &["moderate", &root, &bob_post]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        app.get_json(&format!("/v1/payloads/{bob_post}")).await.0,
        404
    );
    let (code, out, err) = post("bob", "still here").await;
    assert_eq!(code, 0, "{err}");
    let second = out.split('\t').nth(3).unwrap().trim().to_string();
    assert_eq!(app.get_json(&format!("/v1/payloads/{second}")).await.0, 200);
    tick().await;
    let (code, _, err) = run("mod", &["ban", &root, &keys["bob"]]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(app.get_json(&format!("/v1/payloads/{second}")).await.0, 404);
    tick().await;
    assert_eq!(post("bob", "after the ban").await.0, 2);
    tick().await;
    let (code, _, err) = run("owner", &["unban", &root, &keys["bob"]]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        app.get_json(&format!("/v1/payloads/{second}")).await.0,
        200,
        "lifting the ban shows his post again"
    );
    // A policy that lets anyone post, and a channel only moderators may use.
    let (code, _, err) = run(
        "owner",
        &[
            "policy",
            &root,
            "--write",
            "public",
            "--channel",
            "news=moderators",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    tick().await;
    assert_eq!(post("eve", "now anyone may").await.0, 0);

    // The admin API (and the dashboard, from the same view) lists it.
    let listed: Value = app
        .client
        .get(format!("{}/admin/v1/communities", app.admin))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &listed["communities"][0];
    assert_eq!(c["community"], root.as_str());
    assert_eq!(
        (
            c["moderators"].as_u64(),
            c["members"].as_u64(),
            c["banned"].as_u64()
        ),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(c["recent_moderation"][0]["targets"][0], bob_post.as_str());
    assert_eq!(c["recent_moderation"][0]["by"], keys["mod"].as_str());
}

/// A non-member's post is refused `forbidden` on every ingest path: HTTP,
/// WebSocket and a peer's inbox (per item); a member's is taken on each.
#[tokio::test]
async fn every_ingest_path_refuses_a_non_members_post() {
    use meshrelay_protocol::payload::Draft;
    use meshrelay_protocol::{NodeKey, Payload};
    use serde_json::json;

    let app = spawn_app().await;
    let (owner, member, stranger) = (
        NodeKey::generate(),
        NodeKey::generate(),
        NodeKey::generate(),
    );
    let root = format!("g/{}/paths", owner.public_hex());
    let t = now() - 60;
    let make = |key: &NodeKey, at: u64, kind: &str, tags: Vec<Vec<String>>, content: &str| {
        Payload::sign(
            key,
            Draft {
                seq: 1,
                prev: None,
                created_at: at,
                kind: kind.into(),
                channel: root.clone(),
                tags,
                content: content.into(),
            },
        )
    };
    let grant = make(
        &owner,
        t,
        "role",
        vec![vec!["p".into(), member.public_hex(), "member".into()]],
        "",
    );
    assert_eq!(app.publish(&grant).await.0, 201);
    let posts = |key: &NodeKey, what: &str| {
        (1..=3u64)
            .map(|i| make(key, t + i, "post", vec![], &format!("{what} {i}")))
            .collect::<Vec<_>>()
    };
    let (theirs, ours) = (posts(&stranger, "stranger"), posts(&member, "member"));

    let (status, body) = app.publish(&theirs[0]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(app.publish(&ours[0]).await.0, 201);

    let mut ws = app.ws().await;
    for (p, accepted) in [(&theirs[1], false), (&ours[1], true)] {
        ws.send_json(json!({"op": "publish", "payload": p})).await;
        let ok = ws.next_json().await;
        assert_eq!(ok["accepted"], accepted, "{ok}");
        if !accepted {
            assert_eq!(ok["code"], "forbidden");
        }
    }

    let peer = app.active_peer().await;
    let body =
        json!({"items": [crate::federation::item(&theirs[2]), crate::federation::item(&ours[2])]})
            .to_string();
    let secs = now() as i64;
    let (status, v) =
        crate::federation::signed_post(&app, &peer, crate::federation::INBOX, &body, secs).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(
        v["rejected"],
        json!([{"id": theirs[2].id, "code": "forbidden"}])
    );
    for p in &theirs {
        assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 404);
    }
    for p in &ours {
        assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 200);
    }
}
