//! Weighted draws without replacement in O(log n) each: a Fenwick tree over
//! integer weights, built once per tier when the table compiles and copied by
//! a decision only when it draws a second time.
//!
//! Weights are integers so that every prefix sum is exact: a draw lands on the
//! same deployment however the sums were formed, which lets a plain linear
//! scan serve as the reference the tree is tested against.

/// Total weight of one tier stays below 2^63 for up to 2^23 members.
const WEIGHT_SCALE: f64 = (1u64 << 40) as f64;

/// Config weights (finite, > 0) as integers proportional to them: the largest
/// becomes 2^40, none falls below 1.
pub(crate) fn integer_weights(weights: impl Iterator<Item = f64> + Clone) -> Vec<u64> {
    let largest = weights.clone().fold(0.0, f64::max);
    weights
        .map(|w| ((w / largest * WEIGHT_SCALE).round() as u64).max(1))
        .collect()
}

/// A uniform integer in `[0, bound)` from a uniform 64-bit draw (the high half
/// of their product: no modulo bias worth naming for bounds below 2^63).
pub(crate) fn scaled_draw(draw: u64, bound: u64) -> u64 {
    ((u128::from(draw) * u128::from(bound)) >> 64) as u64
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WeightTree {
    /// 1-based Fenwick array: `tree[i]` sums the weights in `(i - lowbit(i), i]`.
    tree: Vec<u64>,
}

impl WeightTree {
    pub(crate) fn new(weights: &[u64]) -> Self {
        let mut tree = vec![0; weights.len() + 1];
        tree[1..].copy_from_slice(weights);
        for i in 1..tree.len() {
            let parent = i + lowbit(i);
            if parent < tree.len() {
                tree[parent] += tree[i];
            }
        }
        WeightTree { tree }
    }

    /// The sum of the weights of items `[0, end)`.
    pub(crate) fn prefix(&self, end: usize) -> u64 {
        let mut i = end;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= lowbit(i);
        }
        sum
    }

    /// Item `index`'s weight (0 once removed).
    pub(crate) fn weight(&self, index: usize) -> u64 {
        self.prefix(index + 1) - self.prefix(index)
    }

    /// Sets item `index`'s weight to 0, so no later draw lands on it.
    pub(crate) fn remove(&mut self, index: usize) {
        let weight = self.weight(index);
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] -= weight;
            i += lowbit(i);
        }
    }

    /// The item whose span of the cumulative weights holds `target`: the
    /// smallest `i` with `prefix(i + 1) > target`. `target` must be below the total.
    pub(crate) fn find(&self, target: u64) -> usize {
        let mut position = 0;
        let mut rest = target;
        let mut step = (self.tree.len() - 1).checked_ilog2().map_or(0, |b| 1 << b);
        while step > 0 {
            let next = position + step;
            if next < self.tree.len() && self.tree[next] <= rest {
                position = next;
                rest -= self.tree[next];
            }
            step >>= 1;
        }
        position
    }
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the first item whose running sum passes `target`.
    fn scan(weights: &[u64], target: u64) -> usize {
        let mut sum = 0;
        weights
            .iter()
            .position(|&w| {
                sum += w;
                sum > target
            })
            .unwrap()
    }

    #[test]
    fn finds_what_a_scan_finds_as_items_are_removed() {
        let mut weights: Vec<u64> = (0..37).map(|i| (i * 7919 % 13) + 1).collect();
        let mut tree = WeightTree::new(&weights);
        for removed in [5, 0, 36, 17, 18, 2] {
            let total: u64 = weights.iter().sum();
            assert_eq!(tree.prefix(weights.len()), total);
            for target in 0..total {
                assert_eq!(tree.find(target), scan(&weights, target), "target {target}");
            }
            tree.remove(removed);
            weights[removed] = 0;
            assert_eq!(tree.weight(removed), 0);
        }
    }

    #[test]
    fn integer_weights_keep_proportions() {
        let weights = integer_weights([1.0, 2.0, 0.5, 1e-30].into_iter());
        assert_eq!(weights[1], 1 << 40);
        assert_eq!(weights[0] * 2, weights[1]);
        assert_eq!(weights[2] * 4, weights[1]);
        assert_eq!(weights[3], 1, "a vanishing weight still counts");
    }

    #[test]
    fn scaled_draw_stays_below_its_bound() {
        assert_eq!(scaled_draw(u64::MAX, 10), 9);
        assert_eq!(scaled_draw(0, 10), 0);
        assert_eq!(scaled_draw(u64::MAX / 2, 10), 4);
    }
}
