//! The compiled, immutable routing table (phase two of the config). Names are
//! interned once here so that routing touches integers and bitmasks, and the
//! only string hashing per request is the model-group lookup.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, AUTO_GROUP};
use crate::stats::Counters;
use crate::strategy::Strategy;

/// Capabilities and regions each live in a `u64` bitmask.
pub const MAX_NAMES: usize = 64;

/// Names interned to bit positions. Lookups scan linearly: with at most 64
/// short names that is cheaper than hashing, and it keeps routing hash-free.
#[derive(Debug, Default)]
pub(crate) struct NameBits {
    names: Vec<String>,
}

impl NameBits {
    /// The bit for `name`, or `None` when no deployment uses it.
    pub(crate) fn bit(&self, name: &str) -> Option<u64> {
        self.names.iter().position(|n| n == name).map(|i| 1 << i)
    }

    /// The name behind a single-bit mask.
    pub(crate) fn name(&self, bit: u64) -> &str {
        &self.names[bit.trailing_zeros() as usize]
    }

    /// Config validation guarantees at most `MAX_NAMES` distinct names.
    fn intern(&mut self, name: &str) -> u64 {
        self.bit(name).unwrap_or_else(|| {
            self.names.push(name.to_owned());
            1 << (self.names.len() - 1)
        })
    }
}

#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) id: Arc<str>,
    /// A single bit in the table's region set.
    pub(crate) region: u64,
    pub(crate) context_window: u32,
    pub(crate) capabilities: u64,
    pub(crate) weight: f64,
    pub(crate) priority: u32,
    /// Shared with the table this one replaced when the id survives a reload.
    pub(crate) stats: Arc<Counters>,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: Arc<str>,
    pub(crate) strategy: Strategy,
    /// Indices into `Table::deployments`, in the order the strategy expects
    /// (see [`Strategy::member_order`]).
    pub(crate) members: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) deployments: Vec<Deployment>,
    deployment_index: HashMap<Arc<str>, usize>,
    pub(crate) groups: Vec<Group>,
    group_index: HashMap<Arc<str>, usize>,
    default_group: Option<usize>,
    pub(crate) capabilities: NameBits,
    pub(crate) regions: NameBits,
}

impl Table {
    /// Compiles a validated config. Counters of deployments whose id also
    /// exists in `previous` are carried over, so a reload keeps their stats.
    pub(crate) fn compile(config: &Config, previous: Option<&Table>) -> Table {
        let mut capabilities = NameBits::default();
        let mut regions = NameBits::default();
        let deployments: Vec<Deployment> = config
            .deployments
            .iter()
            .map(|d| Deployment {
                id: d.id.as_str().into(),
                region: regions.intern(&d.region),
                context_window: d.context_window,
                capabilities: d
                    .capabilities
                    .iter()
                    .fold(0, |mask, c| mask | capabilities.intern(c)),
                weight: d.weight,
                priority: d.priority,
                stats: previous
                    .and_then(|t| t.deployment(&d.id))
                    .map_or_else(Arc::default, |old| Arc::clone(&old.stats)),
            })
            .collect();
        let deployment_index: HashMap<Arc<str>, usize> = deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (Arc::clone(&d.id), i))
            .collect();
        let groups: Vec<Group> = config
            .model_groups
            .iter()
            .map(|g| {
                let mut members: Vec<usize> = g
                    .deployments
                    .iter()
                    .map(|id| deployment_index[id.as_str()])
                    .collect();
                g.strategy.member_order(&mut members, &deployments);
                Group {
                    name: g.name.as_str().into(),
                    strategy: g.strategy,
                    members,
                }
            })
            .collect();
        let group_index: HashMap<Arc<str>, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (Arc::clone(&g.name), i))
            .collect();
        let default_group = config
            .default_group
            .as_ref()
            .map(|name| group_index[name.as_str()]);
        Table {
            deployments,
            deployment_index,
            groups,
            group_index,
            default_group,
            capabilities,
            regions,
        }
    }

    /// Resolves a requested model: a group name, or `"auto"` for the default group.
    pub(crate) fn group(&self, model: &str) -> Option<&Group> {
        let index = if model == AUTO_GROUP {
            self.default_group
        } else {
            self.group_index.get(model).copied()
        };
        index.map(|i| &self.groups[i])
    }

    pub(crate) fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployment_index.get(id).map(|&i| &self.deployments[i])
    }

    pub(crate) fn default_group(&self) -> Option<&Group> {
        self.default_group.map(|i| &self.groups[i])
    }

    /// Sorted, for stable error messages.
    pub(crate) fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.iter().map(|g| g.name.to_string()).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{chat_config, config, group, weighted};

    #[test]
    fn names_are_interned_to_bits() {
        let table = Table::compile(&Config::from_json(&chat_config()).unwrap(), None);
        let bit = |name| table.capabilities.bit(name).unwrap();
        let d = table.deployment("d").unwrap();
        assert_eq!(
            d.capabilities,
            bit("streaming") | bit("tools") | bit("vision")
        );
        assert_eq!(table.regions.name(d.region), "us");
        assert_eq!(table.regions.bit("mars"), None);
    }

    #[test]
    fn priority_members_are_sorted_weighted_members_keep_config_order() {
        let json = config(
            vec![
                weighted("p2", 1.0, 2),
                weighted("p0", 1.0, 0),
                weighted("p1", 1.0, 1),
            ],
            vec![
                group("p", "priority", &["p2", "p0", "p1"]),
                group("w", "weighted", &["p2", "p0", "p1"]),
            ],
        );
        let table = Table::compile(&Config::from_json(&json).unwrap(), None);
        let members = |name| -> Vec<&str> {
            table
                .group(name)
                .unwrap()
                .members
                .iter()
                .map(|&i| &*table.deployments[i].id)
                .collect()
        };
        assert_eq!(members("p"), ["p0", "p1", "p2"]);
        assert_eq!(members("w"), ["p2", "p0", "p1"]);
    }

    #[test]
    fn compile_shares_counters_with_the_previous_table() {
        let config = Config::from_json(&chat_config()).unwrap();
        let old = Table::compile(&config, None);
        let new = Table::compile(&config, Some(&old));
        let (a_old, a_new) = (old.deployment("a").unwrap(), new.deployment("a").unwrap());
        assert!(Arc::ptr_eq(&a_old.stats, &a_new.stats));
    }
}
