//! Settings (PROTOCOL.md 8): embedded defaults, then an optional TOML file, then
//! `MESHRELAY_<NAME>` variables, the variable winning. Bad values stop start-up
//! with a message naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::Limits;
use serde::{Deserialize, Serialize};

mod keys;
mod lists;
use lists::{trusted_proxies, ListSetting};

/// `log_format`: how log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The settings as PROTOCOL.md 8 names them: flat keys, the same in the TOML
/// file and as `MESHRELAY_<NAME>` variables. Every default lives here, in
/// `Default`; `Settings::resolve` turns this into sections.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    listen: String,
    admin_listen: String,
    data_dir: PathBuf,
    database_url: Option<String>,
    public_url: Option<String>,
    admin_token: Option<String>,
    log_format: LogFormat,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    admin_tls_cert_file: Option<PathBuf>,
    admin_tls_key_file: Option<PathBuf>,
    peer_ca_file: Option<PathBuf>,
    node_key_file: Option<PathBuf>,
    trusted_proxies: Option<ListSetting>,
    database_max_connections: u32,
    blob_store: String,
    max_blob_bytes: u64,
    blob_quota_bytes: u64,
    blob_gc_schedule: String,
    blob_grace_secs: u64,
    mirror_blobs: bool,
    // federation
    seed_peers: Option<ListSetting>,
    subscribe: String,
    require_peer_approval: bool,
    allow_private_peers: bool,
    max_hops: u32,
    forward_lazily: bool,
    offer_delay_ms: u64,
    retry_min_secs: u64,
    retry_max_secs: u64,
    max_delivery_age_secs: u64,
    // sync
    sync_window_days: u32,
    sync_max_items: usize,
    // limits
    max_content_bytes: usize,
    max_future_skew: u64,
    max_limit: u32,
    max_subscriptions: usize,
    max_filters: usize,
    publish_rate: u32,
    publish_burst: u32,
    // bounds (PROTOCOL.md 10)
    max_connections: usize,
    max_connections_per_ip: usize,
    ws_queue_bytes: usize,
    ws_idle_secs: u64,
    request_timeout_secs: u64,
    max_response_bytes: usize,
    max_filter_values: usize,
    max_payload_bytes: usize,
    max_peers: usize,
    announce_rate: u32,
    inbox_rate: u32,
    sync_max_rounds: u32,
    sync_max_secs: u64,
    // jobs
    poll_schedule: String,
    sync_schedule: String,
    prune_schedule: String,
    optimize_schedule: String,
    retention_days: u32,
    deleted_grace_days: u32,
    job_history: u32,
    disabled_jobs: Option<ListSetting>,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:7700".into(),
            admin_listen: "127.0.0.1:7701".into(),
            data_dir: "./data".into(),
            database_url: None,
            public_url: None,
            admin_token: None,
            log_format: LogFormat::Text,
            tls_cert_file: None,
            tls_key_file: None,
            admin_tls_cert_file: None,
            admin_tls_key_file: None,
            peer_ca_file: None,
            node_key_file: None,
            trusted_proxies: None,
            database_max_connections: 16,
            blob_store: "fs".into(),
            max_blob_bytes: 16 * 1024 * 1024,
            blob_quota_bytes: 256 * 1024 * 1024,
            blob_gc_schedule: "0 15 * * * *".into(),
            blob_grace_secs: 86_400,
            mirror_blobs: true,
            seed_peers: None,
            subscribe: "all".into(),
            require_peer_approval: false,
            allow_private_peers: false,
            max_hops: 16,
            forward_lazily: true,
            offer_delay_ms: 1000,
            retry_min_secs: 10,
            retry_max_secs: 3600,
            max_delivery_age_secs: 259_200,
            sync_window_days: 7,
            sync_max_items: 1_000_000,
            max_content_bytes: 65_536,
            max_future_skew: 600,
            max_limit: 500,
            max_subscriptions: 32,
            max_filters: 10,
            publish_rate: 50,
            publish_burst: 100,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            ws_queue_bytes: 8 * 1024 * 1024,
            ws_idle_secs: 300,
            request_timeout_secs: 30,
            max_response_bytes: 4 * 1024 * 1024,
            max_filter_values: 256,
            max_payload_bytes: 256 * 1024,
            max_peers: 1000,
            announce_rate: 10,
            inbox_rate: 50,
            sync_max_rounds: 64,
            sync_max_secs: 120,
            poll_schedule: "0 */15 * * * *".into(),
            sync_schedule: "0 0 * * * *".into(),
            prune_schedule: "0 30 3 * * *".into(),
            optimize_schedule: "0 0 4 * * *".into(),
            retention_days: 0,
            deleted_grace_days: 7,
            job_history: 50,
            disabled_jobs: None,
        }
    }
}

impl Raw {
    /// Every setting's name, from the defaults themselves (so it cannot drift).
    fn names() -> Vec<&'static str> {
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        NAMES
            .get_or_init(|| match serde_json::to_value(Raw::default()) {
                Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
                _ => unreachable!("the settings serialize as a map"),
            })
            .iter()
            .map(String::as_str)
            .collect()
    }
}

/// The node's resolved settings, in sections.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub admin_listen: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// False when `public_url` was derived from `listen`, so it can follow the
    /// port actually bound when `listen` asks for port 0.
    pub public_url_explicit: bool,
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    /// Certificates of the listeners and the extra CA for peers (PROTOCOL.md 8).
    pub tls: Tls,
    /// `node_key_file`; `None` for the default, `data_dir/node.key`.
    pub node_key_file: Option<PathBuf>,
    /// Connections the process opens to PostgreSQL at most, for handlers and
    /// jobs (the writer and the listener have their own).
    pub database_max_connections: u32,
    pub blob_store: String,
    /// The `AWS_*` variables of the same environment the settings came
    /// from, for `blob_store = "s3://..."` (credentials, region, endpoint).
    pub aws: AwsVars,
    /// Blob bounds, garbage collection and mirroring (PROTOCOL.md 4.3).
    pub blobs: Blobs,
    /// Peers, forwarding, polling and sync (`public_url` lives here: it is
    /// what peers reach and what signatures are checked against).
    pub federation: meshrelay_federation::Config,
    pub limits: ClientLimits,
    pub connections: Connections,
    pub jobs: Jobs,
    /// What loading noticed but did not refuse (unknown `MESHRELAY_*`
    /// variables), logged once logging is set up.
    pub warnings: Vec<String>,
}

/// What one client may ask of the node.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// The payload checks' limits (content size, clock skew).
    pub payload: Limits,
    /// Most stored results one filter returns (`limit` is clamped to it).
    pub max_limit: u32,
    /// Live subscriptions one WebSocket connection may hold.
    pub max_subscriptions: usize,
    /// Filters one subscription may carry.
    pub max_filters: usize,
    /// Sustained publishes per second allowed per WebSocket connection and per
    /// client address over HTTP; 0 turns the limit off.
    pub publish_rate: u32,
    /// Publishes allowed in a burst above the sustained rate.
    pub publish_burst: u32,
    /// One payload's JSON as received; larger is `too_large`.
    pub max_payload_bytes: usize,
    /// Values over all lists of one filter (ids, authors, kinds, channels, tag values).
    pub max_filter_values: usize,
    /// One query, log or fetch answer; a page stops early and gives its cursor.
    pub max_response_bytes: usize,
    /// Bytes queued to one WebSocket; past it, close 1008 `slow consumer`.
    /// One subscription's backfill is cut to it, so a full backfill always fits.
    pub ws_queue_bytes: usize,
    /// A WebSocket with no frame from the client this long is closed 1001.
    pub ws_idle_secs: u64,
}

/// What one listener holds open (PROTOCOL.md 10).
#[derive(Debug, Clone)]
pub struct Connections {
    /// Open client connections, HTTP and WebSocket, over all addresses.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_ip: usize,
    /// Reading a request's head, and its body, each at most this long.
    pub request_timeout_secs: u64,
    /// Proxies whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// TLS settings as given; the files are read (and a pair given half is
/// refused) when the node starts.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub admin_cert_file: Option<PathBuf>,
    pub admin_key_file: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for `https://` peers, beside the
    /// built-in web roots.
    pub peer_ca_file: Option<PathBuf>,
}

/// `AWS_*` variables; their values (a secret key among them) never reach
/// a log through `Debug`.
#[derive(Clone, Default)]
pub struct AwsVars(pub Vec<(String, String)>);

impl std::fmt::Debug for AwsVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Blobs (PROTOCOL.md 4.3, 10).
#[derive(Debug, Clone)]
pub struct Blobs {
    /// One blob; larger uploads are `too_large` (413).
    pub max_blob_bytes: u64,
    /// All blobs of one uploader.
    pub quota_bytes: u64,
    /// When `blob_gc` deletes unreferenced blobs.
    pub gc_schedule: String,
    /// How long a blob is kept before `blob_gc` may delete it unreferenced.
    pub grace_secs: u64,
    /// Fetch the blobs peers' payloads name from those peers.
    pub mirror: bool,
}

/// The scheduled jobs' settings.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub poll_schedule: String,
    pub sync_schedule: String,
    pub prune_schedule: String,
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
}

/// Federation's section; `public_url` defaults to `http://<listen>`.
fn resolve_federation(raw: &Raw) -> anyhow::Result<meshrelay_federation::Config> {
    let public_url = raw
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", raw.listen))
        .trim_end_matches('/')
        .to_string();
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        bail!("setting public_url: {public_url:?} must start with http:// or https://");
    }
    if raw.retry_min_secs == 0 || raw.retry_min_secs > raw.retry_max_secs {
        bail!("settings retry_min_secs and retry_max_secs: need 0 < min <= max");
    }
    Ok(meshrelay_federation::Config {
        public_url,
        own_subscribe: Subscribe::from_setting(&raw.subscribe)
            .map_err(|e| anyhow::anyhow!("setting subscribe: {}", e.message))?,
        seed_peers: raw
            .seed_peers
            .clone()
            .map(ListSetting::into_vec)
            .unwrap_or_default(),
        require_peer_approval: raw.require_peer_approval,
        allow_private_peers: raw.allow_private_peers,
        max_hops: raw.max_hops,
        forward_lazily: raw.forward_lazily,
        offer_delay_ms: raw.offer_delay_ms.min(3_600_000) as i64,
        retry_min_secs: raw.retry_min_secs,
        retry_max_secs: raw.retry_max_secs,
        max_delivery_age_secs: raw.max_delivery_age_secs,
        max_peers: raw.max_peers,
        announce_rate: raw.announce_rate,
        inbox_rate: raw.inbox_rate,
        max_filter_values: raw.max_filter_values.max(1),
        max_payload_bytes: raw.max_payload_bytes.max(1024),
        max_response_bytes: raw
            .max_response_bytes
            .max(raw.max_payload_bytes.max(1024) + 1024),
        sync: meshrelay_federation::SyncConfig {
            window_days: raw.sync_window_days,
            max_items: raw.sync_max_items.max(1),
            max_rounds: raw.sync_max_rounds.max(1),
            max_secs: raw.sync_max_secs.max(1),
        },
        // Read from peer_ca_file when the node starts.
        peer_roots: Default::default(),
        cluster: None,
    })
}

impl ClientLimits {
    fn resolve(raw: &Raw) -> anyhow::Result<Self> {
        if raw.max_limit == 0 {
            bail!("setting max_limit: must be at least 1");
        }
        Ok(Self {
            payload: Limits {
                max_content_bytes: raw.max_content_bytes,
                max_future_skew: raw.max_future_skew,
            },
            max_limit: raw.max_limit,
            max_subscriptions: raw.max_subscriptions,
            max_filters: raw.max_filters,
            publish_rate: raw.publish_rate,
            publish_burst: raw.publish_burst,
            max_payload_bytes: raw.max_payload_bytes.max(1024),
            max_filter_values: raw.max_filter_values.max(1),
            max_response_bytes: raw
                .max_response_bytes
                .max(raw.max_payload_bytes.max(1024) + 1024),
            ws_queue_bytes: raw.ws_queue_bytes.max(raw.max_payload_bytes.max(1024) * 2),
            ws_idle_secs: raw.ws_idle_secs.max(1),
        })
    }
}

impl Jobs {
    fn resolve(raw: &Raw) -> anyhow::Result<Self> {
        let jobs = Jobs {
            poll_schedule: raw.poll_schedule.clone(),
            sync_schedule: raw.sync_schedule.clone(),
            prune_schedule: raw.prune_schedule.clone(),
            optimize_schedule: raw.optimize_schedule.clone(),
            retention_days: (raw.retention_days > 0).then_some(raw.retention_days),
            deleted_grace_days: raw.deleted_grace_days,
            job_history: raw.job_history.max(1),
            disabled_jobs: raw
                .disabled_jobs
                .clone()
                .map(ListSetting::into_vec)
                .unwrap_or_default(),
        };
        for (name, value) in [
            ("poll_schedule", &jobs.poll_schedule),
            ("sync_schedule", &jobs.sync_schedule),
            ("prune_schedule", &jobs.prune_schedule),
            ("optimize_schedule", &jobs.optimize_schedule),
            ("blob_gc_schedule", &raw.blob_gc_schedule),
        ] {
            meshrelay_scheduler::parse_schedule(name, value)?;
        }
        Ok(jobs)
    }
}

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
        let names = Raw::names();
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            let source = config::File::from(path).format(config::FileFormat::Toml);
            let keys = config::Config::builder()
                .add_source(source.clone())
                .build()
                .with_context(|| format!("reading config file {}", path.display()))?
                .try_deserialize::<config::Map<String, config::Value>>()?;
            if let Some(bad) = keys.keys().find(|k| !names.contains(&k.as_str())) {
                bail!("{}", keys::unknown_key(bad, &names));
            }
            builder = builder.add_source(source.required(true));
        }
        let mut warnings = Vec::new();
        let mut env = config::Map::new();
        let mut aws = Vec::new();
        for (k, v) in vars {
            if k.starts_with("AWS_") {
                aws.push((k, v));
                continue;
            }
            if !k.starts_with("MESHRELAY_") {
                continue;
            }
            let name = k["MESHRELAY_".len()..].to_ascii_lowercase();
            if names.contains(&name.as_str()) {
                env.insert(k, v);
            } else {
                warnings.extend(keys::unknown_variable(&k, &names));
            }
        }
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
        let mut settings = Self::resolve(raw)?;
        settings.warnings = warnings;
        settings.aws = AwsVars(aws);
        Ok(settings)
    }

    fn resolve(raw: Raw) -> anyhow::Result<Self> {
        for (name, value) in [("listen", &raw.listen), ("admin_listen", &raw.admin_listen)] {
            value.parse::<SocketAddr>().with_context(|| {
                format!("setting {name}: {value:?} is not an address like 0.0.0.0:7700")
            })?;
        }
        let database_url = raw
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", raw.data_dir.join("meshrelay.db").display()));
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            bail!(
                "setting database_url: {database_url:?} is neither sqlite://... nor postgres://..."
            );
        }
        let jobs = Jobs::resolve(&raw)?;
        let limits = ClientLimits::resolve(&raw)?;
        let connections = Connections {
            max_connections: raw.max_connections.max(1),
            max_connections_per_ip: raw.max_connections_per_ip.max(1),
            request_timeout_secs: raw.request_timeout_secs.max(1),
            trusted_proxies: trusted_proxies(raw.trusted_proxies.clone())?,
        };
        let federation = resolve_federation(&raw)?;
        if !(raw.blob_store == "fs" || raw.blob_store.starts_with("s3://")) {
            bail!(
                "setting blob_store: {:?} is neither fs nor s3://bucket[/prefix]",
                raw.blob_store
            );
        }
        let blobs = Blobs {
            max_blob_bytes: raw.max_blob_bytes.max(1),
            quota_bytes: raw.blob_quota_bytes,
            gc_schedule: raw.blob_gc_schedule.clone(),
            grace_secs: raw.blob_grace_secs,
            mirror: raw.mirror_blobs,
        };
        Ok(Settings {
            public_url_explicit: raw.public_url.is_some(),
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            data_dir: raw.data_dir,
            database_url,
            admin_token: raw.admin_token.filter(|t| !t.is_empty()),
            log_format: raw.log_format,
            tls: Tls {
                cert_file: raw.tls_cert_file.clone(),
                key_file: raw.tls_key_file.clone(),
                admin_cert_file: raw.admin_tls_cert_file.clone(),
                admin_key_file: raw.admin_tls_key_file.clone(),
                peer_ca_file: raw.peer_ca_file.clone(),
            },
            node_key_file: raw.node_key_file.clone(),
            database_max_connections: raw.database_max_connections.max(1),
            blob_store: raw.blob_store,
            blobs,
            aws: AwsVars::default(),
            federation,
            limits,
            connections,
            jobs,
            warnings: Vec::new(),
        })
    }

    /// Where peers and clients reach this node, without a trailing `/`.
    pub fn public_url(&self) -> &str {
        &self.federation.public_url
    }

    /// The node key file: generated once, then reused.
    pub fn node_key_path(&self) -> PathBuf {
        self.node_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// Frames queued for one WebSocket before it counts as a slow consumer:
    /// one full backfill of a subscription (every filter at `max_limit`) and room
    /// for the answers around it.
    pub fn ws_queue_bound(&self) -> usize {
        self.limits.max_filters.max(1) * self.limits.max_limit as usize + 256
    }
}

#[cfg(test)]
mod tests;
