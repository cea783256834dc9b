//! What nft 1.0.6 (Debian 12's) cannot load, and what the script says instead.
//!
//! nft 1.0.x aborts (`netlink_gen_expr: Assertion 'dreg < ctx->reg_low' failed`) on a map
//! update whose key or data does not fit one 16-byte register; measured with nft 1.0.6 here:
//! a 16-byte key with 8-byte data loads, a 20-byte key or 20-byte data does not, and a set
//! update without data loads at any width. An IPv6 session-affinity update
//! (`ip6 saddr . ct original ip6 daddr . meta l4proto . ct original proto-dst : ip6 daddr .
//! th dport`, 40 → 20 bytes) is such a rule. No narrower layout keeps the guarantee that a
//! client is only ever sent to an endpoint of the frontend it asked for: a hashed key would
//! need its result fed into the endpoint lookup (a map inside a concatenation, which nft's
//! grammar does not have) or a scratch register kept across rules (the packet or conntrack
//! mark, which other software owns). So the kernel gets the rule over netlink (`nfcompile
//! apply`, the `Syncer`; the kernel and `nft list` handle it), and the script carries it as a
//! comment: loaded with `nft -f`, IPv6 affinity frontends balance at random.

use crate::model::*;

/// The widest key or data nft 1.0.x encodes in a map update: one 16-byte register.
const UPDATE_REGISTER_BYTES: u32 = 16;

/// Bytes a concatenation of `exprs` takes in the registers.
fn concat_width(exprs: &[Expr]) -> u32 {
    exprs.iter().map(Expr::register_len).sum()
}

/// Why nft 1.0.6 cannot load `rule`, if it cannot.
pub fn unloadable(rule: &Rule) -> Option<&'static str> {
    rule.statements.iter().find_map(|s| match s {
        Statement::UpdateMap { key, data, .. }
            if concat_width(key) > UPDATE_REGISTER_BYTES
                || concat_width(data) > UPDATE_REGISTER_BYTES =>
        {
            Some(
                "nft 1.0 cannot load a map update wider than 16 bytes, such as IPv6 session \
                 affinity's; `nfcompile apply` programs it, while with `nft -f` those frontends \
                 balance at random",
            )
        }
        _ => None,
    })
}

/// The ruleset `nft -f` of the script holds: `ruleset` without the rules it leaves out.
pub fn as_loaded(ruleset: &Ruleset) -> Ruleset {
    let mut out = ruleset.clone();
    for table in &mut out.tables {
        for chain in &mut table.chains {
            chain.rules.retain(|r| unloadable(r).is_none());
        }
    }
    out
}

/// One line per chain whose rules the script leaves out, for `render` to say so.
pub fn left_out(ruleset: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    for table in &ruleset.tables {
        for chain in &table.chains {
            let n = chain
                .rules
                .iter()
                .filter(|r| unloadable(r).is_some())
                .count();
            if let Some(why) = chain.rules.iter().find_map(unloadable) {
                out.push(format!(
                    "chain {} ({} {}): {n} rule{} written as a comment ({why})",
                    chain.name,
                    super::family_name(table.family),
                    table.name,
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(f: Family) -> Rule {
        Rule {
            matches: vec![],
            statements: vec![Statement::UpdateMap {
                set: "affinity".into(),
                key: vec![
                    Expr::Saddr(f),
                    Expr::CtOriginalDaddr(f),
                    Expr::L4Proto,
                    Expr::CtOriginalDport,
                ],
                data: vec![Expr::Daddr(f), Expr::Dport],
                timeout: 10,
            }],
            comment: None,
        }
    }

    #[test]
    fn only_updates_wider_than_a_register_are_left_out() {
        assert_eq!(unloadable(&update(Family::Ipv4)), None);
        assert!(unloadable(&update(Family::Ipv6)).is_some());
    }
}
