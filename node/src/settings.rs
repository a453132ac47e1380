//! Settings (PROTOCOL.md 8): embedded defaults, then an optional TOML file, then
//! `MESHRELAY_<NAME>` variables, the variable winning. Bad values stop start-up
//! with a message naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::Limits;
use serde::Deserialize;

/// A list written either as a TOML array or as one comma-separated string
/// (the only form an environment variable has).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ListSetting {
    List(Vec<String>),
    Text(String),
}

impl ListSetting {
    fn into_vec(self) -> Vec<String> {
        match self {
            ListSetting::List(v) => v,
            ListSetting::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// What the file and variables say, before defaults are derived.
#[derive(Debug, Deserialize)]
struct Raw {
    listen: String,
    admin_listen: String,
    data_dir: PathBuf,
    database_url: Option<String>,
    public_url: Option<String>,
    admin_token: Option<String>,
    seed_peers: Option<ListSetting>,
    subscribe: String,
    require_peer_approval: bool,
    allow_private_peers: bool,
    max_hops: u32,
    poll_schedule: String,
    sync_schedule: String,
    prune_schedule: String,
    sync_window_days: u32,
    sync_max_items: usize,
    retry_min_secs: u64,
    retry_max_secs: u64,
    max_delivery_age_secs: u64,
    blob_store: String,
    max_content_bytes: usize,
    max_future_skew: u64,
    max_limit: u32,
    max_subscriptions: usize,
    max_filters: usize,
    log_format: String,
    optimize_schedule: String,
    retention_days: u32,
    deleted_grace_days: u32,
    job_history: u32,
    disabled_jobs: Option<ListSetting>,
    publish_rate: u32,
    publish_burst: u32,
}

/// The node's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub admin_listen: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Where peers and clients reach this node, without a trailing `/`.
    pub public_url: String,
    /// False when `public_url` was derived from `listen`, so it can follow the
    /// port actually bound when `listen` asks for port 0.
    pub public_url_explicit: bool,
    pub admin_token: Option<String>,
    pub seed_peers: Vec<String>,
    pub subscribe: Subscribe,
    pub require_peer_approval: bool,
    pub allow_private_peers: bool,
    pub max_hops: u32,
    pub poll_schedule: String,
    pub sync_schedule: String,
    pub prune_schedule: String,
    pub sync_window_days: u32,
    /// Most payloads one sync session may cover, on either side; a larger
    /// window is refused (413) or split.
    pub sync_max_items: usize,
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    pub max_delivery_age_secs: u64,
    pub blob_store: String,
    pub limits: Limits,
    /// Most stored results one filter returns (`limit` is clamped to it).
    pub max_limit: u32,
    /// Live subscriptions one WebSocket connection may hold.
    pub max_subscriptions: usize,
    /// Filters one subscription may carry.
    pub max_filters: usize,
    pub log_format: String,
    /// When the `optimize` job refreshes the database's planner statistics.
    pub optimize_schedule: String,
    /// Payloads created longer ago than this are pruned; None keeps everything.
    pub retention_days: Option<u32>,
    /// How long a deleted (or operator-removed) payload is kept hidden before
    /// `prune` purges it.
    pub deleted_grace_days: u32,
    /// Runs kept in the history of each job.
    pub job_history: u32,
    /// Jobs that are registered but never scheduled (they still run on demand).
    pub disabled_jobs: Vec<String>,
    /// Sustained publishes per second allowed per WebSocket connection and per
    /// client address over HTTP; 0 turns the limit off.
    pub publish_rate: u32,
    /// Publishes allowed in a burst above the sustained rate.
    pub publish_burst: u32,
}

const DEFAULTS: &[(&str, &str)] = &[
    ("listen", "0.0.0.0:7700"),
    ("admin_listen", "127.0.0.1:7701"),
    ("data_dir", "./data"),
    ("subscribe", "all"),
    ("require_peer_approval", "false"),
    ("allow_private_peers", "false"),
    ("max_hops", "4"),
    ("poll_schedule", "0 */15 * * * *"),
    ("sync_schedule", "0 0 * * * *"),
    ("prune_schedule", "0 30 3 * * *"),
    ("sync_window_days", "7"),
    ("sync_max_items", "1000000"),
    ("retry_min_secs", "10"),
    ("retry_max_secs", "3600"),
    ("max_delivery_age_secs", "259200"),
    ("blob_store", "fs"),
    ("max_content_bytes", "65536"),
    ("max_future_skew", "600"),
    ("max_limit", "500"),
    ("max_subscriptions", "32"),
    ("max_filters", "10"),
    ("log_format", "text"),
    ("optimize_schedule", "0 0 4 * * *"),
    ("retention_days", "0"),
    ("deleted_grace_days", "7"),
    ("job_history", "50"),
    ("publish_rate", "50"),
    ("publish_burst", "100"),
];

impl Settings {
    /// Load from the embedded defaults, `file` when given, and the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(file, std::env::vars())
    }

    /// Like `load`, with the variables given explicitly (tests build nodes this way).
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        for (k, v) in DEFAULTS {
            builder = builder.set_default(*k, *v)?;
        }
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("MESHRELAY_"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("MESHRELAY")
                .prefix_separator("_")
                .source(Some(env)),
        );
        let raw: Raw = builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        Self::resolve(raw)
    }

    fn resolve(raw: Raw) -> anyhow::Result<Self> {
        for (name, value) in [("listen", &raw.listen), ("admin_listen", &raw.admin_listen)] {
            value.parse::<SocketAddr>().with_context(|| {
                format!("setting {name}: {value:?} is not an address like 0.0.0.0:7700")
            })?;
        }
        let subscribe = Subscribe::from_setting(&raw.subscribe)
            .map_err(|e| anyhow::anyhow!("setting subscribe: {}", e.message))?;
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", raw.data_dir.join("meshrelay.db").display()));
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            bail!(
                "setting database_url: {database_url:?} is neither sqlite://... nor postgres://..."
            );
        }
        let public_url_explicit = raw.public_url.is_some();
        let public_url = raw
            .public_url
            .unwrap_or_else(|| format!("http://{}", raw.listen))
            .trim_end_matches('/')
            .to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("setting public_url: {public_url:?} must start with http:// or https://");
        }
        for (name, value) in [
            ("poll_schedule", &raw.poll_schedule),
            ("sync_schedule", &raw.sync_schedule),
            ("prune_schedule", &raw.prune_schedule),
            ("optimize_schedule", &raw.optimize_schedule),
        ] {
            meshrelay_scheduler::parse_schedule(name, value)?;
        }
        if raw.max_limit == 0 {
            bail!("setting max_limit: must be at least 1");
        }
        if !matches!(raw.log_format.as_str(), "text" | "json") {
            bail!(
                "setting log_format: {:?} is neither text nor json",
                raw.log_format
            );
        }
        if raw.retry_min_secs == 0 || raw.retry_min_secs > raw.retry_max_secs {
            bail!("settings retry_min_secs and retry_max_secs: need 0 < min <= max");
        }
        Ok(Settings {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            data_dir: raw.data_dir,
            database_url,
            public_url,
            public_url_explicit,
            admin_token: raw.admin_token.filter(|t| !t.is_empty()),
            seed_peers: raw
                .seed_peers
                .map(ListSetting::into_vec)
                .unwrap_or_default(),
            subscribe,
            require_peer_approval: raw.require_peer_approval,
            allow_private_peers: raw.allow_private_peers,
            max_hops: raw.max_hops,
            poll_schedule: raw.poll_schedule,
            sync_schedule: raw.sync_schedule,
            prune_schedule: raw.prune_schedule,
            sync_window_days: raw.sync_window_days,
            sync_max_items: raw.sync_max_items.max(1),
            retry_min_secs: raw.retry_min_secs,
            retry_max_secs: raw.retry_max_secs,
            max_delivery_age_secs: raw.max_delivery_age_secs,
            blob_store: raw.blob_store,
            limits: Limits {
                max_content_bytes: raw.max_content_bytes,
                max_future_skew: raw.max_future_skew,
            },
            max_limit: raw.max_limit,
            max_subscriptions: raw.max_subscriptions,
            max_filters: raw.max_filters,
            log_format: raw.log_format,
            optimize_schedule: raw.optimize_schedule,
            retention_days: (raw.retention_days > 0).then_some(raw.retention_days),
            deleted_grace_days: raw.deleted_grace_days,
            job_history: raw.job_history.max(1),
            disabled_jobs: raw
                .disabled_jobs
                .map(ListSetting::into_vec)
                .unwrap_or_default(),
            publish_rate: raw.publish_rate,
            publish_burst: raw.publish_burst,
        })
    }

    /// Federation's part of the settings.
    pub fn federation_config(&self) -> meshrelay_federation::Config {
        meshrelay_federation::Config {
            public_url: self.public_url.clone(),
            own_subscribe: self.subscribe.clone(),
            seed_peers: self.seed_peers.clone(),
            require_peer_approval: self.require_peer_approval,
            allow_private_peers: self.allow_private_peers,
            max_hops: self.max_hops,
            retry_min_secs: self.retry_min_secs,
            retry_max_secs: self.retry_max_secs,
            max_delivery_age_secs: self.max_delivery_age_secs,
            sync_max_items: self.sync_max_items,
            sync_window_days: self.sync_window_days,
        }
    }

    /// The node key file: generated once, then reused.
    pub fn node_key_path(&self) -> PathBuf {
        self.data_dir.join("node.key")
    }

    /// Frames queued for one WebSocket before it counts as a slow consumer:
    /// one full backfill of a subscription (every filter at `max_limit`) and room
    /// for the answers around it.
    pub fn ws_queue_bound(&self) -> usize {
        self.max_filters.max(1) * self.max_limit as usize + 256
    }
}

/// Why peers could not reach this node at its `public_url`, if they could not:
/// its host is unspecified (`0.0.0.0`, `::`) or loopback.
pub fn unreachable_public_url(public_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(public_url).ok()?;
    let unreachable = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_unspecified() || ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_unspecified() || ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    };
    unreachable
        .then(|| format!("public_url {public_url} is not an address other machines can reach"))
}

/// Warn at start when peers are expected (seed peers are set, or strangers
/// may announce) but the public URL is one no peer can reach.
pub fn warn_about_reachability(settings: &Settings) {
    if settings.allow_private_peers {
        return; // a mesh on one machine or a LAN chose its addresses
    }
    if let Some(why) = unreachable_public_url(&settings.public_url) {
        tracing::warn!(
            public_url = %settings.public_url,
            seed_peers = settings.seed_peers.len(),
            "{why}: peers fetch this node's document and deliver to its inbox there; set public_url (MESHRELAY_PUBLIC_URL) to the URL peers reach"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_public_url_no_peer_can_reach_is_named() {
        for bad in [
            "http://0.0.0.0:7700",
            "http://127.0.0.1:7700",
            "http://[::]:7700",
            "http://localhost",
        ] {
            assert!(unreachable_public_url(bad).is_some(), "{bad}");
        }
        for good in ["https://relay.example.org", "http://192.0.2.7:7700"] {
            assert!(unreachable_public_url(good).is_none(), "{good}");
        }
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::load_from(None, vars(&[])).unwrap();
        assert_eq!(s.listen, "0.0.0.0:7700");
        assert_eq!(s.admin_listen, "127.0.0.1:7701");
        assert_eq!(s.database_url, "sqlite://./data/meshrelay.db");
        assert_eq!(s.public_url, "http://0.0.0.0:7700");
        assert_eq!(s.subscribe, Subscribe::All);
        assert_eq!(s.max_hops, 4);
        assert_eq!(s.limits.max_content_bytes, 65536);
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
        assert_eq!(s.max_hops, 7);
        assert!(s.require_peer_approval);
        assert_eq!(s.seed_peers, vec!["http://a", "http://b"]);
        assert_eq!(s.public_url, "https://relay.example.org");
        assert!(matches!(s.subscribe, Subscribe::Filtered { .. }));
    }

    #[test]
    fn seed_peers_from_a_variable_are_comma_separated() {
        let s = Settings::load_from(
            None,
            vars(&[("MESHRELAY_SEED_PEERS", "http://a, http://b")]),
        )
        .unwrap();
        assert_eq!(s.seed_peers, vec!["http://a", "http://b"]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v, needle) in [
            ("MESHRELAY_LISTEN", "nowhere", "listen"),
            ("MESHRELAY_SUBSCRIBE", "some", "subscribe"),
            ("MESHRELAY_MAX_HOPS", "many", "max_hops"),
            ("MESHRELAY_DATABASE_URL", "mysql://x", "database_url"),
            (
                "MESHRELAY_REQUIRE_PEER_APPROVAL",
                "maybe",
                "require_peer_approval",
            ),
        ] {
            let err = Settings::load_from(None, vars(&[(k, v)])).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(needle), "{k}={v}: {text}");
        }
    }
}
