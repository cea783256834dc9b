//! Helpers shared by the benchmark binaries: the peers' rulesets for the same clusters.

pub mod peers;
