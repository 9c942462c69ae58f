//! The queries behind the results page (`palate report --results`): restaurants that have
//! results, page by page in id order, each with its newest valid result per kind (the
//! `current_results` view) or, for a kind with no valid result, its latest failure; and the texts
//! of the reviews a result cites.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{Db, StoreError};
use crate::domain::{ErrorClass, Kind, ResultStatus};

/// One restaurant's card as stored.
#[derive(Debug, Clone)]
pub struct CardRow {
    pub restaurant_id: String,
    /// `restaurants.review_count`; `None` when the restaurant row is gone (reviews re-ingested
    /// elsewhere, or results copied from another database).
    pub review_count: Option<usize>,
    /// At most one per kind; a kind never analysed is absent.
    pub results: Vec<CardResult>,
}

/// One kind's result on a card: the newest valid one, else the latest failure.
#[derive(Debug, Clone)]
pub struct CardResult {
    pub kind: Kind,
    pub status: ResultStatus,
    /// The stored result; `None` when failed (or when the stored JSON does not parse).
    pub result: Option<Value>,
    /// Why it failed; `None` when valid.
    pub error: Option<String>,
    /// The failure's class; `None` when valid or stored before classes existed.
    pub error_class: Option<ErrorClass>,
    pub created_at: String,
}

impl Db {
    /// How many restaurants have at least one result, valid or failed.
    pub fn card_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(DISTINCT restaurant_id) FROM results",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Up to `limit` restaurants with results after `after` (from the first when `None`), in id
    /// order, each with its results: a page pulls a bounded number, so memory does not grow with
    /// the catalogue.
    pub fn cards_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CardRow>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT d.restaurant_id, r.review_count
             FROM (SELECT DISTINCT restaurant_id FROM results
                   WHERE ?1 IS NULL OR restaurant_id > ?1) d
             LEFT JOIN restaurants r ON r.restaurant_id = d.restaurant_id
             ORDER BY d.restaurant_id LIMIT ?2",
        )?;
        let ids = q.query_map(params![after, limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        let ids: Vec<(String, Option<i64>)> = ids.collect::<Result<_, _>>()?;
        ids.into_iter()
            .map(|(restaurant_id, count)| {
                Ok(CardRow {
                    results: self.card_results(&restaurant_id)?,
                    review_count: count.map(|n| n.max(0) as usize),
                    restaurant_id,
                })
            })
            .collect()
    }

    /// A restaurant's newest valid result per kind, plus the latest failure of each kind that
    /// has no valid result at all.
    fn card_results(&self, restaurant_id: &str) -> Result<Vec<CardResult>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT kind, 'ok', result_json, NULL, NULL, created_at
             FROM current_results WHERE restaurant_id = ?1
             UNION ALL
             SELECT kind, status, NULL, error, error_class, max(created_at)
             FROM results f
             WHERE restaurant_id = ?1 AND status = 'failed' AND NOT EXISTS (
                 SELECT 1 FROM results o
                 WHERE o.restaurant_id = ?1 AND o.kind = f.kind AND o.status = 'ok')
             GROUP BY kind",
        )?;
        let rows = q.query_map([restaurant_id], |r| {
            let json: Option<String> = r.get(2)?;
            Ok(CardResult {
                kind: r.get(0)?,
                status: r.get(1)?,
                result: json.and_then(|j| serde_json::from_str(&j).ok()),
                error: r.get(3)?,
                error_class: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The texts of the given reviews of a restaurant, by review id; ids not found (or of
    /// another restaurant) are absent.
    pub fn review_texts(
        &self,
        restaurant_id: &str,
        review_ids: &[&str],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT text FROM reviews WHERE review_id = ?1 AND restaurant_id = ?2",
        )?;
        let mut texts = HashMap::new();
        for id in review_ids {
            if texts.contains_key(*id) {
                continue;
            }
            let text: Option<String> = q
                .query_row(params![id, restaurant_id], |r| r.get(0))
                .optional()?;
            if let Some(text) = text {
                texts.insert((*id).to_string(), text);
            }
        }
        Ok(texts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        db.conn
            .execute_batch(
                "INSERT INTO runs (job_name, command, model, started_at, status, config_json)
                 VALUES ('t', 'run', 'm', '2026-01-01T00:00:00Z', 'completed', '{}');
                 INSERT INTO restaurants VALUES ('a', 'h', 2, 'x');
                 INSERT INTO reviews VALUES ('a-1', 'a', 'good <soup>', NULL, NULL, NULL, 'c', 'f', 1, 'x');
                 INSERT INTO reviews VALUES ('b-1', 'b', 'other', NULL, NULL, NULL, 'c', 'f', 1, 'x');",
            )
            .unwrap();
        (dir, db)
    }

    fn put(db: &Db, id: &str, kind: &str, hash: &str, at: &str, json: Option<&str>) {
        let (status, error) = match json {
            Some(_) => ("ok", None),
            None => ("failed", Some(format!("failed at {at}"))),
        };
        db.conn
            .execute(
                "INSERT INTO results (restaurant_id, kind, input_hash, prompt_version, model, status,
                     result_json, error, error_class, attempts, run_id, created_at)
                 VALUES (?1, ?2, ?3, 'p', 'm', ?4, ?5, ?6, 'invalid_output', 1, 1, ?7)",
                params![id, kind, hash, status, json, error, at],
            )
            .unwrap();
    }

    #[test]
    fn a_card_has_the_newest_valid_result_else_the_latest_failure() {
        let (_dir, db) = db();
        put(
            &db,
            "a",
            "summary",
            "h1",
            "2026-01-01",
            Some(r#"{"summary":"old"}"#),
        );
        put(
            &db,
            "a",
            "summary",
            "h2",
            "2026-01-02",
            Some(r#"{"summary":"new"}"#),
        );
        put(&db, "a", "summary", "h3", "2026-01-03", None);
        put(&db, "a", "strengths", "h1", "2026-01-01", None);
        put(&db, "a", "strengths", "h2", "2026-01-02", None);
        put(&db, "b", "sentiment", "h1", "2026-01-01", None);
        assert_eq!(db.card_count().unwrap(), 2);
        let cards = db.cards_after(None, 10).unwrap();
        assert_eq!(cards.len(), 2);
        let a = &cards[0];
        assert_eq!((a.restaurant_id.as_str(), a.review_count), ("a", Some(2)));
        assert_eq!(a.results.len(), 2);
        let summary = a.results.iter().find(|r| r.kind == Kind::Summary).unwrap();
        assert_eq!(summary.status, ResultStatus::Ok);
        assert_eq!(summary.result.as_ref().unwrap()["summary"], "new");
        let strengths = a
            .results
            .iter()
            .find(|r| r.kind == Kind::Strengths)
            .unwrap();
        assert_eq!(strengths.status, ResultStatus::Failed);
        assert_eq!(strengths.error.as_deref(), Some("failed at 2026-01-02"));
        assert_eq!(strengths.error_class, Some(ErrorClass::InvalidOutput));
        assert_eq!(cards[1].review_count, None, "b has no restaurant row");
        let next = db.cards_after(Some("a"), 10).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].restaurant_id, "b");
    }

    #[test]
    fn review_texts_are_those_of_the_restaurant() {
        let (_dir, db) = db();
        let t = db.review_texts("a", &["a-1", "b-1", "zz", "a-1"]).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t["a-1"], "good <soup>");
    }
}
