//! Slots: how a list of endpoints fills its frontend's slots (see the module documentation of
//! [`super`]: capacity classes, rejection sampling, weights).

use super::*;

/// Smallest slot capacity: lists of 1 to 8 endpoints share one selection chain, so a
/// deployment scaling within that range changes endpoint-map elements only.
pub const MIN_SLOT_CAPACITY: u32 = 8;

/// Random draws a selection chain makes before it falls back to slot 0. Each draw hits with
/// probability ≥ 1/2, so the fallback is taken at most 2⁻²⁰ of the time.
pub const SELECTION_DRAWS: usize = 20;

/// The capacity class of a list whose weights add up to `total` (its length when every
/// weight is 1): a power of two, at least [`MIN_SLOT_CAPACITY`]. Only crossing a class
/// re-points a dispatch element.
pub fn slot_capacity(total: usize) -> u32 {
    (total.next_power_of_two() as u32).max(MIN_SLOT_CAPACITY)
}

/// Slots of a list of endpoints with these weights, within its capacity: one copy of the list
/// gives endpoint `i` `weights[i]` consecutive slots, and copies repeat until at least half of
/// the capacity is filled — so a random draw over the capacity hits an endpoint with
/// probability ≥ 1/2, and each endpoint in proportion to its weight (equal weights: endpoint
/// `i` holds `i, i + n, i + 2n, …`). Slot 0 is always filled. Yields (slot, endpoint index).
pub fn slots(weights: &[u32]) -> impl Iterator<Item = (u32, usize)> + '_ {
    slots_of(weights.len(), |i| weights[i])
}

/// How many slots [`slots`] fills for lists whose weights add up to `total`.
pub(super) fn slots_filled(total: usize) -> usize {
    if total == 0 {
        return 0;
    }
    let capacity = slot_capacity(total) as usize;
    (capacity / 2).div_ceil(total).max(1) * total
}

/// [`slots`] of `n` endpoints whose weights `weight` gives, without collecting them.
pub(super) fn slots_of(
    n: usize,
    weight: impl Fn(usize) -> u32,
) -> impl Iterator<Item = (u32, usize)> {
    let total: usize = (0..n).map(|i| weight(i) as usize).sum();
    let one_copy: Vec<usize> = if (0..n).all(|i| weight(i) == 1) {
        Vec::new() // equal weights: slot s is endpoint s mod n
    } else {
        (0..n)
            .flat_map(|i| std::iter::repeat_n(i, weight(i) as usize))
            .collect()
    };
    (0..slots_filled(total)).map(move |slot| {
        let i = if one_copy.is_empty() {
            slot % n
        } else {
            one_copy[slot % total]
        };
        (slot as u32, i)
    })
}

pub(super) fn total_weight(targets: &[Target]) -> usize {
    targets.iter().map(|t| t.weight as usize).sum()
}
