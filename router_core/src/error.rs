//! Plain Rust errors. The Python binding maps them to exceptions in one place
//! (`python::to_py_err`), so nothing here knows about Python.

/// A config document that cannot become a routing table. Every message starts
/// with the offending key (`deployments[2].weight`, `model_groups[1].deployments[0]`)
/// so an operator can find it without reading code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Malformed JSON or a schema mismatch (unknown field, wrong type); `key` is
    /// the path serde reached, `.` for the document root.
    #[error("{key}: {message}")]
    Schema { key: String, message: String },
    #[error("{key}: must not be empty")]
    Empty { key: String },
    #[error("{key}: duplicate {what} {value:?}")]
    Duplicate {
        key: String,
        what: &'static str,
        value: String,
    },
    #[error("{key}: must be {bound}, got {value}")]
    OutOfRange {
        key: String,
        bound: &'static str,
        value: f64,
    },
    #[error("{key}: unknown deployment {id:?}")]
    UnknownDeployment { key: String, id: String },
    #[error("{key}: {value:?} is reserved (it selects default_group)")]
    Reserved { key: String, value: String },
    #[error("default_group: unknown model group {0:?}")]
    UnknownDefaultGroup(String),
    /// Leaving deployments out (`Config::without`) emptied the default group.
    #[error("default_group: model group {0:?} has no deployment left")]
    LeftEmpty(String),
    /// Capabilities and regions are bitmasks in the compiled table.
    #[error("{key}: more than {limit} distinct {what}", limit = crate::table::MAX_NAMES)]
    TooMany { key: String, what: &'static str },
}

/// Everything the router façade can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `name` is what the caller asked for (`"auto"` when no default group is
    /// configured); `known` is sorted so messages and tests are stable.
    #[error("{}", unknown_group_message(name, known))]
    UnknownModelGroup { name: String, known: Vec<String> },
    #[error("unknown deployment {0:?}")]
    UnknownDeployment(String),
    /// A lease could not be had: out of rotation or out of budget.
    #[error("deployment {deployment:?} cannot take the attempt now: {detail}")]
    Unavailable {
        deployment: String,
        detail: String,
        /// When the same lease could succeed; `None` if waiting cannot help.
        retry_after: Option<std::time::Duration>,
        /// Refused by a budget (this router's, or a provider's 429 cool-down),
        /// not because the deployment is out of rotation (circuit, outlier,
        /// credentials): the caller may report it as rate limiting.
        rate_limited: bool,
    },
    /// A NaN or negative latency would poison the moving averages for good.
    #[error("latencies must be finite numbers >= 0, got {0}")]
    InvalidLatency(f64),
    #[error("calls are counted for methods {known:?}, not {0:?}", known = crate::CALL_METHODS)]
    UnknownMethod(String),
    #[error("gRPC status codes are 0 to 16, got {0}")]
    UnknownStatus(u8),
}

fn unknown_group_message(name: &str, known: &[String]) -> String {
    let known = known.join(", ");
    if name == crate::config::AUTO_GROUP {
        format!("model \"auto\" needs a default_group, and none is configured (known: {known})")
    } else {
        format!("unknown model group {name:?} (known: {known})")
    }
}
