use super::*;
use nfcompile::model::Protocol;

struct NoIntervals;
impl SetInfo for NoIntervals {
    fn is_interval(&self, name: &str) -> bool {
        name == "firewall-allow"
    }
}

fn rule(matches: Vec<Match>, statements: Vec<Statement>) -> Rule {
    Rule {
        matches,
        statements,
        comment: None,
    }
}

#[test]
fn concatenations_use_nfts_register_layout() {
    // nft: daddr → reg 1, l4proto → reg 9, dport → reg 10, numgen → reg 11.
    let r = rule(
        vec![],
        vec![Statement::DnatMap {
            family: Family::Ipv4,
            key: vec![
                Expr::Daddr(Family::Ipv4),
                Expr::L4Proto,
                Expr::Dport,
                Expr::NumgenRandom {
                    modulus: 3,
                    offset: 0,
                },
            ],
            map: "endpoints".into(),
        }],
    );
    let e = encode_rule(&r, Family::Ipv4, &NoIntervals).insns;
    let dregs: Vec<u32> = e
        .iter()
        .filter_map(|i| match i {
            Insn::Payload { dreg, .. } | Insn::Meta { dreg, .. } | Insn::Numgen { dreg, .. } => {
                Some(*dreg)
            }
            _ => None,
        })
        .collect();
    assert_eq!(dregs, [1, 9, 10, 11]);
    assert_eq!(
        e.last(),
        Some(&Insn::Nat {
            family: 2,
            reg_addr: 1,
            reg_proto: 9
        })
    );
    // IPv6: daddr takes 16 bytes, so the port lands in reg 2.
    let r6 = rule(
        vec![],
        vec![Statement::DnatMap {
            family: Family::Ipv6,
            key: vec![Expr::Daddr(Family::Ipv6), Expr::L4Proto, Expr::Dport],
            map: "endpoints".into(),
        }],
    );
    let e6 = encode_rule(&r6, Family::Ipv6, &NoIntervals).insns;
    assert_eq!(
        e6.last(),
        Some(&Insn::Nat {
            family: 10,
            reg_addr: 1,
            reg_proto: 2
        })
    );
}

#[test]
fn prefixes_load_only_the_bytes_they_cover() {
    let m = Match::Cmp {
        expr: Expr::Saddr(Family::Ipv4),
        value: Value::Prefix("10.244.0.0/16".parse().unwrap()),
        negate: true,
    };
    let e = encode_rule(&rule(vec![m], vec![]), Family::Ipv4, &NoIntervals).insns;
    assert_eq!(
        e,
        [
            Insn::Payload {
                base: 1,
                offset: 12,
                len: 2,
                dreg: 1
            },
            Insn::Cmp {
                sreg: 1,
                op: 1,
                data: vec![10, 244]
            },
        ]
    );
    let m = Match::Cmp {
        expr: Expr::Saddr(Family::Ipv4),
        value: Value::Prefix("10.96.0.0/12".parse().unwrap()),
        negate: false,
    };
    let e = encode_rule(&rule(vec![m], vec![]), Family::Ipv4, &NoIntervals).insns;
    assert!(matches!(&e[0], Insn::Payload { len: 4, .. }));
    assert!(matches!(&e[1], Insn::Bitwise { mask, .. } if mask == &vec![0xff, 0xf0, 0, 0]));
}

#[test]
fn affinity_update_puts_data_on_the_next_register() {
    let f = Family::Ipv4;
    let s = Statement::UpdateMap {
        set: "affinity".into(),
        key: vec![
            Expr::Saddr(f),
            Expr::CtOriginalDaddr(f),
            Expr::L4Proto,
            Expr::CtOriginalDport,
        ],
        data: vec![Expr::Daddr(f), Expr::Dport],
        timeout: 60,
    };
    let proto = Match::Cmp {
        expr: Expr::L4Proto,
        value: Value::Proto(Protocol::Tcp),
        negate: false,
    };
    let e = encode_rule(&rule(vec![proto], vec![s]), f, &NoIntervals).insns;
    assert_eq!(
        e.last(),
        Some(&Insn::Dynset {
            sreg_key: 1,
            sreg_data: 2,
            set: "affinity".into(),
            timeout_ms: 60_000
        })
    );
}

#[test]
fn interval_concatenations_fix_protocol_byte_order() {
    let f = Family::Ipv4;
    let m = Match::Lookup {
        key: vec![Expr::Daddr(f), Expr::L4Proto, Expr::Dport, Expr::Saddr(f)],
        set: SetRef::Named("firewall-allow".into()),
        negate: true,
    };
    let e = encode_rule(&rule(vec![m], vec![]), f, &NoIntervals).insns;
    assert!(e.contains(&Insn::Byteorder {
        sreg: 9,
        dreg: 9,
        op: 1,
        len: 1,
        size: 2
    }));
}
