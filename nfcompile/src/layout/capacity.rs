//! Set capacities: every named set gets a declared size.
//!
//! A set declared with a size gets the kernel's fixed-size hash (`nft_hash`, or
//! `nft_hash_fast` for 4-byte keys) instead of its resizable one (`rhashtable`), which on a
//! cold load spends about a fifth of the kernel's time on its slow insertion path while
//! the table grows (measured: `docs/kernel-facts.md`, "Set sizes").
//!
//! The size is also a limit: the kernel refuses an element past it (`ENFILE`). So a set gets
//! room to grow: its elements plus an eighth, rounded up to a power of two (12.5–125% more
//! than it holds). Not more: the kernel zeroes the buckets when it creates the set and walks
//! all of them whenever a rule binds the map; sizing for twice the elements made a cold load
//! about a tenth slower (same section). An incremental update that would pass the size is refused (and the full sync that
//! follows resizes the set), and a full sync
//! keeps a live set's capacity while its elements fit ([`crate::diff::keep_capacities`]), so
//! a set is recreated only when it outgrows its size or shrinks well below it.

use crate::model::{SetFlags, Table};

/// The smallest size given: 256 entries cost the kernel 512 buckets (4 KiB).
pub const MIN_CAPACITY: u32 = 256;

/// The largest: the kernel's set size is a `u32`; a set this big never comes from a
/// cluster the validator accepts, but the arithmetic must not overflow.
pub const MAX_CAPACITY: u32 = 1 << 31;

/// The size declared for a set of `elements`: an eighth more, to a power of two.
pub fn capacity(elements: usize) -> u32 {
    let wanted = elements
        .saturating_add(elements / 8)
        .min(MAX_CAPACITY as usize) as u32;
    wanted.max(MIN_CAPACITY).next_power_of_two()
}

/// Whether the kernel would pick its fixed-size hash for this set once it has a size:
/// interval sets use trees, and dynamic sets (session affinity) choose their own size.
pub fn sized_by_capacity(flags: SetFlags) -> bool {
    !flags.intersects(SetFlags::INTERVAL | SetFlags::DYNAMIC)
}

/// Give every set of `table` that has no size its [`capacity`].
pub fn size_sets(table: &mut Table) {
    for set in &mut table.sets {
        if set.size.is_none() && sized_by_capacity(set.flags) {
            set.size = Some(capacity(set.elements.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_an_eighth_of_room_and_is_a_power_of_two() {
        assert_eq!(capacity(0), MIN_CAPACITY);
        assert_eq!(capacity(227), 256);
        assert_eq!(capacity(228), 256); // 228 + 28 = 256
        assert_eq!(capacity(229), 512);
        assert_eq!(capacity(26_750), 32_768);
        assert_eq!(capacity(usize::MAX), MAX_CAPACITY);
        for n in [0, 1, 255, 256, 1000, 29_127, 29_128, 43_254, 400_000] {
            let c = capacity(n) as usize;
            assert!(c >= n + n / 8 && c.is_power_of_two(), "{n} → {c}");
            assert!(
                c <= (2 * (n + n / 8)).max(MIN_CAPACITY as usize),
                "{n} → {c}"
            );
        }
    }
}
