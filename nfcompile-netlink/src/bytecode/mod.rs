//! Model rules → nf_tables instructions, in pure Rust.
//!
//! This is the one place that knows how a typed [`Match`] or [`Statement`] becomes kernel
//! expressions and registers. It follows nft's own choices (register layout of
//! concatenations, prefix compares that load only the bytes they need, the byte-order fix-up
//! of protocol numbers in interval lookups) so that `nft list` prints a ruleset applied over
//! netlink exactly as one loaded from our text. Readback decodes the same instructions.

use nfcompile::model::{AddrSide, Expr, Family, Match, Rule, SetRef, Statement, Value, Verdict};

/// Kernel constants (linux/netfilter/nf_tables.h and friends) the encoder uses.
pub mod k {
    pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
    pub const NFT_META_MARK: u32 = 3;
    pub const NFT_META_IIFNAME: u32 = 6;
    pub const NFT_META_L4PROTO: u32 = 16;
    pub const NFT_CMP_EQ: u32 = 0;
    pub const NFT_CMP_NEQ: u32 = 1;
    pub const NFT_LOOKUP_F_INV: u32 = 1;
    pub const NF_DROP: i32 = 0;
    pub const NF_ACCEPT: i32 = 1;
    pub const NFT_JUMP: i32 = -3;
    pub const NFT_GOTO: i32 = -4;
    pub const NFT_RETURN: i32 = -5;
    pub const NFT_NG_INCREMENTAL: u32 = 0;
    pub const NFT_HASH_JENKINS: u32 = 0;
    pub const NFT_NG_RANDOM: u32 = 1;
    pub const NFT_NAT_DNAT: u32 = 1;
    pub const NFPROTO_IPV4: u32 = 2;
    pub const NFPROTO_IPV6: u32 = 10;
    pub const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
    pub const NFT_REJECT_ICMP_UNREACH: u32 = 0;
    pub const ICMP_PORT_UNREACH: u8 = 3;
    pub const ICMPV6_PORT_UNREACH: u8 = 4;
    pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const NFTA_FIB_F_SADDR: u32 = 1;
    pub const NFTA_FIB_F_DADDR: u32 = 2;
    pub const RTN_LOCAL: u32 = 2;
    pub const NFT_CT_STATUS: u32 = 2;
    pub const NFT_CT_PROTO_DST: u32 = 12;
    pub const NFT_CT_DST_IP: u32 = 20;
    pub const NFT_CT_DST_IP6: u32 = 22;
    pub const IP_CT_DIR_ORIGINAL: u8 = 0;
    pub const IPS_DST_NAT: u32 = 0x20;
    pub const NFT_DYNSET_OP_UPDATE: u32 = 1;
    pub const NFT_BYTEORDER_HTON: u32 = 1;
    pub const NFT_REG_VERDICT: u32 = 0;
    pub const NFT_REG_1: u32 = 1;
    pub const NFT_REG32_00: u32 = 8;
    pub const NFT_OBJECT_COUNTER: u32 = 1;
    pub const IFNAMSIZ: usize = 16;
}

/// One kernel expression with its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insn {
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `dreg` is `Some(0)` for verdict maps, `Some(r)` for data maps, `None` for sets.
    Lookup {
        sreg: u32,
        dreg: Option<u32>,
        set: SetName,
        invert: bool,
    },
    Immediate {
        verdict: i32,
        chain: Option<String>,
    },
    Numgen {
        dreg: u32,
        /// `NFT_NG_RANDOM` or `NFT_NG_INCREMENTAL`.
        kind: u32,
        modulus: u32,
        offset: u32,
    },
    Nat {
        family: u32,
        reg_addr: u32,
        reg_proto: u32,
    },
    Masq {
        flags: u32,
    },
    Reject {
        kind: u32,
        code: u8,
    },
    Fib {
        dreg: u32,
        flags: u32,
        result: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
        dir: Option<u8>,
    },
    Dynset {
        sreg_key: u32,
        sreg_data: u32,
        set: String,
        timeout_ms: u64,
    },
    Byteorder {
        sreg: u32,
        dreg: u32,
        op: u32,
        len: u32,
        size: u32,
    },
    /// Count in the object that map `set` names for the key in `sreg` (no element: break).
    ObjrefMap {
        sreg: u32,
        set: String,
    },
    /// `jhash(sreg, len, seed) % modulus + offset` (NFT_HASH_JENKINS).
    Hash {
        sreg: u32,
        dreg: u32,
        len: u32,
        modulus: u32,
        seed: u32,
        offset: u32,
    },
}

/// A set a lookup refers to: a named one, or the n-th anonymous set of the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetName {
    Named(String),
    Anonymous(usize),
}

/// The register that holds the 32-bit word `word` of the register file, named as nft names
/// it: 16-byte registers where a value starts on one, 32-bit registers elsewhere.
pub fn reg(word: u32) -> u32 {
    if word % 4 == 0 {
        k::NFT_REG_1 + word / 4
    } else {
        k::NFT_REG32_00 + word
    }
}

pub fn addr_len(f: Family) -> u32 {
    match f {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    }
}

fn words(len: u32) -> u32 {
    len.div_ceil(4)
}

/// The 16-byte register nft hashes from (32-bit words 8–11): past every concatenation that
/// holds a hash (an endpoint-map key, `daddr . l4proto . dport . slot`: at most 7 words), so
/// loading the hash input there never overwrites the key being built before it.
/// The concatenation loader checks this in debug builds; longer concatenations (the 10-word IPv6
/// affinity key) hold no hash.
pub const HASH_INPUT_REG: u32 = k::NFT_REG_1 + 2;

/// The first 32-bit word of [`HASH_INPUT_REG`].
const HASH_INPUT_WORD: u32 = 8;

/// 32-bit words of the register file (`NFT_REG32_00` … `NFT_REG32_15`).
const REGISTER_WORDS: u32 = 16;

/// Load one expression into `dreg`.
fn load(out: &mut Vec<Insn>, e: &Expr, dreg: u32) {
    if let Expr::JhashSaddr {
        family,
        modulus,
        offset,
    } = *e
    {
        out.push(Insn::Payload {
            base: k::NFT_PAYLOAD_NETWORK_HEADER,
            offset: saddr_offset(family),
            len: addr_len(family),
            dreg: HASH_INPUT_REG,
        });
        out.push(Insn::Hash {
            sreg: HASH_INPUT_REG,
            dreg,
            len: addr_len(family),
            modulus,
            seed: 0,
            offset,
        });
        return;
    }
    out.push(match *e {
        Expr::Saddr(f) => Insn::Payload {
            base: k::NFT_PAYLOAD_NETWORK_HEADER,
            offset: saddr_offset(f),
            len: addr_len(f),
            dreg,
        },
        Expr::Daddr(f) => Insn::Payload {
            base: k::NFT_PAYLOAD_NETWORK_HEADER,
            offset: saddr_offset(f) + addr_len(f),
            len: addr_len(f),
            dreg,
        },
        Expr::L4Proto => Insn::Meta {
            key: k::NFT_META_L4PROTO,
            dreg,
        },
        Expr::Dport => Insn::Payload {
            base: k::NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
            dreg,
        },
        Expr::CtOriginalDaddr(f) => Insn::Ct {
            key: match f {
                Family::Ipv4 => k::NFT_CT_DST_IP,
                Family::Ipv6 => k::NFT_CT_DST_IP6,
            },
            dreg,
            dir: Some(k::IP_CT_DIR_ORIGINAL),
        },
        Expr::CtOriginalDport => Insn::Ct {
            key: k::NFT_CT_PROTO_DST,
            dreg,
            dir: Some(k::IP_CT_DIR_ORIGINAL),
        },
        Expr::NumgenRandom { modulus, offset } => Insn::Numgen {
            dreg,
            kind: k::NFT_NG_RANDOM,
            modulus,
            offset,
        },
        Expr::NumgenInc { modulus, offset } => Insn::Numgen {
            dreg,
            kind: k::NFT_NG_INCREMENTAL,
            modulus,
            offset,
        },
        Expr::JhashSaddr { .. } => unreachable!("loaded above"),
    });
}

fn saddr_offset(f: Family) -> u32 {
    match f {
        Family::Ipv4 => 12,
        Family::Ipv6 => 8,
    }
}

/// Load a concatenation starting at 32-bit word `first`; returns the words it took.
/// `interval` marks a lookup in an interval set, where nft converts host-order protocol
/// numbers to network order.
fn load_concat(out: &mut Vec<Insn>, key: &[Expr], first: u32, interval: bool) -> u32 {
    let mut word = first;
    for e in key {
        debug_assert!(
            !matches!(e, Expr::JhashSaddr { .. }) || word < HASH_INPUT_WORD,
            "a hash at word {word} would be overwritten by its own input (words {HASH_INPUT_WORD}..)"
        );
        let r = reg(word);
        load(out, e, r);
        if interval && key.len() > 1 && *e == Expr::L4Proto {
            out.push(Insn::Byteorder {
                sreg: r,
                dreg: r,
                op: k::NFT_BYTEORDER_HTON,
                len: 1,
                size: 2,
            });
        }
        word += words(e.byte_len());
    }
    debug_assert!(
        word <= REGISTER_WORDS,
        "a concatenation of {} words from word {first} runs past the registers",
        word - first
    );
    word - first
}

/// Bytes of a constant as the kernel compares it.
pub fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Addr(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
        Value::Addr(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
        Value::Prefix(p) => match p.network() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        },
        Value::Proto(p) => vec![p.number()],
        Value::Port(p) => p.to_be_bytes().to_vec(),
        Value::Integer(i) => i.to_ne_bytes().to_vec(),
    }
}

/// What a rule needs besides its instructions: the anonymous sets it declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub insns: Vec<Insn>,
    /// Elements of each anonymous set (`SetName::Anonymous(i)`), and the key expression.
    pub anonymous: Vec<(Expr, Vec<Value>)>,
}

/// Facts about named sets the encoder needs: whether a lookup goes to an interval set.
pub trait SetInfo {
    fn is_interval(&self, name: &str) -> bool;
}

/// Encode one rule of a table of `family`.
pub fn encode_rule(rule: &Rule, family: Family, sets: &dyn SetInfo) -> Encoded {
    let mut enc = Encoded::default();
    for m in &rule.matches {
        encode_match(&mut enc, m, sets);
    }
    for s in &rule.statements {
        encode_statement(&mut enc.insns, s, family);
    }
    enc
}

fn encode_match(enc: &mut Encoded, m: &Match, sets: &dyn SetInfo) {
    let out = &mut enc.insns;
    let r1 = k::NFT_REG_1;
    match m {
        Match::Cmp {
            expr,
            value,
            negate,
        } => {
            let op = if *negate {
                k::NFT_CMP_NEQ
            } else {
                k::NFT_CMP_EQ
            };
            if let (Value::Prefix(p), Expr::Saddr(_) | Expr::Daddr(_)) = (value, expr) {
                let full = addr_len(family_of(expr)) * 8;
                let bits = u32::from(p.prefix());
                if bits < full && bits % 8 == 0 {
                    // Like nft: a byte-aligned prefix loads only the bytes it covers.
                    let Some(Insn::Payload {
                        base, offset, dreg, ..
                    }) = load_one(expr, r1)
                    else {
                        unreachable!("addresses are payload loads")
                    };
                    out.push(Insn::Payload {
                        base,
                        offset,
                        len: bits / 8,
                        dreg,
                    });
                    let mut data = value_bytes(value);
                    data.truncate((bits / 8) as usize);
                    out.push(Insn::Cmp { sreg: r1, op, data });
                    return;
                }
                if bits < full {
                    // Otherwise the whole address, masked.
                    load(out, expr, r1);
                    let len = (full / 8) as usize;
                    let mask: Vec<u8> = (0..len)
                        .map(|i| {
                            let covered = bits.saturating_sub(i as u32 * 8).min(8);
                            if covered == 0 {
                                0
                            } else {
                                0xffu8 << (8 - covered)
                            }
                        })
                        .collect();
                    out.push(Insn::Bitwise {
                        sreg: r1,
                        dreg: r1,
                        xor: vec![0; len],
                        mask,
                    });
                    out.push(Insn::Cmp {
                        sreg: r1,
                        op,
                        data: value_bytes(value),
                    });
                    return;
                }
            }
            load(out, expr, r1);
            out.push(Insn::Cmp {
                sreg: r1,
                op,
                data: value_bytes(value),
            });
        }
        Match::Lookup { key, set, negate } => {
            let (name, interval) = match set {
                SetRef::Named(n) => (SetName::Named(n.clone()), sets.is_interval(n)),
                SetRef::Anonymous(values) => {
                    let interval = values.iter().any(|v| matches!(v, Value::Prefix(_)));
                    enc.anonymous.push((key[0], values.clone()));
                    (SetName::Anonymous(enc.anonymous.len() - 1), interval)
                }
            };
            let out = &mut enc.insns;
            load_concat(out, key, 0, interval);
            out.push(Insn::Lookup {
                sreg: r1,
                dreg: None,
                set: name,
                invert: *negate,
            });
        }
        Match::MarkBitClear { mask, negate } => {
            out.push(Insn::Meta {
                key: k::NFT_META_MARK,
                dreg: r1,
            });
            out.push(Insn::Bitwise {
                sreg: r1,
                dreg: r1,
                mask: mask.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
            out.push(Insn::Cmp {
                sreg: r1,
                op: if *negate {
                    k::NFT_CMP_NEQ
                } else {
                    k::NFT_CMP_EQ
                },
                data: vec![0; 4],
            });
        }
        Match::FibLocal { side, negate } => {
            out.push(Insn::Fib {
                dreg: r1,
                flags: match side {
                    AddrSide::Source => k::NFTA_FIB_F_SADDR,
                    AddrSide::Destination => k::NFTA_FIB_F_DADDR,
                },
                result: k::NFT_FIB_RESULT_ADDRTYPE,
            });
            out.push(Insn::Cmp {
                sreg: r1,
                op: if *negate {
                    k::NFT_CMP_NEQ
                } else {
                    k::NFT_CMP_EQ
                },
                data: k::RTN_LOCAL.to_ne_bytes().to_vec(),
            });
        }
        Match::CtStatusDnat => {
            out.push(Insn::Ct {
                key: k::NFT_CT_STATUS,
                dreg: r1,
                dir: None,
            });
            out.push(Insn::Bitwise {
                sreg: r1,
                dreg: r1,
                mask: k::IPS_DST_NAT.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
            out.push(Insn::Cmp {
                sreg: r1,
                op: k::NFT_CMP_NEQ,
                data: vec![0; 4],
            });
        }
        Match::IifName {
            name,
            prefix,
            negate,
        } => {
            out.push(Insn::Meta {
                key: k::NFT_META_IIFNAME,
                dreg: r1,
            });
            let mut data = name.as_bytes().to_vec();
            if !prefix {
                data.resize(k::IFNAMSIZ, 0);
            }
            out.push(Insn::Cmp {
                sreg: r1,
                op: if *negate {
                    k::NFT_CMP_NEQ
                } else {
                    k::NFT_CMP_EQ
                },
                data,
            });
        }
    }
}

fn load_one(e: &Expr, dreg: u32) -> Option<Insn> {
    let mut v = Vec::new();
    load(&mut v, e, dreg);
    v.pop()
}

fn family_of(e: &Expr) -> Family {
    match e {
        Expr::Saddr(f) | Expr::Daddr(f) | Expr::CtOriginalDaddr(f) => *f,
        _ => Family::Ipv4,
    }
}

fn encode_statement(out: &mut Vec<Insn>, s: &Statement, family: Family) {
    let r1 = k::NFT_REG_1;
    match s {
        Statement::Verdict(v) => out.push(verdict_insn(v)),
        Statement::VerdictMap { key, map } => {
            load_concat(out, key, 0, false);
            out.push(Insn::Lookup {
                sreg: r1,
                dreg: Some(k::NFT_REG_VERDICT),
                set: SetName::Named(map.clone()),
                invert: false,
            });
        }
        Statement::CounterMap { key, map } => {
            load_concat(out, key, 0, false);
            out.push(Insn::ObjrefMap {
                sreg: r1,
                set: map.clone(),
            });
        }
        Statement::MarkOr(bits) => mark_set(out, !bits, *bits),
        Statement::MarkXor(bits) => mark_set(out, u32::MAX, *bits),
        Statement::DnatMap { family, key, map } => {
            load_concat(out, key, 0, false);
            out.push(Insn::Lookup {
                sreg: r1,
                dreg: Some(r1),
                set: SetName::Named(map.clone()),
                invert: false,
            });
            out.push(Insn::Nat {
                family: nfproto(*family),
                reg_addr: r1,
                reg_proto: reg(words(addr_len(*family))),
            });
        }
        Statement::UpdateMap {
            set,
            key,
            data,
            timeout,
        } => {
            let key_words = load_concat(out, key, 0, false);
            // The data starts on the next 16-byte register, as nft puts it, unless that would
            // run past the last register: an IPv6 key (40 bytes) and its endpoint (20 bytes)
            // fill 15 of the 16 32-bit registers only when packed.
            let data_words: u32 = data.iter().map(|e| words(e.byte_len())).sum();
            let aligned = key_words.div_ceil(4) * 4;
            let data_first = if aligned + data_words <= REGISTER_WORDS {
                aligned
            } else {
                key_words
            };
            load_concat(out, data, data_first, false);
            out.push(Insn::Dynset {
                sreg_key: r1,
                sreg_data: reg(data_first),
                set: set.clone(),
                timeout_ms: u64::from(*timeout) * 1000,
            });
        }
        Statement::Masquerade { fully_random } => out.push(Insn::Masq {
            flags: if *fully_random {
                k::NF_NAT_RANGE_PROTO_RANDOM_FULLY
            } else {
                0
            },
        }),
        Statement::Reject => out.push(Insn::Reject {
            kind: k::NFT_REJECT_ICMP_UNREACH,
            code: match family {
                Family::Ipv4 => k::ICMP_PORT_UNREACH,
                Family::Ipv6 => k::ICMPV6_PORT_UNREACH,
            },
        }),
    }
}

fn mark_set(out: &mut Vec<Insn>, mask: u32, xor: u32) {
    let r1 = k::NFT_REG_1;
    out.push(Insn::Meta {
        key: k::NFT_META_MARK,
        dreg: r1,
    });
    out.push(Insn::Bitwise {
        sreg: r1,
        dreg: r1,
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    });
    out.push(Insn::MetaSet {
        key: k::NFT_META_MARK,
        sreg: r1,
    });
}

pub fn nfproto(f: Family) -> u32 {
    match f {
        Family::Ipv4 => k::NFPROTO_IPV4,
        Family::Ipv6 => k::NFPROTO_IPV6,
    }
}

pub fn verdict_insn(v: &Verdict) -> Insn {
    let (verdict, chain) = match v {
        Verdict::Accept => (k::NF_ACCEPT, None),
        Verdict::Drop => (k::NF_DROP, None),
        Verdict::Return => (k::NFT_RETURN, None),
        Verdict::Jump(c) => (k::NFT_JUMP, Some(c.clone())),
        Verdict::Goto(c) => (k::NFT_GOTO, Some(c.clone())),
    };
    Insn::Immediate { verdict, chain }
}

#[cfg(test)]
mod tests;
