//! Length-based batching of per-review work: reviews are packed into as few requests as a review
//! count limit and a token limit allow, longest first into the first batch with room
//! (first-fit decreasing), so batches come out even. A review over the token limit on its own
//! gets a batch to itself.

use super::BatchLimits;

/// Packs items of the given token sizes; returns each batch's item indices, in index order.
pub fn pack(sizes: &[u64], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut batches: Vec<(u64, Vec<usize>)> = Vec::new();
    for i in order {
        let fits = batches.iter_mut().find(|(tokens, items)| {
            items.len() < limits.reviews.max(1) && tokens + sizes[i] <= limits.tokens
        });
        match fits {
            Some((tokens, items)) => {
                *tokens += sizes[i];
                items.push(i);
            }
            None => batches.push((sizes[i], vec![i])),
        }
    }
    let mut out: Vec<Vec<usize>> = batches
        .into_iter()
        .map(|(_, mut items)| {
            items.sort_unstable();
            items
        })
        .collect();
    out.sort_by_key(|b| b.first().copied());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(reviews: usize, tokens: u64) -> BatchLimits {
        BatchLimits { reviews, tokens }
    }

    #[test]
    fn every_item_lands_in_exactly_one_batch_within_both_limits() {
        let sizes: Vec<u64> = (0..50).map(|i| 20 + (i * 37 % 200)).collect();
        let b = pack(&sizes, limits(8, 600));
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        for batch in &b {
            assert!(batch.len() <= 8);
            assert!(batch.iter().map(|&i| sizes[i]).sum::<u64>() <= 600);
        }
    }

    #[test]
    fn small_selections_stay_one_batch_and_oversized_items_go_alone() {
        assert_eq!(pack(&[10, 20, 30], limits(16, 2048)), vec![vec![0, 1, 2]]);
        assert_eq!(
            pack(&[5000, 10, 10], limits(16, 100)),
            vec![vec![0], vec![1, 2]]
        );
        assert_eq!(pack(&[10; 5], limits(2, 1000)).len(), 3);
        assert!(pack(&[], limits(2, 10)).is_empty());
    }
}
