//! Points: their ids, payloads and what is read back from the server.

use qdrant_client::qdrant::{
    point_id::PointIdOptions, vector_output::Vector, Condition, Filter, PointId, PointStruct,
    ScoredPoint,
};
use qdrant_client::Payload;
use sha2::{Digest, Sha256};

use crate::index::Hit;
use crate::store::ReviewVector;

pub(super) fn tenant(restaurant_id: &str) -> Filter {
    Filter::must([Condition::matches(
        "restaurant_id",
        restaurant_id.to_string(),
    )])
}

/// A UUID from the restaurant, the review and its content hash.
pub(super) fn point_id(restaurant_id: &str, v: &ReviewVector) -> String {
    let d = Sha256::digest(format!(
        "{restaurant_id}\0{}\0{}",
        v.review_id, v.content_hash
    ));
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub(super) fn point(id: &str, restaurant_id: &str, v: &ReviewVector) -> PointStruct {
    let payload = Payload::from([
        ("restaurant_id", restaurant_id.to_string().into()),
        ("review_id", v.review_id.clone().into()),
        ("content_hash", v.content_hash.clone().into()),
    ]);
    PointStruct::new(id.to_string(), v.vector.clone(), payload)
}

pub(super) fn uuid_of(id: Option<PointId>) -> Option<String> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(u) => Some(u),
        PointIdOptions::Num(_) => None,
    }
}

fn review_id(p: &ScoredPoint) -> Option<String> {
    p.payload.get("review_id")?.as_str().cloned()
}

pub(super) fn hit(p: ScoredPoint) -> Option<Hit> {
    Some(Hit {
        review_id: review_id(&p)?,
        score: p.score,
    })
}

pub(super) fn with_vector(p: ScoredPoint) -> Option<(String, Vec<f32>)> {
    let id = review_id(&p)?;
    match p.vectors?.get_vector()? {
        Vector::Dense(d) => Some((id, d.data)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_uuids_that_change_with_the_content() {
        let v = |h: &str| ReviewVector {
            review_id: "r1".into(),
            content_hash: h.into(),
            vector: vec![],
        };
        let a = point_id("x", &v("aaa"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(
            a,
            point_id("x", &v("aaa")),
            "a re-run upserts the same point"
        );
        assert_ne!(
            a,
            point_id("x", &v("bbb")),
            "an edited review is a new point"
        );
        assert_ne!(
            a,
            point_id("y", &v("aaa")),
            "the same text elsewhere is another point"
        );
    }
}
