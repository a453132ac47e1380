//! Building and running a node: bind the listener, open storage, start the
//! writer, serve until the shutdown token fires, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use meshrelay_store::{Store, Writer, WriterConfig, WriterTask};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    admin: meshrelay_admin_api::AdminContext,
    router: Router,
    state: AppState,
    /// The scheduled jobs; started by `run_until_stopped`.
    scheduler: Arc<meshrelay_scheduler::Scheduler>,
    /// The writer's lifecycle: closed last, after everything that submits.
    writer_task: WriterTask,
    /// SQLite's WAL checkpointer and the token that stops it.
    checkpointer: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Printed once the node is serving, when this start generated it.
    new_admin_token: Option<(String, std::path::PathBuf)>,
    /// SQLite: the lock that keeps a second process off the database.
    _sqlite_lock: Option<std::fs::File>,
}

impl Application {
    /// Open everything the node needs and bind its listener (port 0 picks one).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        crate::data_dir::prepare(&settings.data_dir)?;
        crate::data_dir::prepare_sqlite(&settings.database_url)?;
        let sqlite_lock = crate::data_dir::lock_sqlite(&settings.database_url)?;
        let tls = crate::tls::Certificates::load(&settings.tls)?;
        settings.federation.peer_roots = crate::tls::peer_roots(&settings.tls)?;
        let node_key = Arc::new(crate::node_key::load_or_create(&settings.node_key_path())?);
        let store = Store::connect_sized(&settings.database_url, settings.database_max_connections)
            .await
            .with_context(|| format!("opening database_url {}", redact(&settings.database_url)))?;
        store
            .migrate()
            .await
            .context("applying database migrations")?;
        let ours = node_key.public_hex();
        let recorded = store
            .claim_node_key(&ours, meshrelay_protocol::clock::now_secs())
            .await
            .context("recording the node key in the database")?;
        if recorded != ours {
            anyhow::bail!(
                "node_key_file {} holds the key of node {ours}, but this database belongs to node \
                 {recorded}: the processes of one node share one node_key_file (PROTOCOL.md 8.1)",
                settings.node_key_path().display()
            );
        }
        let cluster = Arc::new(crate::cluster::Cluster::new(&ours, store.is_shared()));
        if cluster.shared {
            refuse_unshared_settings(&store, &settings, &cluster.instance).await?;
            settings.federation.cluster = Some(meshrelay_federation::ClusterConfig {
                instance: cluster.instance.clone(),
                peers_channel: cluster.channels.peers.clone(),
            });
        }
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding listen address {}", settings.listen))?;
        let admin_listener = TcpListener::bind(&settings.admin_listen)
            .await
            .with_context(|| format!("binding admin_listen address {}", settings.admin_listen))?;
        let token_path = settings.data_dir.join("admin.token");
        let (admin_token, generated) = meshrelay_admin_api::load_or_create_token(
            settings.admin_token.as_deref(),
            &token_path,
        )?;
        if !settings.public_url_explicit {
            let scheme = if tls.public.is_some() {
                "https"
            } else {
                "http"
            };
            settings.federation.public_url = format!("{scheme}://{}", listener.local_addr()?);
        }
        let shutdown = CancellationToken::new();
        let federation = meshrelay_federation::Federation::new(
            settings.federation.clone(),
            store.clone(),
            node_key.clone(),
            shutdown.clone(),
        );
        let blob_storage = meshrelay_blobs::BlobStorage::open(
            &settings.blob_store,
            &settings.data_dir,
            &settings.aws.0,
        )
        .await
        .with_context(|| format!("opening blob_store {}", settings.blob_store))?;
        let (writer, writer_task) = Writer::spawn(
            store.clone(),
            WriterConfig {
                mirror_blobs: settings.blobs.mirror,
                announce: cluster.shared.then(|| meshrelay_store::writer::Announce {
                    channel: cluster.channels.payloads.clone(),
                    instance: cluster.instance.clone(),
                }),
                ..WriterConfig::default()
            },
        );
        let checkpointer = {
            let stop = CancellationToken::new();
            store
                .spawn_checkpointer(stop.clone().cancelled_owned())
                .map(|task| (stop, task))
        };
        let blobs = Arc::new(crate::blobs::BlobService::new(
            blob_storage.clone(),
            settings.blobs.clone(),
        ));
        let state = new_state(
            settings, store, node_key, federation, writer, shutdown, blobs, tls, cluster,
        );
        let scheduler = Arc::new(crate::jobs::build_scheduler(&state)?);
        let (router, _api) = crate::http::router(state.clone());
        let admin = meshrelay_admin_api::AdminContext::new(
            state.store.clone(),
            state.federation.clone(),
            scheduler.clone(),
            Arc::new(NodeLive(state.metrics.clone(), state.tls.clone())),
            Arc::new(crate::ingest::PeerIngest(state.clone())),
            state.node_hex(),
            state.settings.public_url().to_string(),
            &admin_token,
            blob_storage,
        );
        Ok(Self {
            listener,
            admin_listener,
            admin,
            router,
            state,
            scheduler,
            writer_task,
            checkpointer,
            new_admin_token: generated.then_some((admin_token, token_path)),
            _sqlite_lock: sqlite_lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancel this token to stop the node the way SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serve until shutdown, then drain: stop accepting, finish in-flight
    /// requests, close WebSockets with 1001, commit queued writes, close storage.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.state.shutdown.clone();
        let admin_addr = self.admin_listener.local_addr()?;
        let sampler = self.admin.sampler.spawn(shutdown.clone());
        let mut admin = self.admin;
        admin.secure_cookie = self.state.tls.admin.is_some();
        let admin_task = tokio::spawn(crate::http::serve::serve(
            self.admin_listener,
            meshrelay_admin_api::router(admin),
            crate::settings::Connections {
                max_connections: ADMIN_CONNECTIONS,
                max_connections_per_ip: ADMIN_CONNECTIONS,
                request_timeout_secs: self.state.settings.connections.request_timeout_secs,
                trusted_proxies: Vec::new(),
            },
            self.state.metrics.clone(),
            shutdown.clone(),
            Duration::from_secs(30),
            self.state.tls.admin_acceptor()?,
        ));
        let reloader = crate::tls::spawn_reload_on_sighup(self.state.tls.clone(), shutdown.clone());
        let state = self.state;
        let scheduler_task = self
            .scheduler
            .start_except(&state.settings.jobs.disabled_jobs, shutdown.clone());
        tracing::info!(
            listen = %self.listener.local_addr()?,
            admin_listen = %admin_addr,
            node = %state.node_hex(),
            public_url = %state.settings.public_url(),
            database = ?state.store.backend(),
            "meshrelay node serving"
        );
        if let Some((token, path)) = &self.new_admin_token {
            // Once, at the first start that succeeded, as a log event in the
            // chosen format (a `jq` pipe over JSON logs finds it).
            tracing::warn!(admin_token = %token, path = %path.display(),
                "generated an admin token; it is also in the file");
        }
        if !state.settings.federation.seed_peers.is_empty() {
            state.federation.warn_if_unreachable("seed peers are set");
        }
        // Peers can reach us from here on (the listener is bound): load peers,
        // start their delivery loops, join the seeds.
        if let Err(e) = state.federation.start().await {
            tracing::error!(error = ?e, "starting federation failed");
        }
        let mirror = state
            .settings
            .blobs
            .mirror
            .then(|| crate::blobs::mirror::spawn(state.clone()));
        let cluster_tasks = crate::cluster::spawn(state.clone());
        crate::http::serve::serve(
            self.listener,
            self.router,
            state.settings.connections.clone(),
            state.metrics.clone(),
            shutdown.clone(),
            Duration::from_secs(30),
            state.tls.public_acceptor()?,
        )
        .await;
        tracing::info!("draining");
        if let Err(e) = admin_task.await {
            tracing::error!(error = %e, "the admin listener panicked");
        }
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
        let _ = sampler.await;
        if let Some(mirror) = mirror {
            let _ = mirror.await;
        }
        state.federation.stop().await;
        for task in cluster_tasks {
            let _ = task.await;
        }
        if tokio::time::timeout(Duration::from_secs(30), scheduler_task)
            .await
            .is_err()
        {
            tracing::warn!("a scheduled job did not finish within 30 s");
        }
        state.ws_tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), state.ws_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections did not close within 20 s");
        }
        close_storage(&state.store, self.writer_task, self.checkpointer).await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Close a node that was built but never served (a one-shot command):
    /// commit queued writes and close storage.
    pub async fn close(self) {
        close_storage(&self.state.store, self.writer_task, self.checkpointer).await;
    }
}

/// Connections the admin listener holds open, in all and per address.
const ADMIN_CONNECTIONS: usize = 256;

/// The shared state every handler and task gets.
#[allow(clippy::too_many_arguments)]
fn new_state(
    settings: Settings,
    store: Store,
    node_key: Arc<meshrelay_protocol::NodeKey>,
    federation: Arc<meshrelay_federation::Federation>,
    writer: Writer,
    shutdown: CancellationToken,
    blobs: Arc<crate::blobs::BlobService>,
    tls: crate::tls::Certificates,
    cluster: Arc<crate::cluster::Cluster>,
) -> AppState {
    let metrics = Arc::new(Metrics::new(federation.metrics()));
    let limits = Arc::new(crate::limits::RateLimits::new(
        settings.limits.publish_rate,
        settings.limits.publish_burst,
    ));
    AppState {
        limits,
        hub: Arc::new(Hub::new(metrics.clone())),
        settings: Arc::new(settings),
        store,
        writer,
        metrics,
        node_key,
        seen: moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(600))
            .build(),
        keys: moka::sync::Cache::new(50_000),
        shutdown,
        ws_tasks: TaskTracker::new(),
        page_builds: Arc::new(tokio::sync::Semaphore::new(crate::state::PAGE_BUILDS)),
        federation,
        blobs,
        tls,
        cluster,
    }
}

/// PROTOCOL.md 8.1: the processes of one node share `public_url` (what
/// peers check signatures against) and `admin_token`. A process that finds
/// another one running refuses to start without both set explicitly.
async fn refuse_unshared_settings(
    store: &Store,
    settings: &Settings,
    ours: &str,
) -> anyhow::Result<()> {
    let since = meshrelay_protocol::clock::now_secs() - crate::cluster::INSTANCE_STALE_SECS;
    let running = store
        .instances(since)
        .await
        .context("reading the node's other processes")?;
    // A process of this machine that is gone (killed, its row not yet
    // stale) is no other process: a node restarted after `kill -9` starts.
    // Instances are `host:pid:random`.
    let host_pid = |i: &str| {
        let mut parts = i.rsplitn(3, ':');
        let (_, pid, host) = (parts.next(), parts.next(), parts.next());
        Some((host?.to_string(), pid?.to_string()))
    };
    let host = host_pid(ours).map(|(h, _)| h);
    let gone = |instance: &str| match host_pid(instance) {
        Some((h, pid)) if Some(&h) == host.as_ref() => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    };
    let Some(other) = running
        .iter()
        .find(|i| i.instance != ours && !gone(&i.instance))
    else {
        return Ok(());
    };
    let mut missing = Vec::new();
    if !settings.public_url_explicit {
        missing.push("public_url");
    }
    if settings.admin_token.is_none() {
        missing.push("admin_token");
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "process {} of this node runs on the same database: the processes of one node share \
             {} (set explicitly, the same in each; PROTOCOL.md 8.1)",
            other.instance,
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The node's in-memory counters, as the admin API sees them.
struct NodeLive(Arc<Metrics>, crate::tls::Certificates);

impl meshrelay_admin_api::Live for NodeLive {
    fn connections(&self) -> i64 {
        self.0.ws_connections.get()
    }
    fn subscriptions(&self) -> i64 {
        self.0.ws_subscriptions.get()
    }
    fn certificates(&self) -> Vec<(String, i64)> {
        self.1.expiries()
    }
}

/// The last steps of a drain: the writer commits its queue, the checkpointer
/// runs once more, storage closes.
async fn close_storage(
    store: &Store,
    writer: WriterTask,
    checkpointer: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
) {
    if tokio::time::timeout(Duration::from_secs(30), writer.close())
        .await
        .is_err()
    {
        tracing::warn!("the writer did not finish within 30 s");
    }
    if let Some((stop, task)) = checkpointer {
        stop.cancel();
        let _ = task.await;
    }
    store.close().await;
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact("sqlite://./data/x.db"),
            "sqlite://./data/x.db"
        );
    }
}
