//! Filters that remove deployments unable to serve a request. They run in the
//! order of [`Filter`]'s variants and the first one that fails explains the
//! rejection; a fixed set of kinds dispatched by `match`, so new ones (policies,
//! circuit breakers) slot in as variants.

use crate::calibration::scale;
use crate::router::{Rejection, RouteRequest};
use crate::table::{Deployment, Plan, Table, IMPOSSIBLE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `context_window < input tokens + max_output_tokens`, the input being
    /// the estimate as the deployment counts it (scaled by its calibration).
    ContextWindow,
    /// The deployment lacks a required capability (the request's or the policy's).
    Capabilities,
    /// The deployment's region is not allowed (by the request or the policy).
    Region,
    /// The request's estimated cost there exceeds the ceiling.
    Cost,
    /// Out of rotation: circuit open, cooling down after a 429 or an auth
    /// failure, ejected as a latency outlier, or its probe already taken.
    Health,
    /// A rate-limit budget (the deployment's, tenant's or API key's) is spent.
    RateLimit,
}

impl Filter {
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::ContextWindow => "context_window",
            Filter::Capabilities => "capabilities",
            Filter::Region => "region",
            Filter::Cost => "cost",
            Filter::Health => "health",
            Filter::RateLimit => "rate_limit",
        }
    }
}

/// A request resolved against one table and plan: names become bits once per
/// request, so checking a deployment is a few comparisons and ANDs. It owns
/// what it keeps, so a decision can go on drawing candidates after the call
/// that made it has returned.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) input_tokens: u32,
    pub(crate) max_output_tokens: u32,
    required_capabilities: u64,
    /// Capabilities the request names that no deployment has: none can be
    /// satisfied (kept only to name them).
    unknown_capabilities: Vec<Box<str>>,
    /// A policy's constraint names a capability no deployment has.
    impossible_capability: bool,
    /// `None` means any region.
    allowed_regions: Option<u64>,
    max_cost_usd: Option<f64>,
}

impl Query {
    pub(crate) fn new<S: AsRef<str>>(
        request: &RouteRequest<'_, S>,
        table: &Table,
        plan: &Plan,
    ) -> Self {
        let mut required_capabilities = plan.capabilities & !IMPOSSIBLE;
        let mut unknown_capabilities = Vec::new();
        for name in request.capabilities {
            match table.capabilities.bit(name.as_ref()) {
                Some(bit) => required_capabilities |= bit,
                None => unknown_capabilities.push(name.as_ref().into()),
            }
        }
        let requested_regions = (!request.regions.is_empty()).then(|| {
            request
                .regions
                .iter()
                .filter_map(|name| table.regions.bit(name.as_ref()))
                .fold(0, |mask, bit| mask | bit)
        });
        let allowed_regions = match (requested_regions, plan.regions) {
            (Some(a), Some(b)) => Some(a & b),
            (a, b) => a.or(b),
        };
        let max_cost_usd = match (request.max_cost_usd, plan.max_cost_usd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Query {
            input_tokens: request.input_tokens,
            max_output_tokens: request.max_output_tokens,
            required_capabilities,
            unknown_capabilities,
            impossible_capability: plan.capabilities & IMPOSSIBLE != 0,
            allowed_regions,
            max_cost_usd,
        }
    }

    /// `None` if `deployment` (of `table`) passes every filter.
    pub(crate) fn reject(&self, table: &Table, deployment: &Deployment) -> Option<Rejection> {
        let ratio = deployment.calibration.ratio();
        let input = scale(self.input_tokens, ratio);
        let needed = u64::from(input) + u64::from(self.max_output_tokens);
        let (filter, detail) = if u64::from(deployment.context_window) < needed {
            let detail = self.context_detail(deployment, input, ratio, needed);
            (Filter::ContextWindow, detail)
        } else if self.impossible_capability
            || !self.unknown_capabilities.is_empty()
            || deployment.capabilities & self.required_capabilities != self.required_capabilities
        {
            (
                Filter::Capabilities,
                self.capabilities_detail(table, deployment),
            )
        } else if self
            .allowed_regions
            .is_some_and(|allowed| deployment.region & allowed == 0)
        {
            (Filter::Region, self.region_detail(table, deployment))
        } else if let Some(detail) = self.cost_detail(deployment) {
            (Filter::Cost, detail)
        } else {
            return None;
        };
        Some(Rejection {
            deployment: deployment.id.clone(),
            filter,
            detail,
        })
    }

    /// The request's estimated cost on `deployment`, for the cost filter and strategies.
    pub(crate) fn cost_usd(&self, deployment: &Deployment) -> f64 {
        deployment.cost_usd(self.input_tokens, self.max_output_tokens)
    }

    fn cost_detail(&self, deployment: &Deployment) -> Option<String> {
        let ceiling = self.max_cost_usd?;
        let cost = self.cost_usd(deployment);
        (cost > ceiling)
            .then(|| format!("estimated cost ${cost:.6} exceeds the ceiling ${ceiling:.6}"))
    }

    fn context_detail(
        &self,
        deployment: &Deployment,
        input: u32,
        ratio: f64,
        needed: u64,
    ) -> String {
        let estimate = self.input_tokens;
        let input = if input == estimate {
            format!("{input} input")
        } else {
            format!(
                "{input} input, the estimate {estimate} scaled by {ratio:.2} for this deployment,"
            )
        };
        format!(
            "needs {needed} tokens ({input} + {} max output), context window is {}",
            self.max_output_tokens, deployment.context_window
        )
    }

    fn capabilities_detail(&self, table: &Table, deployment: &Deployment) -> String {
        let missing = table.capabilities.names().filter(|&(_, bit)| {
            self.required_capabilities & bit != 0 && deployment.capabilities & bit == 0
        });
        let unknown = self.unknown_capabilities.iter().map(AsRef::as_ref);
        let mut detail = String::from("missing ");
        push_joined(&mut detail, missing.map(|(name, _)| name).chain(unknown));
        detail
    }

    fn region_detail(&self, table: &Table, deployment: &Deployment) -> String {
        let region = table.regions.name(deployment.region);
        let allowed = table
            .regions
            .names()
            .filter(|&(_, bit)| self.allowed_regions.is_some_and(|a| a & bit != 0));
        let mut detail = format!("region {region:?} is not in allowed regions [");
        push_joined(&mut detail, allowed.map(|(name, _)| name));
        detail.push(']');
        detail
    }
}

/// Appends `items` separated by ", " (details are output, so build them in place).
fn push_joined<S: AsRef<str>>(out: &mut String, items: impl Iterator<Item = S>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testing::chat_config;

    fn table() -> Table {
        Table::compile(&Config::from_json(&chat_config()).unwrap(), None, 0)
    }

    /// (deployment, filter, detail) for every rejected deployment, in config order.
    fn rejections(request: &RouteRequest<'_>) -> Vec<(String, &'static str, String)> {
        let table = table();
        let plan = &table.group("chat").unwrap().plan;
        let query = Query::new(request, &table, plan);
        table
            .deployments
            .iter()
            .filter_map(|d| query.reject(&table, d))
            .map(|r| (r.deployment.to_string(), r.filter.as_str(), r.detail))
            .collect()
    }

    #[test]
    fn empty_request_passes_everything() {
        assert!(rejections(&RouteRequest::new("chat")).is_empty());
    }

    #[test]
    fn context_window_counts_input_and_max_output() {
        let request = RouteRequest {
            input_tokens: 7_000,
            max_output_tokens: 1_001,
            ..RouteRequest::new("chat")
        };
        let detail = "needs 8001 tokens (7000 input + 1001 max output), context window is 8000";
        assert_eq!(
            rejections(&request),
            [("a".into(), "context_window", detail.into())]
        );
        let fits = RouteRequest {
            input_tokens: 8_000,
            ..RouteRequest::new("chat")
        };
        assert!(rejections(&fits).is_empty());
    }

    #[test]
    fn token_sum_does_not_overflow() {
        let request = RouteRequest {
            input_tokens: u32::MAX,
            max_output_tokens: u32::MAX,
            ..RouteRequest::new("chat")
        };
        assert_eq!(rejections(&request).len(), 4);
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        let request = RouteRequest {
            capabilities: &["tools", "vision"],
            ..RouteRequest::new("chat")
        };
        assert_eq!(
            rejections(&request),
            [
                ("a".into(), "capabilities", "missing vision".into()),
                ("b".into(), "capabilities", "missing tools, vision".into()),
                ("c".into(), "capabilities", "missing tools".into()),
            ]
        );
    }

    #[test]
    fn unknown_capability_matches_nothing() {
        let request = RouteRequest {
            capabilities: &["streaming", "telepathy"],
            ..RouteRequest::new("chat")
        };
        let rejected = rejections(&request);
        assert_eq!(rejected.len(), 4);
        assert!(rejected
            .iter()
            .all(|(_, _, detail)| detail == "missing telepathy"));
    }

    #[test]
    fn regions_restrict_and_unknown_ones_match_nothing() {
        let request = RouteRequest {
            regions: &["us", "mars"],
            ..RouteRequest::new("chat")
        };
        // Unknown regions allow nothing, so only the known one is listed.
        let detail = "region \"eu\" is not in allowed regions [us]";
        assert_eq!(
            rejections(&request),
            [
                ("a".into(), "region", detail.into()),
                ("c".into(), "region", detail.into())
            ]
        );
        let nowhere = RouteRequest {
            regions: &["mars"],
            ..RouteRequest::new("chat")
        };
        assert_eq!(rejections(&nowhere).len(), 4);
    }

    #[test]
    fn first_failing_filter_explains_the_rejection() {
        let request = RouteRequest {
            input_tokens: 10_000,
            capabilities: &["vision"],
            regions: &["us"],
            ..RouteRequest::new("chat")
        };
        let filters: Vec<_> = rejections(&request)
            .into_iter()
            .map(|(d, f, _)| (d, f))
            .collect();
        let expected = [
            ("a", "context_window"),
            ("b", "capabilities"),
            ("c", "region"),
        ];
        assert_eq!(filters, expected.map(|(d, f)| (d.to_string(), f)));
    }
}
