//! The settings' tests: defaults, layering, the flat names of the contract, typos.
use super::*;

fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn defaults_need_no_configuration() {
    let s = Settings::load_from(None, vars(&[])).unwrap();
    assert_eq!(s.listen, "0.0.0.0:7700");
    assert_eq!(s.admin_listen, "127.0.0.1:7701");
    assert_eq!(s.database_url, "sqlite://./data/meshrelay.db");
    assert_eq!(s.public_url(), "http://0.0.0.0:7700");
    assert_eq!(s.federation.own_subscribe, Subscribe::All);
    assert_eq!(s.federation.max_hops, 16);
    assert!(s.federation.forward_lazily);
    assert_eq!(s.limits.payload.max_content_bytes, 65536);
    assert_eq!(s.log_format, LogFormat::Text);
    assert!(s.warnings.is_empty());
}

#[test]
fn variables_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nmax_hops = 2\nseed_peers = [\"http://a\", \"http://b\"]\nrequire_peer_approval = true\n",
    )
    .unwrap();
    let s = Settings::load_from(
        Some(&file),
        vars(&[
            ("MESHRELAY_MAX_HOPS", "7"),
            ("MESHRELAY_PUBLIC_URL", "https://relay.example.org/"),
            ("MESHRELAY_SUBSCRIBE", r#"[{"channels":["plural/*"]}]"#),
            ("OTHER_MAX_HOPS", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(s.listen, "127.0.0.1:9000");
    assert_eq!(s.federation.max_hops, 7);
    assert!(s.federation.require_peer_approval);
    assert_eq!(s.federation.seed_peers, vec!["http://a", "http://b"]);
    assert_eq!(s.public_url(), "https://relay.example.org");
    assert!(matches!(
        s.federation.own_subscribe,
        Subscribe::Filtered { .. }
    ));
}

/// The flat names of PROTOCOL.md 8 are a contract: each, given in the file
/// or as a variable, lands where the node reads it.
#[test]
fn every_flat_setting_works_as_a_key_and_as_a_variable() {
    type Check = fn(&Settings) -> bool;
    let cases: &[(&str, &str, &str, Check)] = &[
        ("listen", "\"127.0.0.1:9001\"", "127.0.0.1:9001", |s| {
            s.listen == "127.0.0.1:9001"
        }),
        (
            "admin_listen",
            "\"127.0.0.1:9002\"",
            "127.0.0.1:9002",
            |s| s.admin_listen == "127.0.0.1:9002",
        ),
        ("data_dir", "\"/srv/m\"", "/srv/m", |s| {
            s.data_dir == Path::new("/srv/m") && s.database_url == "sqlite:///srv/m/meshrelay.db"
        }),
        (
            "database_url",
            "\"postgres://u@h/db\"",
            "postgres://u@h/db",
            |s| s.database_url == "postgres://u@h/db",
        ),
        (
            "public_url",
            "\"https://r.example\"",
            "https://r.example",
            |s| s.public_url() == "https://r.example" && s.public_url_explicit,
        ),
        ("admin_token", "\"t0k\"", "t0k", |s| {
            s.admin_token.as_deref() == Some("t0k")
        }),
        (
            "seed_peers",
            "\"http://a,http://b\"",
            "http://a,http://b",
            |s| s.federation.seed_peers == ["http://a", "http://b"],
        ),
        ("subscribe", "\"none\"", "none", |s| {
            s.federation.own_subscribe == Subscribe::None
        }),
        ("require_peer_approval", "true", "true", |s| {
            s.federation.require_peer_approval
        }),
        ("allow_private_peers", "true", "true", |s| {
            s.federation.allow_private_peers
        }),
        ("max_hops", "9", "9", |s| s.federation.max_hops == 9),
        ("forward_lazily", "false", "false", |s| {
            !s.federation.forward_lazily
        }),
        ("offer_delay_ms", "250", "250", |s| {
            s.federation.offer_delay_ms == 250
        }),
        ("poll_schedule", "\"0 */5 * * * *\"", "0 */5 * * * *", |s| {
            s.jobs.poll_schedule == "0 */5 * * * *"
        }),
        ("sync_schedule", "\"0 */6 * * * *\"", "0 */6 * * * *", |s| {
            s.jobs.sync_schedule == "0 */6 * * * *"
        }),
        ("prune_schedule", "\"0 0 2 * * *\"", "0 0 2 * * *", |s| {
            s.jobs.prune_schedule == "0 0 2 * * *"
        }),
        ("optimize_schedule", "\"0 0 5 * * *\"", "0 0 5 * * *", |s| {
            s.jobs.optimize_schedule == "0 0 5 * * *"
        }),
        ("sync_window_days", "3", "3", |s| {
            s.federation.sync.window_days == 3
        }),
        ("sync_max_items", "500", "500", |s| {
            s.federation.sync.max_items == 500
        }),
        ("retry_min_secs", "2", "2", |s| {
            s.federation.retry_min_secs == 2
        }),
        ("retry_max_secs", "60", "60", |s| {
            s.federation.retry_max_secs == 60
        }),
        ("max_delivery_age_secs", "99", "99", |s| {
            s.federation.max_delivery_age_secs == 99
        }),
        ("blob_store", "\"s3://bucket\"", "s3://bucket", |s| {
            s.blob_store == "s3://bucket"
        }),
        ("max_blob_bytes", "1000", "1000", |s| {
            s.blobs.max_blob_bytes == 1000
        }),
        ("blob_quota_bytes", "5000", "5000", |s| {
            s.blobs.quota_bytes == 5000
        }),
        ("blob_gc_schedule", "\"0 0 1 * * *\"", "0 0 1 * * *", |s| {
            s.blobs.gc_schedule == "0 0 1 * * *"
        }),
        ("blob_grace_secs", "60", "60", |s| s.blobs.grace_secs == 60),
        ("mirror_blobs", "false", "false", |s| !s.blobs.mirror),
        ("tls_cert_file", "\"/etc/m/c.pem\"", "/etc/m/c.pem", |s| {
            s.tls.cert_file.as_deref() == Some(std::path::Path::new("/etc/m/c.pem"))
        }),
        ("tls_key_file", "\"/etc/m/k.pem\"", "/etc/m/k.pem", |s| {
            s.tls.key_file.as_deref() == Some(std::path::Path::new("/etc/m/k.pem"))
        }),
        (
            "admin_tls_cert_file",
            "\"/etc/m/ac.pem\"",
            "/etc/m/ac.pem",
            |s| s.tls.admin_cert_file.as_deref() == Some(std::path::Path::new("/etc/m/ac.pem")),
        ),
        (
            "admin_tls_key_file",
            "\"/etc/m/ak.pem\"",
            "/etc/m/ak.pem",
            |s| s.tls.admin_key_file.as_deref() == Some(std::path::Path::new("/etc/m/ak.pem")),
        ),
        (
            "node_key_file",
            "\"/etc/m/node.key\"",
            "/etc/m/node.key",
            |s| s.node_key_path() == std::path::Path::new("/etc/m/node.key"),
        ),
        ("peer_ca_file", "\"/etc/m/ca.pem\"", "/etc/m/ca.pem", |s| {
            s.tls.peer_ca_file.as_deref() == Some(std::path::Path::new("/etc/m/ca.pem"))
        }),
        ("max_content_bytes", "1000", "1000", |s| {
            s.limits.payload.max_content_bytes == 1000
        }),
        ("max_future_skew", "30", "30", |s| {
            s.limits.payload.max_future_skew == 30
        }),
        ("max_limit", "50", "50", |s| s.limits.max_limit == 50),
        ("max_subscriptions", "4", "4", |s| {
            s.limits.max_subscriptions == 4
        }),
        ("max_filters", "3", "3", |s| s.limits.max_filters == 3),
        ("publish_rate", "0", "0", |s| s.limits.publish_rate == 0),
        ("publish_burst", "7", "7", |s| s.limits.publish_burst == 7),
        ("log_format", "\"json\"", "json", |s| {
            s.log_format == LogFormat::Json
        }),
        ("retention_days", "30", "30", |s| {
            s.jobs.retention_days == Some(30)
        }),
        ("deleted_grace_days", "2", "2", |s| {
            s.jobs.deleted_grace_days == 2
        }),
        ("job_history", "5", "5", |s| s.jobs.job_history == 5),
        ("disabled_jobs", "\"sync,prune\"", "sync,prune", |s| {
            s.jobs.disabled_jobs == ["sync", "prune"]
        }),
        ("max_connections", "20", "20", |s| {
            s.connections.max_connections == 20
        }),
        ("max_connections_per_ip", "3", "3", |s| {
            s.connections.max_connections_per_ip == 3
        }),
        ("ws_queue_bytes", "9000000", "9000000", |s| {
            s.limits.ws_queue_bytes == 9_000_000
        }),
        ("ws_idle_secs", "5", "5", |s| s.limits.ws_idle_secs == 5),
        ("request_timeout_secs", "4", "4", |s| {
            s.connections.request_timeout_secs == 4
        }),
        ("max_response_bytes", "5000000", "5000000", |s| {
            s.limits.max_response_bytes == 5_000_000
        }),
        ("max_filter_values", "12", "12", |s| {
            s.limits.max_filter_values == 12 && s.federation.max_filter_values == 12
        }),
        ("max_payload_bytes", "100000", "100000", |s| {
            s.limits.max_payload_bytes == 100_000 && s.federation.max_payload_bytes == 100_000
        }),
        ("max_peers", "5", "5", |s| s.federation.max_peers == 5),
        ("announce_rate", "2", "2", |s| {
            s.federation.announce_rate == 2
        }),
        ("inbox_rate", "7", "7", |s| s.federation.inbox_rate == 7),
        ("sync_max_rounds", "8", "8", |s| {
            s.federation.sync.max_rounds == 8
        }),
        ("sync_max_secs", "9", "9", |s| {
            s.federation.sync.max_secs == 9
        }),
        (
            "trusted_proxies",
            "\"10.0.0.0/8, 127.0.0.1\"",
            "10.0.0.0/8,127.0.0.1",
            |s| {
                s.connections.trusted_proxies
                    == [
                        "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                        "127.0.0.1/32".parse().unwrap(),
                    ]
            },
        ),
        ("database_max_connections", "4", "4", |s| {
            s.database_max_connections == 4
        }),
    ];
    let names = Raw::names();
    assert_eq!(
        names.len(),
        cases.len(),
        "a case for every setting: {names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, toml, var, check) in cases {
        assert!(names.contains(name), "{name} is a setting");
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, format!("{name} = {toml}\n")).unwrap();
        let from_file = Settings::load_from(Some(&file), vars(&[])).unwrap();
        assert!(check(&from_file), "{name} in the file");
        let upper = format!("MESHRELAY_{}", name.to_ascii_uppercase());
        let from_var = Settings::load_from(None, vars(&[(&upper, var)])).unwrap();
        assert!(check(&from_var), "{upper}");
        assert!(
            !check(&Settings::load_from(None, vars(&[])).unwrap()),
            "{name}: the default differs"
        );
    }
}

#[test]
fn a_typo_in_the_file_stops_start_up_naming_the_nearest_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nmax_hop = 2\n").unwrap();
    let err = Settings::load_from(Some(&file), vars(&[])).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "unknown setting \"max_hop\" in the config file; did you mean \"max_hops\"?"
    );
}

#[test]
fn an_unknown_variable_is_warned_about_not_obeyed() {
    let s = Settings::load_from(
        None,
        vars(&[("MESHRELAY_MAX_HOP", "2"), ("MESHRELAY_VECTORS", "/x")]),
    )
    .unwrap();
    assert_eq!(s.federation.max_hops, 16);
    assert_eq!(
        s.warnings,
        ["ignoring MESHRELAY_MAX_HOP: no setting is named \"max_hop\"; did you mean MESHRELAY_MAX_HOPS?"]
    );
}

#[test]
fn seed_peers_from_a_variable_are_comma_separated() {
    let s = Settings::load_from(
        None,
        vars(&[("MESHRELAY_SEED_PEERS", "http://a, http://b")]),
    )
    .unwrap();
    assert_eq!(s.federation.seed_peers, vec!["http://a", "http://b"]);
}

#[test]
fn bad_values_name_the_setting() {
    for (k, v, needle) in [
        ("MESHRELAY_LISTEN", "nowhere", "listen"),
        ("MESHRELAY_SUBSCRIBE", "some", "subscribe"),
        ("MESHRELAY_MAX_HOPS", "many", "max_hops"),
        ("MESHRELAY_DATABASE_URL", "mysql://x", "database_url"),
        ("MESHRELAY_LOG_FORMAT", "xml", "log_format"),
        (
            "MESHRELAY_REQUIRE_PEER_APPROVAL",
            "maybe",
            "require_peer_approval",
        ),
        (
            "MESHRELAY_TRUSTED_PROXIES",
            "10.0.0.0/33",
            "trusted_proxies",
        ),
        (
            "MESHRELAY_TRUSTED_PROXIES",
            "proxy.local",
            "trusted_proxies",
        ),
    ] {
        let err = Settings::load_from(None, vars(&[(k, v)])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(needle), "{k}={v}: {text}");
    }
}
