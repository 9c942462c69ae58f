//! sink: where results go besides the work database. SQLite (`[job] database`) always holds
//! every result and its metrics; with `[sink] kind = "mariadb"` or `"postgres"` each restaurant's
//! current results and run summary are also written to the app's database, which the app reads.
//!
//! Nothing is lost when that database is down or refuses a write: storing the results in SQLite
//! queues the restaurant in the same transaction (`store::deliveries`), a delivery removes it
//! only after the app's database committed, and whatever is still queued goes at the start and
//! end of the next run, or with `palate sync`.

#[cfg(feature = "appdb")]
mod sql;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{lock, redact_url, Secret};
use crate::store::{Delivery, DeliveryReport, RestaurantResults, ResultSink, Store, StoreError};

/// The job file's `[sink]` section.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// `mysql://user:password@host:3306/db` or `postgres://user:password@host:5432/db`; it holds
    /// a password, so it is best set by `PALATE_SINK_URL`. Never logged or stored.
    pub url: Option<Secret>,
    /// Seconds a restaurant's delivery may take, connecting included (default 10).
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// The work database only.
    #[default]
    Sqlite,
    Mariadb,
    Postgres,
}

impl SinkConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != SinkKind::Sqlite && self.url.is_none() {
            return Err("sink.url (or PALATE_SINK_URL) is required with sink.kind = \"mariadb\" or \"postgres\"".into());
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.unwrap_or(10))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("app database {url}: {message}")]
    Db { url: String, message: String },
    #[error("sink.kind = {0:?} needs palate built with `--features appdb` (or `full`)")]
    NotBuilt(SinkKind),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Results to SQLite, then to the app's database.
pub struct Delivering {
    store: Store,
    app: AppDb,
    /// After a failed delivery, results are only queued until then: a database that is down
    /// costs one timeout, not one per restaurant.
    quiet_until: std::sync::Mutex<Option<Instant>>,
}

/// How long deliveries pause after one failed.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Restaurants read from the outbox per round trip.
const PAGE: usize = 200;

/// The sink `cfg` names over the work database `store`: the store itself, or the store with
/// delivery to the app's database.
pub async fn open(cfg: &SinkConfig, store: Store) -> Result<Arc<dyn ResultSink>, SinkError> {
    match cfg.kind {
        SinkKind::Sqlite => Ok(Arc::new(store)),
        _ => Ok(Arc::new(Delivering::open(cfg, store).await?)),
    }
}

impl Delivering {
    pub async fn open(cfg: &SinkConfig, store: Store) -> Result<Self, SinkError> {
        Ok(Self {
            store,
            app: AppDb::open(cfg)?,
            quiet_until: std::sync::Mutex::new(None),
        })
    }

    fn paused(&self) -> bool {
        lock(&self.quiet_until).is_some_and(|t| Instant::now() < t)
    }

    /// Delivers one queued restaurant; `Ok(false)` when the app's database refused (the
    /// restaurant stays queued with the reason).
    async fn deliver(&self, restaurant_id: &str) -> Result<bool, StoreError> {
        let Some(d) = self.store.delivery(restaurant_id.to_string()).await? else {
            return Ok(true);
        };
        match self.app.write(&d).await {
            Ok(()) => {
                self.store.delivered(d).await?;
                *lock(&self.quiet_until) = None;
                Ok(true)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(restaurant_id, error = %message, "app database: not delivered, kept queued");
                *lock(&self.quiet_until) = Some(Instant::now() + PAUSE_AFTER_FAILURE);
                self.store
                    .delivery_failed(restaurant_id.to_string(), message)
                    .await?;
                Ok(false)
            }
        }
    }
}

#[async_trait]
impl ResultSink for Delivering {
    async fn put_restaurant(
        &self,
        run_id: i64,
        results: Arc<RestaurantResults>,
    ) -> Result<(), StoreError> {
        let id = results.key.restaurant_id.clone();
        self.store
            .put_restaurant_for_delivery(run_id, results)
            .await?;
        if !self.paused() {
            self.deliver(&id).await?;
        }
        Ok(())
    }

    /// Delivers everything queued, oldest first, stopping at the first refusal.
    async fn deliver_pending(&self) -> Result<Option<DeliveryReport>, StoreError> {
        let mut report = DeliveryReport::default();
        'pages: loop {
            let ids = self.store.pending_deliveries(PAGE).await?;
            if ids.is_empty() {
                break;
            }
            for id in &ids {
                if !self.deliver(id).await? {
                    break 'pages;
                }
                report.delivered += 1;
            }
        }
        report.queued = self.store.pending_delivery_count().await?;
        Ok(Some(report))
    }
}

/// Whether the app's database `cfg` names answers: its server's version (`palate doctor`).
/// `None` for the sqlite sink, which has no app database.
pub async fn ping(cfg: &SinkConfig) -> Option<Result<String, SinkError>> {
    if cfg.kind == SinkKind::Sqlite {
        return None;
    }
    Some(match AppDb::open(cfg) {
        Ok(db) => db.version().await,
        Err(e) => Err(e),
    })
}

/// The app's database.
enum AppDb {
    #[cfg(feature = "appdb")]
    Sql(sql::SqlDb),
}

impl AppDb {
    #[cfg_attr(not(feature = "appdb"), allow(unused_variables))]
    fn open(cfg: &SinkConfig) -> Result<Self, SinkError> {
        let url = cfg.url.as_ref().map(|u| u.expose()).unwrap_or_default();
        let shown = redact_url(url);
        #[cfg(feature = "appdb")]
        {
            Ok(AppDb::Sql(sql::SqlDb::open(
                cfg.kind,
                url,
                shown,
                cfg.timeout(),
            )?))
        }
        #[cfg(not(feature = "appdb"))]
        {
            let _ = (url, shown, cfg.timeout());
            Err(SinkError::NotBuilt(cfg.kind))
        }
    }

    async fn version(&self) -> Result<String, SinkError> {
        #[cfg(feature = "appdb")]
        match self {
            AppDb::Sql(db) => db.version().await,
        }
        #[cfg(not(feature = "appdb"))]
        match *self {}
    }

    async fn write(&self, d: &Delivery) -> Result<(), SinkError> {
        #[cfg(feature = "appdb")]
        match self {
            AppDb::Sql(db) => db.write(d).await,
        }
        #[cfg(not(feature = "appdb"))]
        {
            let _ = d;
            match *self {}
        }
    }
}
