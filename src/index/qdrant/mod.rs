//! The Qdrant backend: one point per embedded review in a cosine collection, with a keyword
//! tenant index on `restaurant_id`. Before a restaurant's search its points are brought in line
//! with the store: missing ones are upserted in batches, those of edited or removed reviews are
//! deleted. A point's id is derived from the restaurant, the review and its content hash, so a
//! re-run upserts the same points and an edited review gets a new one.
//!
//! The search itself is the server's: an exact filtered search for the restaurant's centroid.
//! With `mmr = "palate"` it returns every point of the restaurant with its vector and palate
//! ranks them as the embedded index does (the same selection); with `mmr = "server"` the
//! diverse picks come from Qdrant's MMR query.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use qdrant_client::qdrant::{
    vectors_config, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, KeywordIndexParamsBuilder, MmrBuilder, PointId,
    PointStruct, PointsIdsList, Query, QueryBatchPointsBuilder, QueryPointsBuilder,
    ScrollPointsBuilder, SearchParamsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::Qdrant;
use tokio::sync::OnceCell;

mod points;
use points::{hit, point, point_id, tenant, uuid_of, with_vector};

use super::{select_exact, Hit, IndexConfig, IndexError, MmrBy, Selection, VectorIndex};
use crate::domain::redact_url;
use crate::store::{ReviewVector, Store};

/// Point ids read per scroll page.
const SCROLL_PAGE: u32 = 1_000;

pub struct QdrantIndex {
    client: Qdrant,
    cfg: IndexConfig,
    /// The URL as it may be shown.
    shown: String,
    store: Store,
    model_id: String,
    /// The collection, once checked or created.
    collection: OnceCell<String>,
}

impl QdrantIndex {
    /// Connects and, when the store already holds vectors of `model_id`, checks the collection
    /// (creating it if missing) so that a wrong dimension stops the run before it starts.
    /// A client of `cfg`'s server, and the server's version (its health check).
    async fn client(cfg: &IndexConfig) -> Result<(Qdrant, String), IndexError> {
        let shown = redact_url(&cfg.url);
        let mut builder = Qdrant::from_url(&cfg.url)
            .timeout(std::time::Duration::from_secs(cfg.timeout_s))
            .connect_timeout(std::time::Duration::from_secs(cfg.timeout_s.min(10)))
            // The client's version check prints to stdout, which palate keeps for its output;
            // the server's version is logged below instead.
            .skip_compatibility_check();
        if let Some(k) = &cfg.api_key {
            builder = builder.api_key(k.expose().to_string());
        }
        let err = |e: qdrant_client::QdrantError| IndexError::Qdrant {
            url: shown.clone(),
            message: e.to_string(),
        };
        let client = builder.build().map_err(err)?;
        let health = client.health_check().await.map_err(err)?;
        Ok((client, health.version))
    }

    /// The server's version, if it answers (`palate doctor`).
    pub async fn ping(cfg: &IndexConfig) -> Result<String, IndexError> {
        Ok(Self::client(cfg).await?.1)
    }

    pub async fn connect(
        cfg: &IndexConfig,
        store: Store,
        model_id: &str,
    ) -> Result<Self, IndexError> {
        let shown = redact_url(&cfg.url);
        let (client, version) = Self::client(cfg).await?;
        tracing::info!(url = %shown, version = %version, "qdrant server");
        let index = Self {
            client,
            cfg: cfg.clone(),
            shown,
            store,
            model_id: model_id.to_string(),
            collection: OnceCell::new(),
        };
        if let Some(dim) = index.store.embedding_dim(model_id.to_string()).await? {
            index.collection(dim).await?;
        }
        Ok(index)
    }

    fn error(&self, e: qdrant_client::QdrantError) -> IndexError {
        IndexError::Qdrant {
            url: self.shown.clone(),
            message: e.to_string(),
        }
    }

    /// The collection for `dim`-dimensional vectors: created with its tenant index if missing,
    /// refused if it holds vectors of another dimension.
    async fn collection(&self, dim: usize) -> Result<&str, IndexError> {
        let name = self
            .collection
            .get_or_try_init(|| async {
                let name = self.cfg.collection_for(&self.model_id, dim);
                if !self
                    .client
                    .collection_exists(&name)
                    .await
                    .map_err(|e| self.error(e))?
                {
                    self.create(&name, dim).await?;
                }
                let found = self.dimension(&name).await?;
                if found != dim as u64 {
                    return Err(IndexError::Dimension {
                        collection: name,
                        model: self.model_id.clone(),
                        found,
                        expected: dim as u64,
                    });
                }
                Ok(name)
            })
            .await?;
        Ok(name)
    }

    async fn create(&self, name: &str, dim: usize) -> Result<(), IndexError> {
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(name)
                    .vectors_config(VectorParamsBuilder::new(dim as u64, Distance::Cosine)),
            )
            .await;
        // Another worker may have created it a moment ago: that is the collection we want.
        if let Err(e) = created {
            if !self
                .client
                .collection_exists(name)
                .await
                .map_err(|e| self.error(e))?
            {
                return Err(self.error(e));
            }
        }
        // Points of one restaurant stored together, and searches filtered by it served from
        // them (Qdrant's multitenancy index).
        self.client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(name, "restaurant_id", FieldType::Keyword)
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                    .wait(true),
            )
            .await
            .map_err(|e| self.error(e))?;
        tracing::info!(collection = name, dim, "created qdrant collection");
        Ok(())
    }

    async fn dimension(&self, name: &str) -> Result<u64, IndexError> {
        let info = self
            .client
            .collection_info(name)
            .await
            .map_err(|e| self.error(e))?;
        let params = (info.result)
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match params {
            Some(vectors_config::Config::Params(p)) => Ok(p.size),
            _ => Err(IndexError::Qdrant {
                url: self.shown.clone(),
                message: format!("collection {name} has no single unnamed vector"),
            }),
        }
    }

    /// Brings the restaurant's points in line with its embedded reviews.
    async fn sync(
        &self,
        collection: &str,
        restaurant_id: &str,
        items: &[ReviewVector],
    ) -> Result<(), IndexError> {
        let present = self.point_ids(collection, restaurant_id).await?;
        let wanted: HashMap<String, &ReviewVector> = items
            .iter()
            .map(|v| (point_id(restaurant_id, v), v))
            .collect();
        let missing: Vec<PointStruct> = (wanted.iter())
            .filter(|(id, _)| !present.contains(*id))
            .map(|(id, v)| point(id, restaurant_id, v))
            .collect();
        let stale: Vec<PointId> = (present.iter())
            .filter(|id| !wanted.contains_key(*id))
            .map(|id| PointId::from(id.clone()))
            .collect();
        if !missing.is_empty() {
            let n = missing.len();
            self.client
                .upsert_points_chunked(
                    UpsertPointsBuilder::new(collection, missing).wait(true),
                    self.cfg.upsert_batch,
                )
                .await
                .map_err(|e| self.error(e))?;
            tracing::debug!(restaurant_id, upserted = n, "qdrant points");
        }
        if !stale.is_empty() {
            let n = stale.len();
            self.client
                .delete_points(
                    DeletePointsBuilder::new(collection)
                        .points(PointsIdsList { ids: stale })
                        .wait(true),
                )
                .await
                .map_err(|e| self.error(e))?;
            tracing::debug!(restaurant_id, deleted = n, "qdrant points");
        }
        Ok(())
    }

    /// The ids of the restaurant's points, page by page.
    async fn point_ids(
        &self,
        collection: &str,
        restaurant_id: &str,
    ) -> Result<HashSet<String>, IndexError> {
        let mut ids = HashSet::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut q = ScrollPointsBuilder::new(collection)
                .filter(tenant(restaurant_id))
                .limit(SCROLL_PAGE)
                .with_payload(false)
                .with_vectors(false);
            if let Some(o) = offset.take() {
                q = q.offset(o);
            }
            let page = self.client.scroll(q).await.map_err(|e| self.error(e))?;
            ids.extend(page.result.into_iter().filter_map(|p| uuid_of(p.id)));
            match page.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(ids),
            }
        }
    }

    /// The server's exact filtered search for `query` over the restaurant's `n` points.
    fn search(
        &self,
        collection: &str,
        restaurant_id: &str,
        query: Query,
        n: usize,
    ) -> QueryPointsBuilder {
        QueryPointsBuilder::new(collection)
            .query(query)
            .filter(tenant(restaurant_id))
            .params(SearchParamsBuilder::default().exact(true))
            .limit(n as u64)
            .with_payload(true)
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn select(
        &self,
        restaurant_id: &str,
        k: usize,
        diverse: usize,
        lambda: f32,
    ) -> Result<Selection, IndexError> {
        let items = (self.store)
            .restaurant_vectors(restaurant_id.to_string(), self.model_id.clone())
            .await?;
        let Some(dim) = items.first().map(|v| v.vector.len()) else {
            return Ok(Selection::default());
        };
        let collection = self.collection(dim).await?;
        self.sync(collection, restaurant_id, &items).await?;
        let Some(c) = super::centroid_of(items.iter().map(|v| v.vector.as_slice())) else {
            return Ok(Selection::default());
        };
        let n = items.len();
        let q = Search {
            collection,
            restaurant_id,
            centroid: c,
            n,
        };
        match self.cfg.mmr {
            MmrBy::Palate => self.ranked_by_palate(q, k, diverse, lambda).await,
            MmrBy::Server => self.server_mmr(q, k, diverse, lambda).await,
        }
    }
}

/// One restaurant's search: its `n` points and their centroid.
struct Search<'a> {
    collection: &'a str,
    restaurant_id: &'a str,
    centroid: Vec<f32>,
    n: usize,
}

impl QdrantIndex {
    /// Every point of the restaurant from the server's exact filtered search, with its vector,
    /// ranked and diversified as the embedded index does.
    async fn ranked_by_palate(
        &self,
        q: Search<'_>,
        k: usize,
        diverse: usize,
        lambda: f32,
    ) -> Result<Selection, IndexError> {
        let query = self.search(
            q.collection,
            q.restaurant_id,
            Query::new_nearest(q.centroid),
            q.n,
        );
        let found = self
            .client
            .query(query.with_vectors(true))
            .await
            .map_err(|e| self.error(e))?;
        let found: Vec<(String, Vec<f32>)> =
            found.result.into_iter().filter_map(with_vector).collect();
        Ok(select_exact(&found, k, diverse, lambda))
    }

    /// The K nearest, then Qdrant's MMR query (diversity = 1 − lambda over all the
    /// restaurant's points); its picks that are not among the K are the diverse ones.
    async fn server_mmr(
        &self,
        q: Search<'_>,
        k: usize,
        diverse: usize,
        lambda: f32,
    ) -> Result<Selection, IndexError> {
        let mmr = MmrBuilder::with_params(1.0 - lambda, q.n as u32);
        let (c, r) = (q.collection, q.restaurant_id);
        let batch = vec![
            self.search(c, r, Query::new_nearest(q.centroid.clone()), k)
                .build(),
            self.search(
                c,
                r,
                Query::new_nearest_with_mmr(q.centroid, mmr),
                k + diverse,
            )
            .build(),
        ];
        let mut answers = self
            .client
            .query_batch(QueryBatchPointsBuilder::new(c, batch))
            .await
            .map_err(|e| self.error(e))?
            .result
            .into_iter()
            .map(|r| r.result.into_iter().filter_map(hit).collect::<Vec<Hit>>());
        let representative = answers.next().unwrap_or_default();
        let picked: HashSet<String> = representative.iter().map(|h| h.review_id.clone()).collect();
        let diverse = if q.n <= k {
            Vec::new()
        } else {
            (answers.next().unwrap_or_default().into_iter())
                .filter(|h| !picked.contains(&h.review_id))
                .take(diverse)
                .collect()
        };
        Ok(Selection {
            representative,
            diverse,
        })
    }
}
