//! Where a router's buckets get their budget. By default each bucket refills
//! itself at its rate. Behind a cluster link (the service's, over Redis) they
//! are fed instead: they refill only by grants of budget drawn from buckets
//! the whole cluster shares, and hand back what they hold when the link
//! closes. While the cluster cannot be reached, each refills itself at a
//! share of its rate, up to that share of its capacity.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::{units, Bucket, Limit, LimitKind, State, UNITS};
use crate::clock::Nanos;

/// The part of every bucket's rate that a router's buckets refill by
/// themselves, shared by all of its limits.
#[derive(Debug)]
pub struct Refill {
    ppm: AtomicU32,
}

impl Default for Refill {
    fn default() -> Self {
        Refill {
            ppm: AtomicU32::new(Share::WHOLE.0),
        }
    }
}

/// A part of a rate, in millionths: 0 is fed by grants only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share(pub(super) u32);

impl Share {
    pub(super) const WHOLE: Share = Share(1_000_000);

    fn of(share: f64) -> Share {
        Share((share.clamp(0.0, 1.0) * f64::from(Share::WHOLE.0)).round() as u32)
    }

    /// What a bucket of `capacity` units may hold when it refills itself at
    /// this share: a host falling back to its share of a limit has no more
    /// burst than that share either. Grants may fill a fed bucket to capacity.
    pub(super) fn cap(self, capacity: i128) -> i128 {
        match self {
            Share(0) | Share::WHOLE => capacity,
            Share(ppm) => capacity * i128::from(ppm) / i128::from(Share::WHOLE.0),
        }
    }
}

impl Refill {
    pub(super) fn share(&self) -> Share {
        Share(self.ppm.load(Relaxed))
    }

    pub fn is_fed(&self) -> bool {
        self.share() == Share(0)
    }

    pub fn share_of_rate(&self) -> f64 {
        f64::from(self.share().0) / f64::from(Share::WHOLE.0)
    }

    /// From now on the buckets of `limits` refill themselves at `share` of
    /// their rate (0: only by grants). What they gained so far is counted at
    /// the old share first. A bucket that becomes fed drops what it holds
    /// (its debt stays): that budget was its own refill's, not the
    /// cluster's, and keeping it would admit it twice. Going from refilling
    /// by itself to a part of that, a bucket keeps no more than its part.
    pub fn set<'a>(&self, share: f64, limits: impl IntoIterator<Item = &'a Limit>, now: Nanos) {
        let (old, new) = (self.share(), Share::of(share));
        if old == new {
            return;
        }
        for limit in limits {
            let mut state = limit.lock();
            state.refill(now, old);
            for bucket in state.buckets_mut().into_iter().flatten() {
                if new == Share(0) {
                    bucket.level = bucket.level.min(0);
                } else if old == Share::WHOLE {
                    // A host that never reached the cluster has no more than its share either.
                    bucket.level = bucket.level.min(new.cap(bucket.capacity()));
                }
            }
        }
        self.ppm.store(new.0, Relaxed);
    }
}

/// One bucket's budget, as a cluster link reads it to decide what to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub kind: LimitKind,
    pub per_minute: u32,
    /// Requests or tokens it holds now; negative in debt.
    pub level: f64,
}

impl Limit {
    /// Its buckets' levels as of `now`, requests first.
    pub fn budgets(&self, now: Nanos) -> impl Iterator<Item = Budget> {
        let mut state = self.snapshot();
        state.refill(now, self.refill.share());
        kinds(&state).map(|(kind, bucket)| Budget {
            kind,
            per_minute: bucket.per_minute,
            level: bucket.level as f64 / UNITS as f64,
        })
    }

    /// Adds up to `amount` to the `kind` bucket, as far as its capacity
    /// allows, and returns how much it took: the rest goes back where it
    /// came from. 0 for a bucket this limit does not have.
    pub fn grant(&self, kind: LimitKind, amount: u32, now: Nanos) -> u32 {
        self.change(kind, now, |bucket| {
            let room = (bucket.capacity() - bucket.level).max(0) / UNITS;
            let taken = u32::try_from(room).unwrap_or(u32::MAX).min(amount);
            bucket.level += units(taken);
            taken
        })
    }

    /// Empties the `kind` bucket of the whole requests or tokens it holds
    /// and returns how many, for a link that hands them back to the cluster.
    pub fn take_back(&self, kind: LimitKind, now: Nanos) -> u32 {
        self.change(kind, now, |bucket| {
            let held = u32::try_from(bucket.level.max(0) / UNITS).unwrap_or(u32::MAX);
            bucket.level -= units(held);
            held
        })
    }

    fn change(&self, kind: LimitKind, now: Nanos, f: impl FnOnce(&mut Bucket) -> u32) -> u32 {
        let mut state = self.lock();
        state.refill(now, self.refill.share());
        let bucket = match kind {
            LimitKind::Requests => state.requests.as_mut(),
            LimitKind::Tokens => state.tokens.as_mut(),
        };
        bucket.map_or(0, f)
    }
}

fn kinds(state: &State) -> impl Iterator<Item = (LimitKind, Bucket)> {
    [
        (LimitKind::Requests, state.requests),
        (LimitKind::Tokens, state.tokens),
    ]
    .into_iter()
    .filter_map(|(kind, bucket)| Some((kind, bucket?)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ratelimit::{reserve, Denied, LimitSpec};

    const SECOND: Nanos = 1_000_000_000;

    fn fed_limit(rpm: u32) -> (Arc<Refill>, Limit) {
        let refill = Arc::new(Refill::default());
        refill.set(0.0, [], 0);
        let spec = LimitSpec {
            rpm: Some(rpm),
            tpm: None,
        };
        (Arc::clone(&refill), Limit::under(spec, &refill))
    }

    fn requests(limit: &Limit, now: Nanos) -> f64 {
        limit.budgets(now).next().expect("an rpm bucket").level
    }

    #[test]
    fn a_fed_limit_starts_empty_and_refills_only_by_grants() {
        let (_, limit) = fed_limit(60);
        assert_eq!(requests(&limit, 0), 0.0);
        assert_eq!(requests(&limit, 30 * SECOND), 0.0, "no refill of its own");
        assert!(reserve(&[&limit], 0, 30 * SECOND).is_err());
        assert_eq!(limit.grant(LimitKind::Requests, 2, 30 * SECOND), 2);
        assert!(reserve(&[&limit], 0, 30 * SECOND).is_ok());
        assert!(reserve(&[&limit], 0, 30 * SECOND).is_ok());
        // Empty again; its wait is told at the whole rate, 1 a second.
        match reserve(&[&limit], 0, 30 * SECOND) {
            Err(Denied::Exhausted { retry_at, .. }) => assert_eq!(retry_at, 31 * SECOND),
            other => panic!("expected exhausted, got {other:?}"),
        }
    }

    #[test]
    fn grants_stop_at_capacity_and_take_back_empties_the_bucket() {
        let (_, limit) = fed_limit(10);
        assert_eq!(limit.grant(LimitKind::Requests, 7, 0), 7);
        assert_eq!(limit.grant(LimitKind::Requests, 7, 0), 3, "room for 3 only");
        assert_eq!(limit.grant(LimitKind::Tokens, 7, 0), 0, "no tokens bucket");
        assert_eq!(limit.take_back(LimitKind::Requests, 0), 10);
        assert_eq!(requests(&limit, 0), 0.0);
        assert_eq!(limit.take_back(LimitKind::Requests, 0), 0);
    }

    #[test]
    fn becoming_fed_drops_what_a_bucket_held_but_keeps_its_debt() {
        let refill = Arc::new(Refill::default());
        let spec = LimitSpec {
            rpm: Some(60),
            tpm: Some(600),
        };
        let (full, indebted) = (Limit::under(spec, &refill), Limit::under(spec, &refill));
        let reservation = reserve(&[&indebted], 600, 0).unwrap();
        crate::ratelimit::settle(&[&indebted], reservation, 900, 0);
        refill.set(0.0, [&full, &indebted], 0);
        let levels = |limit: &Limit| limit.budgets(SECOND).map(|b| b.level).collect::<Vec<_>>();
        assert_eq!(levels(&full), [0.0, 0.0]);
        assert_eq!(levels(&indebted), [0.0, -300.0]);
    }

    #[test]
    fn a_share_refills_at_that_part_of_the_rate_up_to_that_part_of_the_capacity() {
        let (refill, limit) = fed_limit(60);
        refill.set(0.25, [&limit], 0);
        assert_eq!(requests(&limit, 4 * SECOND), 1.0, "a quarter of 1 a second");
        assert_eq!(requests(&limit, 600 * SECOND), 15.0, "a quarter of 60");
        // Budget granted before stays above the cap until it is used.
        refill.set(0.0, [&limit], 600 * SECOND);
        assert_eq!(limit.grant(LimitKind::Requests, 40, 600 * SECOND), 40);
        refill.set(0.25, [&limit], 600 * SECOND);
        assert_eq!(requests(&limit, 700 * SECOND), 40.0);
        // Empty, it waits at a quarter of the rate.
        assert_eq!(limit.take_back(LimitKind::Requests, 700 * SECOND), 40);
        match reserve(&[&limit], 0, 700 * SECOND) {
            Err(Denied::Exhausted { retry_at, .. }) => assert_eq!(retry_at, 704 * SECOND),
            other => panic!("expected exhausted, got {other:?}"),
        }
    }
}
