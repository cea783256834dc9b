//! The base chains: where packets enter the table (nat hooks) and where they leave it.

use super::*;

impl FamilyLowering<'_> {
    /// The base chains: nat prerouting and output jump to the dispatch, postrouting (and, with
    /// affinity, input) to the affinity update and masquerading.
    pub(super) fn hook_chains(&self) -> Vec<Chain> {
        let (base, jump) = (base_chain, jump_to);
        let has_affinity = !self.affinity_timeouts.is_empty();
        let mut chains = Vec::new();
        chains.push(base(
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            vec![jump(names::SERVICES_CHAIN)],
        ));
        chains.push(base(
            "nat-output",
            ChainType::Nat,
            Hook::Output,
            -100,
            vec![jump(names::SERVICES_CHAIN)],
        ));
        let mut post = Vec::new();
        if has_affinity {
            post.push(jump(names::AFFINITY_UPDATE_CHAIN));
            chains.push(base(
                "nat-input",
                ChainType::Nat,
                Hook::Input,
                100,
                vec![jump(names::AFFINITY_UPDATE_CHAIN)],
            ));
        }
        post.push(jump(names::MASQUERADING_CHAIN));
        chains.push(base(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            post,
        ));

        chains
    }
}
