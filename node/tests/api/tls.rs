//! TLS on the listeners (PROTOCOL.md 8): HTTPS and WSS for clients, plain
//! HTTP refused on the TLS port, the admin listener's own pair, certificate
//! expiry in `/metrics` and stats, two nodes forwarding and syncing over
//! HTTPS with `peer_ca_file`, and start-up refusing a key that does not
//! match. The SIGHUP reload under an open WebSocket runs against the real
//! binary in `tests/process.rs`.

use meshrelay::{Application, Settings};
use meshrelay_protocol::NodeKey;
use serde_json::Value;

use crate::admin::eventually;
use crate::common::TestCa;
use crate::helpers::{signed, spawn_app_with, TestApp};

struct TlsNode {
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn tls_node(ca: &TestCa, extra: &[(&str, &str)]) -> TlsNode {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.leaf(dir.path(), "public");
    let (acert, akey, _) = ca.leaf(dir.path(), "admin");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_file = ca_file.display().to_string();
    let mut vars = vec![
        ("MESHRELAY_TLS_CERT_FILE", cert.as_str()),
        ("MESHRELAY_TLS_KEY_FILE", key.as_str()),
        ("MESHRELAY_ADMIN_TLS_CERT_FILE", acert.as_str()),
        ("MESHRELAY_ADMIN_TLS_KEY_FILE", akey.as_str()),
        ("MESHRELAY_PEER_CA_FILE", ca_file.as_str()),
    ];
    vars.extend_from_slice(extra);
    TlsNode {
        app: spawn_app_with(&vars).await,
        _dir: dir,
    }
}

#[tokio::test]
async fn clients_speak_https_and_wss_and_plain_http_is_refused() {
    let ca = TestCa::new();
    let n = tls_node(&ca, &[]).await;
    let app = &n.app;
    assert!(app.base.starts_with("https://127.0.0.1:"), "{}", app.base);
    let https = ca.http_client();
    let info: Value = https
        .get(format!("{}/v1/info", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["url"],
        app.base.as_str(),
        "public_url follows the scheme"
    );

    // Both protocols are offered by ALPN; HTTP/2 is chosen when asked first.
    let addr = app.base.trim_start_matches("https://").to_string();
    let (_, alpn) = ca.handshake(&addr).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // Plain HTTP on the TLS port fails cleanly, and the node serves on.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v1/info"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the certificate refuses it.
    assert!(reqwest::get(format!("{}/v1/info", app.base)).await.is_err());

    // WSS: subscribe, publish over HTTPS, receive.
    ca.wss_receives_what_https_publishes(&app.base, "tls").await;

    // The admin listener has its own pair; both expiries are reported.
    let stats: Value = https
        .get(format!("{}/admin/v1/stats", app.admin))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let certs = stats["certificates"].as_array().unwrap();
    let listeners: Vec<&str> = certs
        .iter()
        .map(|c| c["listener"].as_str().unwrap())
        .collect();
    assert_eq!(listeners, ["public", "admin"]);
    let not_after = certs[0]["not_after"].as_i64().unwrap();
    assert!(certs[0]["days_left"].as_i64().unwrap() > 14, "{stats}");
    // Signing in to the dashboard over HTTPS: the session cookie is Secure.
    let no_redirect = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = no_redirect
        .get(format!("{}/admin/", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = page
        .split("name=\"form\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's token");
    let signed_in = no_redirect
        .post(format!("{}/admin/login", app.admin))
        .form(&[("form", form), ("token", app.admin_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    let metrics = https
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "meshrelay_tls_certificate_expiry_timestamp_seconds{{listener=\"public\"}} {not_after}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_nodes_forward_and_sync_over_https() {
    let ca = TestCa::new();
    let a = tls_node(&ca, &[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let b = tls_node(
        &ca,
        &[
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
            ("MESHRELAY_SEED_PEERS", &a.app.base),
        ],
    )
    .await;
    let (a, b) = (&a.app, &b.app);
    eventually("a knows b over https", || async {
        !a.state.store.peers().await.unwrap().is_empty()
    })
    .await;
    let peers = a.state.store.peers().await.unwrap();
    assert!(peers[0].url.starts_with("https://"), "{:?}", peers[0].url);

    // Forwarding: published at a, stored at b.
    let key = NodeKey::generate();
    let p = signed(&key, 1, None, "tls/mesh", "forwarded over https");
    let https = ca.http_client();
    eventually("b holds the forwarded payload", || async {
        let _ = https
            .post(format!("{}/v1/payloads", a.base))
            .body(p.to_json())
            .send()
            .await;
        b.state.store.get_payload(&p.id).await.unwrap().is_some()
    })
    .await;

    // Sync: stored at a without forwarding, reconciled by b's sync run.
    let quiet = signed(&key, 2, Some(&p.id), "tls/mesh", "synced over https");
    a.state
        .writer
        .write(
            std::sync::Arc::new(quiet.clone()),
            quiet.to_json().into(),
            None,
            crate::helpers::now() as i64,
        )
        .await
        .unwrap();
    let ingest = meshrelay::ingest::PeerIngest(b.state.clone());
    let summary = b.state.federation.sync_all(&ingest).await.unwrap();
    assert!(
        b.state
            .store
            .get_payload(&quiet.id)
            .await
            .unwrap()
            .is_some(),
        "{summary}"
    );
}

#[tokio::test]
async fn start_up_refuses_a_key_that_does_not_match_naming_both_files() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = ca.leaf(dir.path(), "one");
    let (_, other_key, _) = ca.leaf(dir.path(), "two");
    let vars = |extra: Vec<(&str, String)>| {
        let mut v = vec![
            ("MESHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            (
                "MESHRELAY_ADMIN_LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "MESHRELAY_DATA_DIR".to_string(),
                dir.path().join("data").display().to_string(),
            ),
        ];
        v.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        v
    };
    let settings = Settings::load_from(
        None,
        vars(vec![
            ("MESHRELAY_TLS_CERT_FILE", cert.clone()),
            ("MESHRELAY_TLS_KEY_FILE", other_key.clone()),
        ]),
    )
    .unwrap();
    let err = format!("{:#}", Application::build(settings).await.err().unwrap());
    assert!(
        err.contains("tls_key_file")
            && err.contains("two.key")
            && err.contains("one.crt")
            && err.contains("does not match"),
        "{err}"
    );
    let settings =
        Settings::load_from(None, vars(vec![("MESHRELAY_TLS_CERT_FILE", cert)])).unwrap();
    let err = format!("{:#}", Application::build(settings).await.err().unwrap());
    assert!(err.contains("set both, or neither"), "{err}");
    let settings = Settings::load_from(
        None,
        vars(vec![(
            "MESHRELAY_PEER_CA_FILE",
            "/nonexistent/ca.pem".into(),
        )]),
    )
    .unwrap();
    let err = format!("{:#}", Application::build(settings).await.err().unwrap());
    assert!(
        err.contains("peer_ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}
