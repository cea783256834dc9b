//! The inverse of [`crate::bytecode`] and [`crate::sets`]: kernel instructions, element bytes
//! and userdata back into the model, in pure Rust.
//!
//! Decoding tracks what each register holds, the way the kernel would, and turns a consumer
//! (compare, lookup, NAT, dynset, mark set) into the typed match or statement it came from.
//! Anything the lowering never emits is an error naming the instruction: readback never
//! guesses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use nfcompile::model::*;

use crate::bytecode::{k, Insn, SetName};
use crate::sets::{flags, ElemData, ElemSpec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// What a register holds while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    Expr(Expr),
    /// An address loaded only partly (`len` bytes), for a byte-aligned prefix compare.
    PartialAddr {
        expr: Expr,
        len: u32,
    },
    /// An address or mark after `& mask`.
    Masked {
        expr: Held2,
        mask: Vec<u8>,
    },
    Mark,
    CtStatus,
    Fib(AddrSide),
    IifName,
    /// The result of a data-map lookup (DNAT address/port).
    MapResult(String, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Held2 {
    Expr(Expr),
    Mark,
    CtStatus,
}

fn word_of(reg: u32) -> Result<u32, DecodeError> {
    match reg {
        1..=4 => Ok((reg - 1) * 4),
        8..=23 => Ok(reg - 8),
        _ => err(format!("unexpected register {reg}")),
    }
}

fn payload_expr(
    base: u32,
    offset: u32,
    len: u32,
    family: Family,
) -> Result<(Expr, u32), DecodeError> {
    let alen = crate::bytecode::addr_len(family);
    let (saddr, daddr) = match family {
        Family::Ipv4 => (12, 16),
        Family::Ipv6 => (8, 24),
    };
    match (base, offset) {
        (k::NFT_PAYLOAD_NETWORK_HEADER, o) if o == saddr && len <= alen => {
            Ok((Expr::Saddr(family), len))
        }
        (k::NFT_PAYLOAD_NETWORK_HEADER, o) if o == daddr && len <= alen => {
            Ok((Expr::Daddr(family), len))
        }
        (k::NFT_PAYLOAD_TRANSPORT_HEADER, 2) if len == 2 => Ok((Expr::Dport, 2)),
        _ => err(format!(
            "unexpected payload load base {base} offset {offset} len {len}"
        )),
    }
}

/// Decode one rule's instructions. `anonymous` resolves anonymous-set lookups to elements.
pub fn decode_rule(
    insns: &[Insn],
    family: Family,
    anonymous: &dyn Fn(&SetName) -> Option<Vec<Value>>,
) -> Result<(Vec<Match>, Vec<Statement>), DecodeError> {
    let mut regs: BTreeMap<u32, Held> = BTreeMap::new();
    let mut matches = Vec::new();
    let mut statements = Vec::new();
    let mut i = 0;
    // The concatenation starting at `word`, as loaded, in order.
    // Stops at `end` (a dynset's data follows its key).
    let concat =
        |regs: &BTreeMap<u32, Held>, first: u32, end: u32| -> Result<Vec<Expr>, DecodeError> {
            let mut out = Vec::new();
            let mut w = first;
            while let (true, Some(Held::Expr(e))) = (w < end, regs.get(&w)) {
                out.push(*e);
                w += e.byte_len().div_ceil(4);
            }
            if out.is_empty() {
                return err(format!("nothing loaded at register word {first}"));
            }
            Ok(out)
        };
    while i < insns.len() {
        match &insns[i] {
            Insn::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let (expr, loaded) = payload_expr(*base, *offset, *len, family)?;
                let full = expr.byte_len();
                let held = if loaded < full {
                    Held::PartialAddr { expr, len: loaded }
                } else {
                    Held::Expr(expr)
                };
                regs.insert(word_of(*dreg)?, held);
            }
            Insn::Hash {
                sreg,
                dreg,
                len,
                modulus,
                seed,
                offset,
            } => {
                let input = regs.remove(&word_of(*sreg)?);
                let family = match input {
                    Some(Held::Expr(Expr::Saddr(f))) if *len == crate::bytecode::addr_len(f) => f,
                    other => return err(format!("jhash of {other:?}, not a source address")),
                };
                if *seed != 0 {
                    return err(format!("jhash with seed {seed:#x}"));
                }
                regs.insert(
                    word_of(*dreg)?,
                    Held::Expr(Expr::JhashSaddr {
                        family,
                        modulus: *modulus,
                        offset: *offset,
                    }),
                );
            }
            Insn::Meta { key, dreg } => {
                let held = match *key {
                    k::NFT_META_L4PROTO => Held::Expr(Expr::L4Proto),
                    k::NFT_META_MARK => Held::Mark,
                    k::NFT_META_IIFNAME => Held::IifName,
                    other => return err(format!("unexpected meta key {other}")),
                };
                regs.insert(word_of(*dreg)?, held);
            }
            Insn::Ct { key, dreg, dir } => {
                let held = match (*key, dir) {
                    (k::NFT_CT_STATUS, None) => Held::CtStatus,
                    (k::NFT_CT_DST_IP, Some(0)) => Held::Expr(Expr::CtOriginalDaddr(Family::Ipv4)),
                    (k::NFT_CT_DST_IP6, Some(0)) => Held::Expr(Expr::CtOriginalDaddr(Family::Ipv6)),
                    (k::NFT_CT_PROTO_DST, Some(0)) => Held::Expr(Expr::CtOriginalDport),
                    (key, dir) => return err(format!("unexpected ct key {key} dir {dir:?}")),
                };
                regs.insert(word_of(*dreg)?, held);
            }
            Insn::Numgen {
                dreg,
                kind,
                modulus,
                offset,
            } => {
                let (modulus, offset) = (*modulus, *offset);
                let expr = match *kind {
                    k::NFT_NG_RANDOM => Expr::NumgenRandom { modulus, offset },
                    k::NFT_NG_INCREMENTAL => Expr::NumgenInc { modulus, offset },
                    other => return err(format!("unexpected numgen type {other}")),
                };
                regs.insert(word_of(*dreg)?, Held::Expr(expr));
            }
            Insn::Fib {
                dreg,
                flags,
                result,
            } => {
                let side = match (*flags, *result) {
                    (k::NFTA_FIB_F_SADDR, k::NFT_FIB_RESULT_ADDRTYPE) => AddrSide::Source,
                    (k::NFTA_FIB_F_DADDR, k::NFT_FIB_RESULT_ADDRTYPE) => AddrSide::Destination,
                    _ => return err(format!("unexpected fib flags {flags} result {result}")),
                };
                regs.insert(word_of(*dreg)?, Held::Fib(side));
            }
            Insn::Byteorder { .. } => {} // nft's fix-up for interval lookups; implied by the set
            Insn::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                let w = word_of(*sreg)?;
                let held = regs
                    .remove(&w)
                    .ok_or_else(|| DecodeError("bitwise on an empty register".into()))?;
                // Mark set: meta load mark; bitwise; meta set mark.
                if let (
                    Held::Mark,
                    Some(Insn::MetaSet {
                        key: k::NFT_META_MARK,
                        ..
                    }),
                ) = (&held, insns.get(i + 1))
                {
                    let mask = u32::from_ne_bytes(four(mask)?);
                    let xor = u32::from_ne_bytes(four(xor)?);
                    statements.push(if mask == u32::MAX {
                        Statement::MarkXor(xor)
                    } else if mask == !xor {
                        Statement::MarkOr(xor)
                    } else {
                        return err(format!("unexpected mark update & {mask:#x} ^ {xor:#x}"));
                    });
                    i += 2;
                    continue;
                }
                if xor.iter().any(|b| *b != 0) {
                    return err("unexpected bitwise xor");
                }
                let inner = match held {
                    Held::Expr(e) => Held2::Expr(e),
                    Held::Mark => Held2::Mark,
                    Held::CtStatus => Held2::CtStatus,
                    other => return err(format!("unexpected bitwise on {other:?}")),
                };
                regs.insert(
                    word_of(*dreg)?,
                    Held::Masked {
                        expr: inner,
                        mask: mask.clone(),
                    },
                );
            }
            Insn::Cmp { sreg, op, data } => {
                let negate = match *op {
                    k::NFT_CMP_EQ => false,
                    k::NFT_CMP_NEQ => true,
                    other => return err(format!("unexpected cmp op {other}")),
                };
                let held = regs
                    .remove(&word_of(*sreg)?)
                    .ok_or_else(|| DecodeError("cmp on an empty register".into()))?;
                matches.push(decode_cmp(held, negate, data)?);
            }
            Insn::Lookup {
                sreg,
                dreg,
                set,
                invert,
            } => {
                let key = concat(&regs, word_of(*sreg)?, u32::MAX)?;
                regs.clear();
                match (dreg, set) {
                    (None, SetName::Named(n)) => matches.push(Match::Lookup {
                        key,
                        set: SetRef::Named(n.clone()),
                        negate: *invert,
                    }),
                    (None, anon @ SetName::Anonymous(_)) => {
                        let values = anonymous(anon).ok_or_else(|| {
                            DecodeError("lookup in an unknown anonymous set".into())
                        })?;
                        matches.push(Match::Lookup {
                            key,
                            set: SetRef::Anonymous(values),
                            negate: *invert,
                        })
                    }
                    (Some(k::NFT_REG_VERDICT), SetName::Named(map)) => {
                        statements.push(Statement::VerdictMap {
                            key,
                            map: map.clone(),
                        })
                    }
                    (Some(d), SetName::Named(map)) => {
                        regs.insert(word_of(*d)?, Held::MapResult(map.clone(), key));
                    }
                    _ => return err("unexpected lookup"),
                }
            }
            Insn::Nat {
                family: f,
                reg_addr,
                reg_proto,
            } => {
                let fam = match *f {
                    k::NFPROTO_IPV4 => Family::Ipv4,
                    k::NFPROTO_IPV6 => Family::Ipv6,
                    other => return err(format!("unexpected nat family {other}")),
                };
                let expect_proto = crate::bytecode::reg(crate::bytecode::addr_len(fam).div_ceil(4));
                match regs.remove(&word_of(*reg_addr)?) {
                    Some(Held::MapResult(map, key)) if *reg_proto == expect_proto => statements
                        .push(Statement::DnatMap {
                            family: fam,
                            key,
                            map,
                        }),
                    other => return err(format!("unexpected dnat source {other:?}")),
                }
            }
            Insn::Dynset {
                sreg_key,
                sreg_data,
                set,
                timeout_ms,
            } => {
                let key = concat(&regs, word_of(*sreg_key)?, word_of(*sreg_data)?)?;
                let data = concat(&regs, word_of(*sreg_data)?, u32::MAX)?;
                regs.clear();
                if timeout_ms % 1000 != 0 {
                    return err(format!("unexpected dynset timeout {timeout_ms} ms"));
                }
                statements.push(Statement::UpdateMap {
                    set: set.clone(),
                    key,
                    data,
                    timeout: (timeout_ms / 1000) as u32,
                });
            }
            Insn::ObjrefMap { sreg, set } => {
                let key = concat(&regs, word_of(*sreg)?, u32::MAX)?;
                regs.clear();
                statements.push(Statement::CounterMap {
                    key,
                    map: set.clone(),
                });
            }
            Insn::Immediate { verdict, chain } => {
                statements.push(Statement::Verdict(decode_verdict(*verdict, chain.clone())?))
            }
            Insn::Masq { flags } => statements.push(Statement::Masquerade {
                fully_random: flags & k::NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0,
            }),
            Insn::Reject { .. } => statements.push(Statement::Reject),
            Insn::MetaSet { .. } => return err("meta set without a mark computation"),
        }
        i += 1;
    }
    Ok((matches, statements))
}

fn four(b: &[u8]) -> Result<[u8; 4], DecodeError> {
    b.try_into()
        .map_err(|_| DecodeError(format!("expected 4 bytes, got {}", b.len())))
}

fn decode_cmp(held: Held, negate: bool, data: &[u8]) -> Result<Match, DecodeError> {
    Ok(match held {
        Held::Masked {
            expr: Held2::Mark,
            mask,
        } if data.iter().all(|b| *b == 0) => Match::MarkBitClear {
            mask: u32::from_ne_bytes(four(&mask)?),
            negate,
        },
        Held::Masked {
            expr: Held2::CtStatus,
            mask,
        } if u32::from_ne_bytes(four(&mask)?) == k::IPS_DST_NAT
            && negate
            && data.iter().all(|b| *b == 0) =>
        {
            Match::CtStatusDnat
        }
        Held::Fib(side) if data == k::RTN_LOCAL.to_ne_bytes() => Match::FibLocal { side, negate },
        Held::IifName => {
            let prefix = data.len() < k::IFNAMSIZ;
            let name = String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_string();
            Match::IifName {
                name,
                prefix,
                negate,
            }
        }
        Held::PartialAddr { expr, len } => Match::Cmp {
            expr,
            value: Value::Prefix(prefix_from(data, len * 8, &expr)?),
            negate,
        },
        Held::Masked {
            expr: Held2::Expr(expr),
            mask,
        } => {
            let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
            Match::Cmp {
                expr,
                value: Value::Prefix(prefix_from(data, bits, &expr)?),
                negate,
            }
        }
        Held::Expr(Expr::L4Proto) => Match::Cmp {
            expr: Expr::L4Proto,
            value: Value::Proto(proto(data.first().copied().unwrap_or(0))?),
            negate,
        },
        Held::Expr(expr @ (Expr::Saddr(_) | Expr::Daddr(_))) => Match::Cmp {
            expr,
            value: Value::Addr(addr(data)?),
            negate,
        },
        other => return err(format!("unexpected compare of {other:?}")),
    })
}

fn prefix_from(data: &[u8], bits: u32, expr: &Expr) -> Result<IpNetwork, DecodeError> {
    let len = match expr {
        Expr::Saddr(f) | Expr::Daddr(f) => crate::bytecode::addr_len(*f) as usize,
        _ => return err("prefix on a non-address"),
    };
    let mut full = data.to_vec();
    full.resize(len, 0);
    IpNetwork::new(addr(&full)?, bits as u8).map_err(|e| DecodeError(e.to_string()))
}

pub fn addr(b: &[u8]) -> Result<IpAddr, DecodeError> {
    match b.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b).expect("4"),
        ))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(b).expect("16"),
        ))),
        n => err(format!("an address of {n} bytes")),
    }
}

fn proto(n: u8) -> Result<Protocol, DecodeError> {
    Protocol::ALL
        .into_iter()
        .find(|p| p.number() == n)
        .ok_or_else(|| DecodeError(format!("unexpected protocol number {n}")))
}

pub fn decode_verdict(code: i32, chain: Option<String>) -> Result<Verdict, DecodeError> {
    Ok(match (code, chain) {
        (k::NF_ACCEPT, None) => Verdict::Accept,
        (k::NF_DROP, None) => Verdict::Drop,
        (k::NFT_RETURN, None) => Verdict::Return,
        (k::NFT_JUMP, Some(c)) => Verdict::Jump(c),
        (k::NFT_GOTO, Some(c)) => Verdict::Goto(c),
        (code, chain) => return err(format!("unexpected verdict {code} {chain:?}")),
    })
}

/// Key or data fields from nft's folded type id (six bits per field).
pub fn fields_of_type(mut t: u32) -> Result<Vec<FieldType>, DecodeError> {
    let mut out = Vec::new();
    while t != 0 {
        out.push(match t & 63 {
            4 => FieldType::Slot,
            7 => FieldType::Ipv4Addr,
            8 => FieldType::Ipv6Addr,
            12 => FieldType::InetProto,
            13 => FieldType::InetService,
            other => return err(format!("unexpected set field type {other}")),
        });
        t >>= 6;
    }
    out.reverse();
    Ok(out)
}

fn field_value(f: FieldType, b: &[u8]) -> Result<Value, DecodeError> {
    Ok(match f {
        FieldType::Ipv4Addr => Value::Addr(addr(&b[..4])?),
        FieldType::Ipv6Addr => Value::Addr(addr(&b[..16])?),
        FieldType::InetProto => Value::Proto(proto(b[0])?),
        FieldType::InetService => Value::Port(u16::from_be_bytes([b[0], b[1]])),
        FieldType::Slot => Value::Integer(u32::from_ne_bytes(four(&b[..4])?)),
    })
}

fn field_len(f: FieldType) -> usize {
    match f {
        FieldType::Ipv4Addr | FieldType::Slot => 4,
        FieldType::Ipv6Addr => 16,
        FieldType::InetProto => 1,
        FieldType::InetService => 2,
    }
}

/// Values of a key or data blob laid out as `fields`.
pub fn values(fields: &[FieldType], b: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let concat = fields.len() > 1;
    let mut out = Vec::new();
    let mut at = 0;
    for f in fields {
        let len = field_len(*f);
        if b.len() < at + len {
            return err(format!("element of {} bytes is too short", b.len()));
        }
        out.push(field_value(*f, &b[at..])?);
        at += if concat { len.div_ceil(4) * 4 } else { len };
    }
    Ok(out)
}

/// The CIDR covering exactly `start..=end`, if there is one.
pub fn range_to_prefix(start: IpAddr, end: IpAddr) -> Result<IpNetwork, DecodeError> {
    let (s, e, width) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return err("range across families"),
    };
    let size = e.wrapping_sub(s).wrapping_add(1);
    let host_bits = if size == 0 {
        128
    } else {
        size.trailing_zeros()
    };
    let ok = (size == 0 || size.is_power_of_two())
        && (host_bits >= 128 || s & ((1u128 << host_bits) - 1) == 0);
    if !ok {
        return err(format!("range {start}-{end} is not a CIDR"));
    }
    IpNetwork::new(start, (width - host_bits.min(width)) as u8)
        .map_err(|e| DecodeError(e.to_string()))
}

/// Elements as the model holds them, from what the kernel dumped.
pub fn elements(
    set_flags: u32,
    key: &[FieldType],
    data: Option<&SetData>,
    raw: &[ElemSpec],
) -> Result<Vec<Element>, DecodeError> {
    let interval = set_flags & flags::NFT_SET_INTERVAL != 0;
    if interval && key.len() == 1 {
        return interval_elements(raw);
    }
    raw.iter()
        .map(|e| {
            let mut k = values(key, &e.key)?;
            if let Some(end) = &e.key_end {
                let end = values(key, end)?;
                for (v, last) in k.iter_mut().zip(end) {
                    match (*v, last) {
                        (Value::Addr(s), Value::Addr(l)) if s != l => {
                            *v = Value::Prefix(range_to_prefix(s, l)?)
                        }
                        (a, b) if a != b => {
                            return err("a range over a field that is not an address")
                        }
                        _ => {}
                    }
                }
            }
            let data = match (&e.data, data) {
                (ElemData::None, _) => None,
                (ElemData::Verdict(code, chain), _) => {
                    Some(ElementData::Verdict(decode_verdict(*code, chain.clone())?))
                }
                (ElemData::Bytes(b), Some(SetData::Fields(f))) => {
                    Some(ElementData::Values(values(f, b)?))
                }
                (ElemData::Bytes(_), _) => return err("data in an element of a set without data"),
                (ElemData::Object(name), Some(SetData::Counter)) => {
                    Some(ElementData::Counter(name.clone()))
                }
                (ElemData::Object(_), _) => {
                    return err("an object reference in a set that is not a counter map")
                }
            };
            Ok(Element {
                key: k,
                data,
                comment: e
                    .userdata
                    .as_deref()
                    .and_then(|u| udata_str(u, crate::sets::UD_ELEM_COMMENT)),
            })
        })
        .collect()
}

fn interval_elements(raw: &[ElemSpec]) -> Result<Vec<Element>, DecodeError> {
    let mut points: Vec<(IpAddr, bool)> = raw
        .iter()
        .map(|e| {
            Ok((
                addr(&e.key)?,
                e.flags & flags::NFT_SET_ELEM_INTERVAL_END != 0,
            ))
        })
        .collect::<Result<_, DecodeError>>()?;
    // Ends before starts at the same address: adjacent ranges.
    points.sort_by_key(|(a, end)| (*a, !*end));
    let mut out = Vec::new();
    let mut open: Option<IpAddr> = None;
    for (a, is_end) in points {
        match (is_end, open) {
            (false, None) => open = Some(a),
            (true, Some(start)) => {
                let last =
                    prev_addr(a).ok_or_else(|| DecodeError("interval end at zero".into()))?;
                out.push(range_to_prefix(start, last)?);
                open = None;
            }
            (true, None) => {} // the leading end at zero
            (false, Some(_)) => return err("two interval starts in a row"),
        }
    }
    if let Some(start) = open {
        let last = match start {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        };
        out.push(range_to_prefix(start, last)?);
    }
    Ok(out
        .into_iter()
        .map(|p| Element {
            key: vec![Value::Prefix(p)],
            data: None,
            comment: None,
        })
        .collect())
}

fn prev_addr(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) => u32::from(v).checked_sub(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_sub(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// A NUL-terminated string TLV of type `t` in libnftnl userdata.
pub fn udata_str(u: &[u8], t: u8) -> Option<String> {
    let mut at = 0;
    while at + 2 <= u.len() {
        let (ty, len) = (u[at], u[at + 1] as usize);
        let v = u.get(at + 2..at + 2 + len)?;
        if ty == t {
            return Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
        at += 2 + len;
    }
    None
}

/// Encode every rule and set of `ruleset` as the kernel would receive it and decode it back:
/// `Ok(rules checked)` when everything comes back as it was, else what differed. Pure Rust, no
/// kernel; the readback path's inverse property, used by unit tests and a fuzz target.
pub fn round_trip(ruleset: &Ruleset) -> Result<usize, String> {
    struct Intervals<'t>(&'t Table);
    impl crate::bytecode::SetInfo for Intervals<'_> {
        fn is_interval(&self, name: &str) -> bool {
            self.0
                .set(name)
                .is_some_and(|s| s.flags.contains(SetFlags::INTERVAL))
        }
    }
    let mut rules = 0;
    for t in &ruleset.tables {
        for ch in &t.chains {
            for r in &ch.rules {
                let enc = crate::bytecode::encode_rule(r, t.family, &Intervals(t));
                let anon = |s: &SetName| match s {
                    SetName::Anonymous(i) => enc.anonymous.get(*i).map(|(_, v)| v.clone()),
                    _ => None,
                };
                let (m, st) = decode_rule(&enc.insns, t.family, &anon)
                    .map_err(|e| format!("chain {}: {r:?}: {e}", ch.name))?;
                if (&m, &st) != (&r.matches, &r.statements) {
                    return Err(format!(
                        "chain {}: {r:?} came back as {m:?} {st:?}",
                        ch.name
                    ));
                }
                rules += 1;
            }
        }
        for set in &t.sets {
            let spec = crate::sets::set_spec(set);
            let raw = crate::sets::elements(set);
            let back = elements(spec.flags, &set.key, set.data.as_ref(), &raw)
                .map_err(|e| format!("set {}: {e}", set.name))?;
            if back != set.elements {
                return Err(format!("set {}: elements came back different", set.name));
            }
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule and element of scenario-like and random clusters decodes back to itself.
    #[test]
    fn rules_and_elements_round_trip() {
        let mut clusters = vec![nfcompile::synth::cluster(nfcompile::synth::Shape {
            services: 120,
            endpoints: 3,
            nodes: 4,
        })];
        let mut c = clusters[0].clone();
        c.config.detect_local = nfcompile::ir::DetectLocal::InterfaceNamePrefix("veth".into());
        c.config.masquerade_bit = 3;
        clusters.push(c);
        let mut c = clusters[0].clone();
        c.config.cluster_cidrs = vec![
            "10.128.0.0/9".parse().unwrap(),
            "10.0.0.0/16".parse().unwrap(),
        ];
        c.config.node_port_addresses = vec![nfcompile::ir::NodePortAddresses::Cidr(
            "0.0.0.0/0".parse().unwrap(),
        )];
        clusters.push(c);
        let mut c = clusters[0].clone();
        c.config.counters = true;
        clusters.push(c);
        clusters.extend((0..20).map(|seed| nfcompile::synth::random(seed, 12)));
        let mut rules = 0;
        for cluster in clusters {
            rules += round_trip(&nfcompile::compile(&cluster).unwrap()).unwrap();
        }
        assert!(rules > 50);
    }

    #[test]
    fn ranges_become_prefixes_only_when_they_are_cidrs() {
        let p = range_to_prefix(
            "10.43.0.0".parse().unwrap(),
            "10.43.255.255".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(p.to_string(), "10.43.0.0/16");
        assert!(range_to_prefix("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()).is_err());
        let all = range_to_prefix(
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(all.prefix(), 0);
    }
}
