//! Session affinity: requests that share an affinity key keep the same
//! deployment while it survives the filters.

use crate::table::Deployment;

/// Positions in `members` from the session key's favourite down, by weighted
/// rendezvous hashing of (key, deployment) into (0, 1): the first of them that
/// survives the filters is the session's deployment, the same for the same key
/// on every replica for as long as it survives, with keys spread in proportion
/// to weight. Lazily: usually only the first is asked for.
pub(super) fn rendezvous_order<'t>(
    key: &str,
    members: impl Iterator<Item = &'t Deployment>,
) -> impl Iterator<Item = usize> {
    let keyed = fnv(FNV_OFFSET, key.bytes().chain([0xff]));
    let mut scores: Vec<f64> = members
        .map(|d| -d.weight / unit(fnv(keyed, d.id.bytes())).ln())
        .collect();
    std::iter::from_fn(move || {
        // The last of equal scores, as `max_by` picks.
        let (position, &score) = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        if score == f64::NEG_INFINITY {
            return None;
        }
        scores[position] = f64::NEG_INFINITY;
        Some(position)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut hash: u64, bytes: impl Iterator<Item = u8>) -> u64 {
    for byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn unit(hash: u64) -> f64 {
    ((crate::strategy::mix64(hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// FNV-1a over `key`, a separator and `id`, mixed, mapped into (0, 1): stable
/// across processes and Rust versions, unlike `DefaultHasher`.
pub(super) fn unit_hash(key: &str, id: &str) -> f64 {
    unit(fnv(FNV_OFFSET, key.bytes().chain([0xff]).chain(id.bytes())))
}
