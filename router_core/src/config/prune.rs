//! Leaving deployments out of a valid config (say, those whose credentials
//! are missing), with everything that named them: a group keeps its other
//! members or goes, a policy target keeps what is left of it, a policy whose
//! own targets are all gone goes, and so does a fallback tier left empty; an
//! experiment variant left empty goes (the policy with it, when none is
//! left), and so does a shadow deployment (the shadow with it, when none is).

use std::collections::HashSet;

use super::{Config, TargetConfig};
use crate::error::ConfigError;

/// What leaving deployments out removed along with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruned {
    pub deployments: Vec<String>,
    /// Model groups left with no deployment.
    pub model_groups: Vec<String>,
    /// Policies left with nothing to route to.
    pub policies: Vec<String>,
    /// `(policy id, index in its fallback list)` of each tier left empty.
    pub fallbacks: Vec<(String, usize)>,
    /// `(policy id, variant name)` of each experiment variant left empty.
    pub variants: Vec<(String, String)>,
    /// `(policy id, deployment)` of each shadow deployment left out.
    pub shadows: Vec<(String, String)>,
}

impl Config {
    /// This config without the deployments `left_out`, and what went with
    /// them. The config has been validated; the result is validated again,
    /// so that a default group left empty is an error.
    pub fn without<S: AsRef<str>>(
        mut self,
        left_out: &[S],
    ) -> Result<(Config, Pruned), ConfigError> {
        let gone: HashSet<&str> = left_out.iter().map(AsRef::as_ref).collect();
        if gone.is_empty() {
            return Ok((self, Pruned::default()));
        }
        for (i, id) in left_out.iter().enumerate() {
            if !self.deployments.iter().any(|d| d.id == id.as_ref()) {
                return Err(ConfigError::UnknownDeployment {
                    key: format!("without[{i}]"),
                    id: id.as_ref().to_owned(),
                });
            }
        }
        let mut pruned = Pruned::default();
        self.deployments.retain(|d| {
            let kept = !gone.contains(d.id.as_str());
            if !kept {
                pruned.deployments.push(d.id.clone());
            }
            kept
        });
        self.model_groups.retain_mut(|group| {
            group.deployments.retain(|id| !gone.contains(id.as_str()));
            let kept = !group.deployments.is_empty();
            if !kept {
                pruned.model_groups.push(group.name.clone());
            }
            kept
        });
        let groups: HashSet<String> = self.model_groups.iter().map(|g| g.name.clone()).collect();
        let keeps = |target: &mut TargetConfig| {
            target.groups.retain(|g| groups.contains(g));
            target.deployments.retain(|d| !gone.contains(d.as_str()));
            !(target.groups.is_empty() && target.deployments.is_empty())
        };
        self.policies.retain_mut(|policy| {
            let routes = match &mut policy.experiment {
                Some(experiment) => {
                    let mut index = 0;
                    experiment.variants.retain_mut(|variant| {
                        let name = variant.display_name(index);
                        index += 1;
                        let mut target = variant.target();
                        let kept = keeps(&mut target);
                        (variant.groups, variant.deployments) = (target.groups, target.deployments);
                        if !kept {
                            pruned.variants.push((policy.id.clone(), name.clone()));
                        } else if variant.name.is_none() {
                            // Named by its place in the config, not among those left.
                            variant.name = Some(name);
                        }
                        kept
                    });
                    !experiment.variants.is_empty()
                }
                None => keeps(&mut policy.route_to),
            };
            if !routes {
                pruned.policies.push(policy.id.clone());
                return false;
            }
            if let Some(shadow) = &mut policy.shadow {
                shadow.deployments.retain(|id| {
                    let kept = !gone.contains(id.as_str());
                    if !kept {
                        pruned.shadows.push((policy.id.clone(), id.clone()));
                    }
                    kept
                });
                if shadow.deployments.is_empty() {
                    policy.shadow = None;
                }
            }
            let mut index = 0;
            policy.fallback.retain_mut(|tier| {
                let kept = keeps(tier);
                if !kept {
                    pruned.fallbacks.push((policy.id.clone(), index));
                }
                index += 1;
                kept
            });
            true
        });
        if let Some(name) = &self.default_group {
            if pruned.model_groups.contains(name) {
                return Err(ConfigError::LeftEmpty(name.clone()));
            }
        }
        self.validate()?;
        Ok((self, pruned))
    }
}
