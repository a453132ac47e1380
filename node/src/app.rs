//! Building and running a node: bind the listener, open storage, start the
//! writer, serve until the shutdown token fires, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use meshrelay_store::{Store, Writer, WriterConfig};
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
    writer_task: meshrelay_store::WriterTask,
    job_state: crate::jobs::JobState,
}

impl Application {
    /// Open everything the node needs and bind its listener (port 0 picks one).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data_dir {}", settings.data_dir.display()))?;
        let node_key = crate::node_key::load_or_create(&settings.node_key_path())?;
        let store = Store::connect(&settings.database_url)
            .await
            .with_context(|| format!("opening database_url {}", redact(&settings.database_url)))?;
        store
            .migrate()
            .await
            .context("applying database migrations")?;
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
        if generated {
            // Printed once, at the first start, for the operator to pick up.
            eprintln!(
                "meshrelay: generated an admin token into {}: {admin_token}",
                token_path.display()
            );
        }
        if !settings.public_url_explicit {
            settings.public_url = format!("http://{}", listener.local_addr()?);
        }
        let node_key = Arc::new(node_key);
        let shutdown = CancellationToken::new();
        let federation = meshrelay_federation::Federation::new(
            meshrelay_federation::Config {
                public_url: settings.public_url.clone(),
                own_subscribe: settings.subscribe.clone(),
                seed_peers: settings.seed_peers.clone(),
                require_peer_approval: settings.require_peer_approval,
                max_hops: settings.max_hops,
                retry_min_secs: settings.retry_min_secs,
                retry_max_secs: settings.retry_max_secs,
                max_delivery_age_secs: settings.max_delivery_age_secs,
                sync_max_items: settings.sync_max_items,
            },
            store.clone(),
            node_key.clone(),
            settings.allow_private_peers,
            shutdown.clone(),
        );
        let job_state = crate::jobs::JobState::default();
        let scheduler = Arc::new(crate::jobs::build_scheduler(
            &settings,
            &store,
            &federation,
            &job_state,
        )?);
        let (writer, writer_task) = Writer::spawn(store.clone(), WriterConfig::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let checkpointer = store
            .spawn_checkpointer(async move {
                let _ = stop_rx.await;
            })
            .map(|task| (stop_tx, task));
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(crate::limits::RateLimits::new(
            settings.publish_rate,
            settings.publish_burst,
        ));
        let state = AppState {
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
            checkpointer: Arc::new(std::sync::Mutex::new(checkpointer)),
            scheduler,
            federation,
        };
        *job_state.lock().expect("lock") = Some(state.clone());
        let (router, _api) = crate::http::router(state.clone());
        let admin = meshrelay_admin_api::AdminContext::new(
            state.store.clone(),
            state.federation.clone(),
            state.scheduler.clone(),
            Arc::new(NodeLive(state.metrics.clone())),
            state.node_hex(),
            state.settings.public_url.clone(),
            &admin_token,
        );
        Ok(Self {
            listener,
            admin_listener,
            admin,
            router,
            state,
            writer_task,
            job_state,
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
        let Application {
            listener,
            admin_listener,
            admin,
            router,
            state,
            writer_task,
            job_state,
        } = self;
        let shutdown = state.shutdown.clone();
        let admin_addr = admin_listener.local_addr()?;
        let sampler = admin.sampler.spawn(shutdown.clone());
        let admin_task = tokio::spawn(meshrelay_admin_api::serve(
            admin_listener,
            admin,
            shutdown.clone(),
        ));
        let scheduler_task = state
            .scheduler
            .start_except(&state.settings.disabled_jobs, shutdown.clone());
        tracing::info!(
            listen = %listener.local_addr()?,
            admin_listen = %admin_addr,
            node = %state.node_hex(),
            public_url = %state.settings.public_url,
            database = ?state.store.backend(),
            "meshrelay node serving"
        );
        // Peers can reach us from here on (the listener is bound): load peers,
        // start their delivery loops, join the seeds.
        if let Err(e) = state.federation.start().await {
            tracing::error!(error = ?e, "starting federation failed");
        }
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the public listener")?;
        tracing::info!("draining");
        match admin_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the admin listener failed"),
            Err(e) => tracing::error!(error = %e, "the admin listener panicked"),
        }
        let _ = sampler.await;
        state.federation.stop().await;
        if tokio::time::timeout(Duration::from_secs(30), scheduler_task)
            .await
            .is_err()
        {
            tracing::warn!("a scheduled job did not finish within 30 s");
        }
        job_state.lock().expect("lock").take();
        state.ws_tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), state.ws_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections did not close within 20 s");
        }
        close(state, writer_task).await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Close a node that was built but never served (a one-shot command such as
    /// `meshrelay sync`): commit queued writes and close storage.
    pub async fn close(self) {
        let Application {
            listener,
            admin_listener,
            admin,
            router,
            state,
            writer_task,
            job_state,
        } = self;
        // The router and the jobs hold state (and so the writer) too.
        drop((listener, admin_listener, admin, router));
        job_state.lock().expect("lock").take();
        close(state, writer_task).await;
    }
}

/// The node's in-memory counters, as the admin API sees them.
struct NodeLive(Arc<Metrics>);

impl meshrelay_admin_api::Live for NodeLive {
    fn connections(&self) -> i64 {
        self.0.ws_connections.get()
    }
    fn subscriptions(&self) -> i64 {
        self.0.ws_subscriptions.get()
    }
}

/// The last steps of a drain: the writer commits its queue, the checkpointer
/// runs once more, storage closes.
async fn close(state: AppState, writer_task: meshrelay_store::WriterTask) {
    let store = state.store.clone();
    let checkpointer = state.checkpointer.lock().expect("lock").take();
    drop(state);
    // The writer ends once every handle is gone, after committing its queue.
    if tokio::time::timeout(Duration::from_secs(30), writer_task)
        .await
        .is_err()
    {
        tracing::warn!("the writer did not finish within 30 s");
    }
    if let Some((stop, task)) = checkpointer {
        let _ = stop.send(());
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
