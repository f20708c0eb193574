//! What the router has measured, for exporters and the admin API: every
//! deployment's distributions and every model group's calls. Recording
//! attempts happens as their leases settle (`Router::record`); whole calls are
//! recorded here, once each as it ends.

use crate::error::RouterError;
use crate::measures::{CallMeasures, Extra, CALL_METHODS, GRPC_STATUSES};
use crate::stats::DeploymentMeasures;

use super::Router;

impl Router {
    /// Counts one call to `method` (one of [`CALL_METHODS`]) that ended
    /// with gRPC status code `status` after `duration_s` and `extra`
    /// attempts, under `model_group`; a name that is no group of the current
    /// config (an unknown model, or none) counts as reaching no group, so
    /// clients' text never adds a series.
    pub fn record_call(
        &self,
        model_group: &str,
        method: &str,
        status: u8,
        duration_s: f64,
        extra: Extra,
    ) -> Result<(), RouterError> {
        let method = CALL_METHODS
            .iter()
            .position(|&known| known == method)
            .ok_or_else(|| RouterError::UnknownMethod(method.to_owned()))?;
        if usize::from(status) >= GRPC_STATUSES.len() {
            return Err(RouterError::UnknownStatus(status));
        }
        if !(duration_s.is_finite() && duration_s >= 0.0) {
            return Err(RouterError::InvalidLatency(duration_s));
        }
        let table = self.table.load();
        let counters = match table.group_named(model_group) {
            Some(group) => &group.calls,
            None => &table.unrouted_calls,
        };
        counters.record(method, usize::from(status), duration_s, extra);
        Ok(())
    }

    /// One entry per deployment of the current table, in config order.
    pub fn measures(&self) -> Vec<DeploymentMeasures> {
        let table = self.table.load();
        table
            .deployments
            .iter()
            .map(|d| d.stats.measures(&d.id))
            .collect()
    }

    /// One entry per model group and method with any calls, in config order;
    /// calls that reached no group last, under the group name "".
    pub fn call_measures(&self) -> Vec<CallMeasures> {
        let table = self.table.load();
        let groups = table.groups.iter().map(|g| (&*g.name, &g.calls));
        groups
            .chain(std::iter::once(("", &table.unrouted_calls)))
            .flat_map(|(name, calls)| calls.snapshot(name))
            .collect()
    }
}
