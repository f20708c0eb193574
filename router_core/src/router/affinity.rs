//! Session affinity: requests that share an affinity key keep the same
//! deployment while it survives the filters.

use crate::strategy::Survivor;

use super::Candidate;

/// Moves the session's deployment to the front of `candidates`: weighted
/// rendezvous hashing of (key, deployment) into (0, 1) picks the same one for
/// the same key on every replica, for as long as it survives the filters,
/// and spreads keys in proportion to weight.
pub(super) fn stick(candidates: &mut [Candidate], survivors: &[Survivor<'_>], key: &str) {
    let Some(chosen) = survivors
        .iter()
        .map(|s| {
            let u = unit_hash(key, &s.deployment.id);
            (-s.deployment.weight / u.ln(), &s.deployment.id)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| id)
    else {
        return;
    };
    if let Some(position) = candidates.iter().position(|c| &c.deployment == chosen) {
        candidates[..=position].rotate_right(1);
    }
}

/// FNV-1a over `key`, a separator and `id`, mixed, mapped into (0, 1): stable
/// across processes and Rust versions, unlike `DefaultHasher`.
pub(super) fn unit_hash(key: &str, id: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0xff]).chain(id.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    ((crate::strategy::mix64(hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
