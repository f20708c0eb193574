//! How the service names what an attempt came to, once, for health to act on.

use std::str::FromStr;

/// What one attempt against a deployment came to, as the service classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    Ok,
    RateLimited,
    Overloaded,
    ServerError,
    Timeout,
    ConnectionError,
    ContextWindowExceeded,
    ContentFiltered,
    AuthError,
    BadRequest,
    ProtocolError,
}

impl OutcomeClass {
    pub const ALL: [OutcomeClass; 11] = [
        OutcomeClass::Ok,
        OutcomeClass::RateLimited,
        OutcomeClass::Overloaded,
        OutcomeClass::ServerError,
        OutcomeClass::Timeout,
        OutcomeClass::ConnectionError,
        OutcomeClass::ContextWindowExceeded,
        OutcomeClass::ContentFiltered,
        OutcomeClass::AuthError,
        OutcomeClass::BadRequest,
        OutcomeClass::ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::Overloaded => "overloaded",
            OutcomeClass::ServerError => "server_error",
            OutcomeClass::Timeout => "timeout",
            OutcomeClass::ConnectionError => "connection_error",
            OutcomeClass::ContextWindowExceeded => "context_window_exceeded",
            OutcomeClass::ContentFiltered => "content_filtered",
            OutcomeClass::AuthError => "auth_error",
            OutcomeClass::BadRequest => "bad_request",
            OutcomeClass::ProtocolError => "protocol_error",
        }
    }
}

impl FromStr for OutcomeClass {
    type Err = UnknownOutcomeClass;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        OutcomeClass::ALL
            .into_iter()
            .find(|class| class.as_str() == name)
            .ok_or_else(|| UnknownOutcomeClass(name.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome class {0:?} (known: ok, rate_limited, overloaded, server_error, timeout, connection_error, context_window_exceeded, content_filtered, auth_error, bad_request, protocol_error)")]
pub struct UnknownOutcomeClass(pub String);
