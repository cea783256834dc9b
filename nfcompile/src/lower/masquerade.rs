//! Masquerading: the chain that rewrites the source of marked connections, and the hairpin
//! set that marks a pod reaching itself.

use super::*;

impl FamilyLowering<'_> {
    /// The chain that masquerades what was marked, and the hairpin set that marks a pod
    /// reaching itself.
    pub(super) fn masquerading_chain(&self, sets: &mut Vec<Set>) -> Chain {
        let f = self.family;
        let addr = FieldType::addr(f);
        let mut masq = Vec::new();
        if !self.hairpin.is_empty() {
            masq.push(rule(
                vec![
                    Match::CtStatusDnat,
                    Match::Lookup {
                        key: vec![Expr::Saddr(f), Expr::Daddr(f)],
                        set: SetRef::Named(names::HAIRPIN.into()),
                        negate: false,
                    },
                ],
                vec![Statement::MarkOr(self.mark)],
                Some("hairpin: a pod reaching itself through a service"),
            ));
            sets.push(set(
                names::HAIRPIN,
                vec![addr, addr],
                None,
                self.hairpin
                    .iter()
                    .map(|ip| element(vec![Value::Addr(*ip), Value::Addr(*ip)], None, None))
                    .collect(),
                "local endpoints, as source . destination",
            ));
        }
        masq.push(rule(
            vec![Match::MarkBitClear {
                mask: self.mark,
                negate: false,
            }],
            vec![Statement::Verdict(Verdict::Return)],
            None,
        ));
        masq.push(rule(vec![], vec![Statement::MarkXor(self.mark)], None));
        masq.push(rule(
            vec![],
            vec![Statement::Masquerade { fully_random: true }],
            None,
        ));
        Chain {
            name: names::MASQUERADING_CHAIN.into(),
            base: None,
            comment: None,
            rules: masq,
        }
    }
}
