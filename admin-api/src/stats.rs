//! `GET /admin/v1/stats` and the samples behind the dashboard's charts.
//!
//! Counting rows is a table scan on a large database, so the figures that cover
//! a time span come from samples instead: every 10 s the sampler reads the
//! highest payload insertion number and the federation's delivery counter
//! (both cheap), keeps a minute of them in memory for the rates, and every
//! minute writes one row to `stats_samples`, kept for 25 hours.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshrelay_federation::Federation;
use meshrelay_store::{StatsSample, Store};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{unix_now, AdminContext, AdminResult};

const TICK: Duration = Duration::from_secs(10);
/// Ticks per stored sample.
const TICKS_PER_SAMPLE: u32 = 6;
/// Samples older than this are deleted.
const KEEP_SECS: i64 = 25 * 3600;

/// One in-memory reading.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Unix milliseconds.
    at_ms: i64,
    stored_total: i64,
    delivered_total: u64,
}

pub struct Sampler {
    store: Store,
    federation: Arc<Federation>,
    /// The last minute of readings, oldest first.
    readings: Mutex<VecDeque<Reading>>,
    /// Delivered total at the last stored sample.
    last_sampled_delivered: Mutex<u64>,
}

impl Sampler {
    pub fn new(store: Store, federation: Arc<Federation>) -> Self {
        Self {
            store,
            federation,
            readings: Mutex::new(VecDeque::new()),
            last_sampled_delivered: Mutex::new(0),
        }
    }

    async fn read(&self) -> meshrelay_store::Result<Reading> {
        Ok(Reading {
            at_ms: unix_now_ms(),
            stored_total: self.store.payloads_generation().await?,
            delivered_total: self.federation.delivered_total(),
        })
    }

    /// Take a reading now; every `TICKS_PER_SAMPLE`th call also stores a sample.
    pub async fn tick(&self, store_sample: bool) -> meshrelay_store::Result<()> {
        let r = self.read().await?;
        {
            let mut readings = self.readings.lock().expect("lock");
            readings.push_back(r);
            while readings.len() > TICKS_PER_SAMPLE as usize + 1 {
                readings.pop_front();
            }
        }
        if store_sample {
            let depth = self.store.outbox_depth_by_peer().await?;
            let forwarded = {
                let mut last = self.last_sampled_delivered.lock().expect("lock");
                let d = r.delivered_total.saturating_sub(*last);
                *last = r.delivered_total;
                d
            };
            let now = r.at_ms / 1000;
            self.store
                .insert_sample(
                    StatsSample {
                        at: now,
                        stored_total: r.stored_total,
                        forwarded: forwarded as i64,
                        outbox_pending: depth.values().map(|d| d.pending).sum(),
                        outbox_dead: depth.values().map(|d| d.dead).sum(),
                    },
                    now - KEEP_SECS,
                )
                .await?;
        }
        Ok(())
    }

    /// Sample until `shutdown` fires.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u32 = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                // The first tick stores a sample too, so charts start at once.
                if let Err(e) = this.tick(n.is_multiple_of(TICKS_PER_SAMPLE)).await {
                    tracing::warn!(error = %e, "taking a stats sample failed");
                }
                n = n.wrapping_add(1);
            }
        })
    }

    /// Payloads stored and items delivered per second, over the span of the
    /// readings held and a reading taken now; None before the first reading.
    async fn rates(&self) -> meshrelay_store::Result<Option<(f64, f64, f64)>> {
        let now = self.read().await?;
        let oldest = self.readings.lock().expect("lock").front().copied();
        Ok(oldest.and_then(|o| {
            let secs = (now.at_ms - o.at_ms) as f64 / 1000.0;
            (secs >= 1.0).then(|| {
                (
                    (now.stored_total - o.stored_total).max(0) as f64 / secs,
                    now.delivered_total.saturating_sub(o.delivered_total) as f64 / secs,
                    secs,
                )
            })
        }))
    }
}

use meshrelay_protocol::clock::now_ms as unix_now_ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub node: String,
    pub version: String,
    pub uptime_secs: i64,
    pub database: DatabaseStats,
    pub payloads: PayloadStats,
    pub rates: Rates,
    /// Open WebSocket connections of local clients.
    pub connections: i64,
    /// Live subscriptions over them.
    pub subscriptions: i64,
    pub outbox: OutboxStats,
    /// Outbox items given up on (all peers).
    pub dead_letters: i64,
    pub blobs: BlobStats,
    /// The listeners' TLS certificates (none when they speak plain HTTP).
    pub certificates: Vec<CertificateStats>,
    /// The node's processes seen in the last minute (PROTOCOL.md 8.1): one
    /// on SQLite, each `meshrelay serve` sharing the database on PostgreSQL.
    /// `connections` and `subscriptions` above are this process's only.
    pub processes: Vec<ProcessStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessStats {
    /// `host:pid`, as job runs name it.
    pub instance: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Its last heartbeat (every 10 s), Unix seconds.
    pub last_seen: i64,
    /// Its open WebSocket connections and their subscriptions, as of then.
    pub connections: i64,
    pub subscriptions: i64,
    /// Peers it delivers to now (it holds their delivery lease).
    pub delivering_to: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertificateStats {
    /// `public` or `admin`.
    pub listener: String,
    /// The certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// Whole days until then (negative once expired); the dashboard warns under 14.
    pub days_left: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlobStats {
    /// `fs` or `s3`.
    pub storage: String,
    /// Blobs held, and their bytes.
    pub count: i64,
    pub bytes: i64,
    /// Blobs an operator removed (kept as tombstones).
    pub removed: i64,
    /// Blobs waiting to be fetched from peers.
    pub mirror_pending: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStats {
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PayloadStats {
    /// Rows held, hidden ones included.
    pub stored: i64,
    pub hidden: i64,
    /// Payloads stored (from clients or peers) in the last hour.
    pub received_last_hour: i64,
    pub received_last_day: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rates {
    /// Payloads stored per second over the last `window_secs`.
    pub ingest_per_sec: Option<f64>,
    /// Items delivered to peers per second over the same window.
    pub forward_per_sec: Option<f64>,
    pub window_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutboxStats {
    pub pending: i64,
    pub dead: i64,
    pub peers: Vec<PeerDepth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerDepth {
    pub node: String,
    pub pending: i64,
    pub dead: i64,
}

pub async fn gather(ctx: &AdminContext) -> AdminResult<Stats> {
    let store = &ctx.store;
    let now = unix_now();
    let stored_total = store.payloads_generation().await?;
    // Payloads since the newest sample at least `span` old; while the samples
    // do not reach back that far (a young node), counted from the table.
    let since = |span: i64| async move {
        Ok::<_, meshrelay_store::Error>(match store.sample_before(now - span).await? {
            Some(s) => (stored_total - s.stored_total).max(0),
            None => store.count_received_since(now - span).await?,
        })
    };
    let depth = store.outbox_depth_by_peer().await?;
    let rates = ctx.sampler.rates().await?;
    let (pending, dead) = depth
        .values()
        .fold((0, 0), |(p, d), x| (p + x.pending, d + x.dead));
    Ok(Stats {
        node: ctx.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: now - ctx.started_at,
        database: DatabaseStats {
            backend: match store.backend() {
                meshrelay_store::Backend::Sqlite => "sqlite",
                meshrelay_store::Backend::Postgres => "postgres",
            }
            .to_string(),
            size_bytes: store.database_size().await?,
        },
        payloads: PayloadStats {
            stored: store.count_payloads().await?,
            hidden: store.count_hidden().await?,
            received_last_hour: since(3600).await?,
            received_last_day: since(86_400).await?,
        },
        rates: Rates {
            ingest_per_sec: rates.map(|r| r.0),
            forward_per_sec: rates.map(|r| r.1),
            window_secs: rates.map(|r| r.2),
        },
        connections: ctx.live.connections(),
        subscriptions: ctx.live.subscriptions(),
        outbox: OutboxStats {
            pending,
            dead,
            peers: depth
                .into_iter()
                .map(|(node, d)| PeerDepth {
                    node,
                    pending: d.pending,
                    dead: d.dead,
                })
                .collect(),
        },
        dead_letters: dead,
        processes: {
            let leases = store.lease_counts().await?;
            store
                .instances(now - 60)
                .await?
                .into_iter()
                .map(|i| ProcessStats {
                    delivering_to: leases.get(&i.instance).copied().unwrap_or(0),
                    instance: i.instance,
                    started_at: i.started_at,
                    last_seen: i.last_seen,
                    connections: i.connections,
                    subscriptions: i.subscriptions,
                })
                .collect()
        },
        certificates: ctx
            .live
            .certificates()
            .into_iter()
            .map(|(listener, not_after)| CertificateStats {
                listener,
                not_after,
                days_left: (not_after - now).div_euclid(86_400),
            })
            .collect(),
        blobs: {
            let t = store.blob_totals().await?;
            BlobStats {
                storage: ctx.blobs.kind().to_string(),
                count: t.count,
                bytes: t.bytes,
                removed: t.removed,
                mirror_pending: t.fetches_pending,
            }
        },
    })
}

/// The last 24 hours of samples, for the charts: (at, ingest per minute,
/// outbox pending).
pub async fn series(store: &Store) -> AdminResult<Vec<(i64, f64, i64)>> {
    let samples = store.samples(unix_now() - 24 * 3600).await?;
    Ok(samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].at - w[0].at).max(1) as f64;
            let per_min = (w[1].stored_total - w[0].stored_total).max(0) as f64 * 60.0 / dt;
            (w[1].at, per_min, w[1].outbox_pending)
        })
        .collect())
}
