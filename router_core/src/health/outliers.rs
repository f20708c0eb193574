//! Latency-outlier ejection across the deployments of one group, and the gate
//! that lets the router run it at most once per interval from `record`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::policy::{duration_nanos, HealthPolicy};
use super::{Admission, Health};
use crate::clock::Nanos;

/// Ejects, until `now + eject_secs`, the peers whose tail latency exceeds
/// `factor` times the median of the judged peers' tails, slowest first.
///
/// Only peers able to serve are judged, and compared with each other: those
/// in rotation (no open circuit, cool-down, ejection or rejected credentials)
/// whose `has_budget` is set (the caller's view of their rate-limit budgets),
/// with `min_samples` fresh samples. Nothing happens with fewer than
/// `min_peers` of them. And, as Envoy's panic threshold has it, at least half
/// of `peers` stay able to serve: every peer that cannot serve now, for any
/// reason, counts against the half that may be out, so ejection never takes
/// away the last deployments a group has left. A group that is slow
/// everywhere is slow, not faulty. Returns the indices of the newly ejected.
pub fn eject_outliers(
    peers: &[&Health],
    has_budget: &[bool],
    policy: &HealthPolicy,
    now: Nanos,
) -> Vec<usize> {
    let rules = &policy.outliers;
    if !rules.enabled {
        return Vec::new();
    }
    let serving: Vec<bool> = peers
        .iter()
        .zip(has_budget)
        .map(|(peer, &budget)| budget && !matches!(peer.admit(now), Admission::Unavailable { .. }))
        .collect();
    let mut judged: Vec<(usize, f64)> = peers
        .iter()
        .enumerate()
        .filter(|&(i, peer)| serving[i] && peer.latency().samples() >= u64::from(rules.min_samples))
        .filter_map(|(i, peer)| Some((i, peer.tail_latency_ms()?)))
        .collect();
    if judged.len() < rules.min_peers as usize {
        return Vec::new();
    }
    judged.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threshold = rules.factor * median(&judged);
    let out = serving.iter().filter(|&&able| !able).count();
    let ejected: Vec<usize> = judged
        .iter()
        .take_while(|&&(_, tail)| tail > threshold)
        .take((peers.len() / 2).saturating_sub(out))
        .map(|&(i, _)| i)
        .collect();
    let until = now.saturating_add(rules.eject_for());
    for &i in &ejected {
        peers[i].eject(until);
    }
    ejected
}

/// The median tail of `judged`, which is sorted and not empty.
fn median(judged: &[(usize, f64)]) -> f64 {
    let mid = judged.len() / 2;
    if judged.len() % 2 == 1 {
        judged[mid].1
    } else {
        (judged[mid - 1].1 + judged[mid].1) / 2.0
    }
}

/// Lets one caller through per interval, whichever thread gets there first;
/// the rest pay one atomic load.
#[derive(Debug, Default)]
pub struct RateGate {
    /// The earliest time the gate opens again.
    next: AtomicU64,
}

impl RateGate {
    pub fn new() -> Self {
        RateGate::default()
    }

    pub fn try_pass(&self, now: Nanos, interval: Duration) -> bool {
        let next = self.next.load(Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(duration_nanos(interval)),
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Admission, OutcomeClass, UnavailableReason};

    const SEC: Nanos = 1_000_000_000;

    /// A deployment with `samples` successes at `latency_ms` each.
    fn peer(latency_ms: f64, samples: u32) -> Health {
        let health = Health::new(HealthPolicy::default());
        for _ in 0..samples {
            health.on_outcome(OutcomeClass::Ok, latency_ms, None, None, 0);
        }
        health
    }

    fn budgets(peers: &[&Health]) -> Vec<bool> {
        vec![true; peers.len()]
    }

    fn eject(peers: &[Health]) -> Vec<usize> {
        let refs: Vec<&Health> = peers.iter().collect();
        eject_outliers(
            &refs,
            &[true; 8][..refs.len()],
            &HealthPolicy::default(),
            SEC,
        )
    }

    #[test]
    fn one_slow_peer_among_four_is_ejected() {
        let peers = [
            peer(100.0, 20),
            peer(110.0, 20),
            peer(400.0, 20),
            peer(90.0, 20),
        ];
        assert_eq!(eject(&peers), [2]);
        assert_eq!(
            peers[2].admit(SEC),
            Admission::Unavailable {
                until: 31 * SEC,
                reason: UnavailableReason::Ejected
            }
        );
        assert_eq!(peers[0].admit(SEC), Admission::Available);
        assert_eq!(peers[2].admit(31 * SEC), Admission::Available);
    }

    #[test]
    fn an_ejected_peer_must_earn_fresh_samples_before_it_is_judged_again() {
        let peers = [peer(100.0, 20), peer(100.0, 20), peer(400.0, 20)];
        assert_eq!(eject(&peers), [2]);
        for _ in 0..19 {
            peers[2].on_outcome(OutcomeClass::Ok, 400.0, None, None, SEC);
        }
        let refs: Vec<&Health> = peers.iter().collect();
        let policy = HealthPolicy::default();
        assert!(eject_outliers(&refs, &budgets(&refs), &policy, 40 * SEC).is_empty());
        peers[2].on_outcome(OutcomeClass::Ok, 400.0, None, None, SEC);
        assert_eq!(
            eject_outliers(&refs, &budgets(&refs), &policy, 40 * SEC),
            [2]
        );
    }

    #[test]
    fn no_ejection_below_min_samples_or_min_peers() {
        let few_samples = [peer(100.0, 20), peer(100.0, 20), peer(400.0, 19)];
        assert!(eject(&few_samples).is_empty());
        let few_peers = [peer(100.0, 20), peer(400.0, 20)];
        assert!(eject(&few_peers).is_empty());
        // The third peer has too few samples, so only two are judged.
        let two_judged = [peer(100.0, 20), peer(400.0, 20), peer(100.0, 3)];
        assert!(eject(&two_judged).is_empty());
    }

    #[test]
    fn never_more_than_half_the_peers_are_out() {
        // Within one call fewer than half the judged peers can sit above
        // factor × median, so the cap binds through earlier ejections.
        let peers: Vec<Health> = (0..6).map(|_| peer(100.0, 20)).collect();
        let refs: Vec<&Health> = peers.iter().collect();
        let policy = HealthPolicy::default();
        for (slow, at) in [(5, 1), (4, 2), (3, 3)] {
            for _ in 0..20 {
                peers[slow].on_outcome(OutcomeClass::Ok, 2_000.0, None, None, at * SEC);
            }
            assert_eq!(
                eject_outliers(&refs, &budgets(&refs), &policy, at * SEC),
                [slow]
            );
        }
        for _ in 0..20 {
            peers[2].on_outcome(OutcomeClass::Ok, 2_000.0, None, None, 4 * SEC);
        }
        assert!(eject_outliers(&refs, &budgets(&refs), &policy, 4 * SEC).is_empty());
        // Once the first ejection ends there is room again.
        assert_eq!(
            eject_outliers(&refs, &budgets(&refs), &policy, 31 * SEC),
            [2]
        );
    }

    #[test]
    fn peers_that_cannot_serve_are_not_the_median_and_count_as_out() {
        // Two fast peers out of budget and a healthy one 40 ms slower: compared only with
        // itself it is no outlier, and with two of three out none more may go.
        let peers = [peer(10.0, 20), peer(10.0, 20), peer(50.0, 20)];
        let refs: Vec<&Health> = peers.iter().collect();
        let policy = HealthPolicy::default();
        assert!(eject_outliers(&refs, &[false, false, true], &policy, SEC).is_empty());
        // The same when the fast ones are cooling down after a 429, not out of budget.
        for fast in &peers[..2] {
            fast.on_outcome(
                OutcomeClass::RateLimited,
                5.0,
                None,
                Some(Duration::from_secs(10)),
                SEC,
            );
        }
        assert!(eject_outliers(&refs, &budgets(&refs), &policy, SEC).is_empty());
        assert_eq!(peers[2].admit(SEC), Admission::Available);
        // Four peers, one of them unable to serve: one slow one may still go (two stay).
        let four = [
            peer(100.0, 20),
            peer(100.0, 20),
            peer(100.0, 20),
            peer(400.0, 20),
        ];
        let refs: Vec<&Health> = four.iter().collect();
        assert_eq!(
            eject_outliers(&refs, &[false, true, true, true], &policy, SEC),
            [3]
        );
    }

    #[test]
    fn disabled_ejection_does_nothing() {
        let peers = [peer(100.0, 20), peer(100.0, 20), peer(400.0, 20)];
        let refs: Vec<&Health> = peers.iter().collect();
        let mut policy = HealthPolicy::default();
        policy.outliers.enabled = false;
        assert!(eject_outliers(&refs, &budgets(&refs), &policy, SEC).is_empty());
    }

    #[test]
    fn rate_gate_passes_once_per_interval() {
        let gate = RateGate::new();
        let second = Duration::from_secs(1);
        assert!(gate.try_pass(0, second));
        assert!(!gate.try_pass(SEC - 1, second));
        assert!(gate.try_pass(SEC, second));
        assert!(!gate.try_pass(SEC, second));
    }
}
