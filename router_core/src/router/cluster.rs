//! What a cluster link (the service's, over Redis) reads from a router and
//! feeds into it: the budget of every rate limit, grants of budget drawn
//! from the cluster's buckets, and news of deployments' health between
//! hosts. The link runs off the request path; none of this is on it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use crate::health::HealthNews;
use crate::ratelimit::{Budget, Limit, LimitKind};
use crate::table::Table;

use super::Router;

impl Router {
    /// From now on every rate limit refills itself at `share` of its rate,
    /// up to that share of its capacity; at 0 only grants refill it, and
    /// what each bucket held is dropped (see [`crate::ratelimit::Refill`]).
    pub fn set_refill_share(&self, share: f64) {
        let table = self.table.load();
        let limits = limits(&table).map(|(_, limit)| limit);
        self.refill.set(share, limits, self.clock.now());
    }

    pub fn refill_share(&self) -> f64 {
        self.refill.share_of_rate()
    }

    /// Every bucket of every rate limit, named by its owner's key
    /// (`deployment/<id>`, `tenant/<name>`, `api_key/<name>`).
    pub fn budgets(&self) -> Vec<(String, Budget)> {
        let table = self.table.load();
        let now = self.clock.now();
        limits(&table)
            .flat_map(|(key, limit)| limit.budgets(now).map(move |b| (key.clone(), b)))
            .collect()
    }

    /// Adds up to `amount` to `key`'s `kind` bucket and returns what it
    /// took (see [`Limit::grant`]); 0 for a key the config no longer has.
    pub fn grant(&self, key: &str, kind: LimitKind, amount: u32) -> u32 {
        let now = self.clock.now();
        self.with_limit(key, |limit| limit.grant(kind, amount, now))
    }

    /// Empties `key`'s `kind` bucket and returns the whole requests or
    /// tokens it held, for the link to hand back (see [`Limit::take_back`]).
    pub fn take_back(&self, key: &str, kind: LimitKind) -> u32 {
        let now = self.clock.now();
        self.with_limit(key, |limit| limit.take_back(kind, now))
    }

    /// What changed in the deployments' own health since the last call, for
    /// the link to tell the other hosts.
    pub fn health_news(&self) -> Vec<(Arc<str>, HealthNews)> {
        let table = self.table.load();
        let now = self.clock.now();
        let mut told = self.told.lock().unwrap_or_else(PoisonError::into_inner);
        told.retain(|id, _| table.deployment(id).is_some());
        let mut news = Vec::new();
        for deployment in &table.deployments {
            let told = told.entry(Arc::clone(&deployment.id)).or_default();
            let changes = deployment.health.news(told, now);
            news.extend(changes.map(|change| (Arc::clone(&deployment.id), change)));
        }
        news
    }

    /// Forgets what the link was told, so that the next `health_news` tells
    /// every circuit still open and every cool-down still running again: for
    /// a link that may have lost news (its Redis was away).
    pub fn retell_health(&self) {
        self.told
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Applies what another host said of `deployment`'s health. False when
    /// this router has no such deployment (hosts may run other configs).
    pub fn hear(&self, deployment: &str, news: HealthNews) -> bool {
        let table = self.table.load();
        let Some(deployment) = table.deployment(deployment) else {
            return false;
        };
        deployment.health.hear(news, self.clock.now());
        true
    }

    fn with_limit(&self, key: &str, f: impl FnOnce(&Limit) -> u32) -> u32 {
        let table = self.table.load();
        let limit = match key.split_once('/') {
            Some(("deployment", id)) => table.deployment(id).map(|d| &*d.limit),
            Some(("tenant", name)) => table.tenant_limits.get(name).map(|l| &**l),
            Some(("api_key", name)) => table.api_key_limits.get(name).map(|l| &**l),
            _ => None,
        };
        limit.map_or(0, f)
    }
}

/// Every limit of `table` with its key, deployments first.
fn limits(table: &Table) -> impl Iterator<Item = (String, &Limit)> {
    let deployments = table
        .deployments
        .iter()
        .map(|d| (format!("deployment/{}", d.id), &*d.limit));
    let tenants =
        sorted(&table.tenant_limits).map(|(name, limit)| (format!("tenant/{name}"), limit));
    let keys =
        sorted(&table.api_key_limits).map(|(name, limit)| (format!("api_key/{name}"), limit));
    deployments.chain(tenants).chain(keys)
}

fn sorted(limits: &HashMap<Arc<str>, Arc<Limit>>) -> impl Iterator<Item = (&str, &Limit)> {
    let mut limits: Vec<(&str, &Limit)> = limits.iter().map(|(k, l)| (&**k, &**l)).collect();
    limits.sort_unstable_by_key(|(name, _)| *name);
    limits.into_iter()
}

#[cfg(test)]
mod tests;
