//! Reviews, restaurants and the embedding cache; [`IngestWriter`] (in `writer`), through which
//! ingest stores a file's rows.

use rusqlite::{params, OptionalExtension};

use super::{Db, Store, StoreError};
use crate::domain::{now, StoredReview};

mod writer;

pub use writer::IngestWriter;

/// What storing one valid row did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    /// Same id, same text: nothing changed (re-ingesting a file is a no-op).
    Unchanged,
    /// Same id, new text or fields: the review was edited.
    Updated,
    /// The id already belongs to another restaurant: the row is rejected.
    OtherRestaurant(String),
}

/// A restaurant as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct RestaurantRow {
    pub restaurant_id: String,
    /// sha256 over its (review_id, content_hash) pairs, sorted (`restaurants.input_hash`): changes
    /// whenever a review is added, edited or removed.
    pub reviews_hash: String,
    pub review_count: usize,
}

fn restaurant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RestaurantRow> {
    Ok(RestaurantRow {
        restaurant_id: r.get(0)?,
        reviews_hash: r.get(1)?,
        review_count: r.get::<_, i64>(2)? as usize,
    })
}

impl Db {
    /// Up to `limit` restaurants after `after` in id order: runs pull the catalogue page by
    /// page, so memory does not grow with it.
    pub fn restaurants_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RestaurantRow>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT restaurant_id, input_hash, review_count FROM restaurants
             WHERE restaurant_id > ?1 ORDER BY restaurant_id LIMIT ?2",
        )?;
        let rows = q.query_map(params![after, limit as i64], restaurant_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn restaurant_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM restaurants", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn restaurant(&self, id: &str) -> Result<Option<RestaurantRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT restaurant_id, input_hash, review_count FROM restaurants WHERE restaurant_id = ?1",
                [id],
                restaurant_row,
            )
            .optional()?)
    }

    /// A restaurant's review ids, in order, and the characters of all its texts: what an
    /// analysis needs of every review, without holding every text in memory.
    pub fn restaurant_review_ids(&self, id: &str) -> Result<(Vec<String>, u64), StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT review_id, length(text) FROM reviews WHERE restaurant_id = ?1 ORDER BY review_id",
        )?;
        let mut chars = 0u64;
        let ids = q.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let ids = ids
            .map(|row| row.map(|(id, n)| (id, chars += n.max(0) as u64).0))
            .collect::<Result<_, _>>()?;
        Ok((ids, chars))
    }

    /// The reviews of `ids` (of one restaurant), in review-id order.
    pub fn reviews_by_ids(
        &self,
        id: &str,
        ids: &[String],
    ) -> Result<Vec<StoredReview>, StoreError> {
        let wanted = serde_json::to_string(ids).unwrap_or_default();
        let mut q = self.conn.prepare_cached(
            "SELECT review_id, text, content_hash, lang, rating FROM reviews
             WHERE restaurant_id = ?1 AND review_id IN (SELECT value FROM json_each(?2))
             ORDER BY review_id",
        )?;
        let rows = q.query_map(rusqlite::params![id, wanted], stored_review)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn restaurant_reviews(&self, id: &str) -> Result<Vec<StoredReview>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT review_id, text, content_hash, lang, rating FROM reviews
             WHERE restaurant_id = ?1 ORDER BY review_id",
        )?;
        let rows = q.query_map([id], stored_review)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` distinct (content hash, text) pairs that have no embedding for `model_id`
    /// yet, of one restaurant or (`None`) of all.
    /// Up to `limit` texts (one per content hash, in hash order, after `after`) that have no
    /// vector for `model_id`. Paging by `after` reads each review once over a whole catalogue,
    /// rather than rescanning the embedded ones for every page.
    pub fn missing_embeddings(
        &self,
        model_id: &str,
        restaurant_id: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT r.content_hash, MIN(r.text) FROM reviews r
             WHERE r.content_hash > ?3 AND (?2 IS NULL OR r.restaurant_id = ?2)
               AND NOT EXISTS (SELECT 1 FROM embeddings e
                               WHERE e.content_hash = r.content_hash AND e.model_id = ?1)
             GROUP BY r.content_hash ORDER BY r.content_hash LIMIT ?4",
        )?;
        let rows = q.query_map(params![model_id, restaurant_id, after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_embeddings(
        &mut self,
        model_id: &str,
        items: &[(String, Vec<f32>)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut q = tx.prepare_cached(
                "INSERT OR REPLACE INTO embeddings (content_hash, model_id, dim, vector, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let at = now();
            for (hash, v) in items {
                q.execute(params![hash, model_id, v.len() as i64, to_blob(v), at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The restaurant's embedded reviews for `model_id`, in review-id order (reviews not yet
    /// embedded are left out).
    pub fn restaurant_vectors(
        &self,
        restaurant_id: &str,
        model_id: &str,
    ) -> Result<Vec<ReviewVector>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT r.review_id, r.content_hash, e.vector FROM reviews r
             JOIN embeddings e ON e.content_hash = r.content_hash AND e.model_id = ?2
             WHERE r.restaurant_id = ?1 ORDER BY r.review_id",
        )?;
        let rows = q.query_map(params![restaurant_id, model_id], |r| {
            Ok(ReviewVector {
                review_id: r.get(0)?,
                content_hash: r.get(1)?,
                vector: from_blob(r.get_ref(2)?.as_blob()?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The dimension of `model_id`'s vectors, if any are stored.
    pub fn embedding_dim(&self, model_id: &str) -> Result<Option<usize>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT dim FROM embeddings WHERE model_id = ?1 LIMIT 1")?;
        let mut rows = q.query(params![model_id])?;
        Ok(match rows.next()? {
            Some(r) => Some(r.get::<_, i64>(0)? as usize),
            None => None,
        })
    }
}

/// One embedded review of a restaurant.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewVector {
    pub review_id: String,
    pub content_hash: String,
    pub vector: Vec<f32>,
}

/// The `(review id, vector)` pair the exact search works on.
impl From<ReviewVector> for (String, Vec<f32>) {
    fn from(v: ReviewVector) -> Self {
        (v.review_id, v.vector)
    }
}

/// The same queries from async code, run on the store thread.
impl Store {
    pub async fn restaurants_after(
        &self,
        after: String,
        limit: usize,
    ) -> Result<Vec<RestaurantRow>, StoreError> {
        self.call(move |db| db.restaurants_after(&after, limit))
            .await
    }

    pub async fn restaurant_count(&self) -> Result<u64, StoreError> {
        self.call(|db| db.restaurant_count()).await
    }

    pub async fn restaurant(&self, id: String) -> Result<Option<RestaurantRow>, StoreError> {
        self.call(move |db| db.restaurant(&id)).await
    }

    pub async fn restaurant_review_ids(
        &self,
        id: String,
    ) -> Result<(Vec<String>, u64), StoreError> {
        self.call(move |db| db.restaurant_review_ids(&id)).await
    }

    pub async fn reviews_by_ids(
        &self,
        id: String,
        ids: Vec<String>,
    ) -> Result<Vec<StoredReview>, StoreError> {
        self.call(move |db| db.reviews_by_ids(&id, &ids)).await
    }

    pub async fn restaurant_reviews(&self, id: String) -> Result<Vec<StoredReview>, StoreError> {
        self.call(move |db| db.restaurant_reviews(&id)).await
    }

    pub async fn missing_embeddings(
        &self,
        model_id: String,
        restaurant_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.missing_embeddings_after(model_id, restaurant_id, String::new(), limit)
            .await
    }

    pub async fn missing_embeddings_after(
        &self,
        model_id: String,
        restaurant_id: Option<String>,
        after: String,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.call(move |db| {
            db.missing_embeddings(&model_id, restaurant_id.as_deref(), &after, limit)
        })
        .await
    }

    pub async fn put_embeddings(
        &self,
        model_id: String,
        items: Vec<(String, Vec<f32>)>,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.put_embeddings(&model_id, &items))
            .await
    }

    pub async fn restaurant_vectors(
        &self,
        restaurant_id: String,
        model_id: String,
    ) -> Result<Vec<ReviewVector>, StoreError> {
        self.call(move |db| db.restaurant_vectors(&restaurant_id, &model_id))
            .await
    }

    pub async fn embedding_dim(&self, model_id: String) -> Result<Option<usize>, StoreError> {
        self.call(move |db| db.embedding_dim(&model_id)).await
    }
}

/// A review row selected as `review_id, text, content_hash, lang, rating`.
fn stored_review(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReview> {
    Ok(StoredReview {
        review_id: r.get(0)?,
        text: r.get(1)?,
        content_hash: r.get(2)?,
        lang: r.get(3)?,
        rating: r.get(4)?,
    })
}

pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_analysis_reads_every_id_but_only_the_texts_it_shows() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("t.db")).unwrap();
        let mut w = db.ingest_writer().unwrap();
        for i in 0..300 {
            let text = format!("review {i:03} {}", "x".repeat(1000));
            let r = crate::domain::Review {
                restaurant_id: "big".into(),
                review_id: format!("v{i:03}"),
                content_hash: crate::domain::sha256_hex(text.as_bytes()),
                text,
                rating: None,
                created_at: None,
                lang: None,
            };
            w.upsert(&r, "t", i + 1).unwrap();
        }
        w.finish().unwrap();
        let (ids, chars) = db.restaurant_review_ids("big").unwrap();
        assert_eq!(ids.len(), 300);
        assert_eq!(chars, 300 * 1011);
        let wanted = vec!["v007".to_string(), "v250".into(), "nope".into()];
        let got = db.reviews_by_ids("big", &wanted).unwrap();
        let got: Vec<&str> = got.iter().map(|r| r.review_id.as_str()).collect();
        assert_eq!(got, ["v007", "v250"]);
        assert!(db.reviews_by_ids("other", &wanted).unwrap().is_empty());
    }

    #[test]
    fn blob_round_trip_is_exact() {
        let v = vec![0.0f32, -1.5, 3.25e-7, f32::MAX];
        assert_eq!(from_blob(&to_blob(&v)), v);
    }
}
