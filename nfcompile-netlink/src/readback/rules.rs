//! Rules: libnftnl expressions back to [`crate::bytecode`] instructions (the counterpart of
//! `encode::rules`), and the anonymous sets they refer to.

use super::*;

/// The anonymous sets a rule looks up, in the order its lookups name them.
pub(super) fn anon_order(
    r: *mut sys::nftnl_rule,
    anonymous: &HashMap<String, Vec<Value>>,
) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for_each_expr(r, |e, kind| unsafe {
        if kind == "lookup" {
            let set = string(sys::nftnl_expr_get_str(
                e,
                sys::NFTNL_EXPR_LOOKUP_SET as u16,
            ));
            if let Some(v) = anonymous.get(&set) {
                out.push(v.clone());
            }
        }
    });
    out
}

pub(super) fn for_each_expr(
    r: *mut sys::nftnl_rule,
    mut f: impl FnMut(*mut sys::nftnl_expr, &str),
) {
    unsafe {
        let it = sys::nftnl_expr_iter_create(r);
        loop {
            let e = sys::nftnl_expr_iter_next(it);
            if e.is_null() {
                break;
            }
            let kind = string(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16));
            f(e, &kind);
        }
        sys::nftnl_expr_iter_destroy(it);
    }
}

/// A rule's expressions as instructions.
pub(super) fn insns_of(
    r: *mut sys::nftnl_rule,
    anonymous: &HashMap<String, Vec<Value>>,
) -> Result<Vec<Insn>, DecodeError> {
    let mut out = Vec::new();
    let mut problem = None;
    let mut anon_index = 0;
    for_each_expr(r, |e, kind| unsafe {
        let u32_ = |a: u32| sys::nftnl_expr_get_u32(e, a as u16);
        let is = |a: u32| sys::nftnl_expr_is_set(e, a as u16);
        let data =
            |a: u32| udata(is(a), |len| sys::nftnl_expr_get(e, a as u16, len)).unwrap_or_default();
        let str_ = |a: u32| string(sys::nftnl_expr_get_str(e, a as u16));
        let insn = match kind {
            "payload" => Insn::Payload {
                base: u32_(sys::NFTNL_EXPR_PAYLOAD_BASE),
                offset: u32_(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
                len: u32_(sys::NFTNL_EXPR_PAYLOAD_LEN),
                dreg: u32_(sys::NFTNL_EXPR_PAYLOAD_DREG),
            },
            "meta" if is(sys::NFTNL_EXPR_META_DREG) => Insn::Meta {
                key: u32_(sys::NFTNL_EXPR_META_KEY),
                dreg: u32_(sys::NFTNL_EXPR_META_DREG),
            },
            "meta" => Insn::MetaSet {
                key: u32_(sys::NFTNL_EXPR_META_KEY),
                sreg: u32_(sys::NFTNL_EXPR_META_SREG),
            },
            "cmp" => Insn::Cmp {
                sreg: u32_(sys::NFTNL_EXPR_CMP_SREG),
                op: u32_(sys::NFTNL_EXPR_CMP_OP),
                data: data(sys::NFTNL_EXPR_CMP_DATA),
            },
            "bitwise" => Insn::Bitwise {
                sreg: u32_(sys::NFTNL_EXPR_BITWISE_SREG),
                dreg: u32_(sys::NFTNL_EXPR_BITWISE_DREG),
                mask: data(sys::NFTNL_EXPR_BITWISE_MASK),
                xor: data(sys::NFTNL_EXPR_BITWISE_XOR),
            },
            "lookup" => {
                let name = str_(sys::NFTNL_EXPR_LOOKUP_SET);
                let set = if anonymous.contains_key(&name) {
                    anon_index += 1;
                    SetName::Anonymous(anon_index - 1)
                } else {
                    SetName::Named(name)
                };
                Insn::Lookup {
                    sreg: u32_(sys::NFTNL_EXPR_LOOKUP_SREG),
                    dreg: is(sys::NFTNL_EXPR_LOOKUP_DREG)
                        .then(|| u32_(sys::NFTNL_EXPR_LOOKUP_DREG)),
                    set,
                    invert: is(sys::NFTNL_EXPR_LOOKUP_FLAGS)
                        && u32_(sys::NFTNL_EXPR_LOOKUP_FLAGS) & 1 != 0,
                }
            }
            "immediate" => Insn::Immediate {
                verdict: u32_(sys::NFTNL_EXPR_IMM_VERDICT) as i32,
                chain: is(sys::NFTNL_EXPR_IMM_CHAIN).then(|| str_(sys::NFTNL_EXPR_IMM_CHAIN)),
            },
            "hash" => Insn::Hash {
                sreg: u32_(sys::NFTNL_EXPR_HASH_SREG),
                dreg: u32_(sys::NFTNL_EXPR_HASH_DREG),
                len: u32_(sys::NFTNL_EXPR_HASH_LEN),
                modulus: u32_(sys::NFTNL_EXPR_HASH_MODULUS),
                seed: u32_(sys::NFTNL_EXPR_HASH_SEED),
                offset: if is(sys::NFTNL_EXPR_HASH_OFFSET) {
                    u32_(sys::NFTNL_EXPR_HASH_OFFSET)
                } else {
                    0
                },
            },
            "numgen" => Insn::Numgen {
                dreg: u32_(sys::NFTNL_EXPR_NG_DREG),
                kind: u32_(sys::NFTNL_EXPR_NG_TYPE),
                modulus: u32_(sys::NFTNL_EXPR_NG_MODULUS),
                offset: if is(sys::NFTNL_EXPR_NG_OFFSET) {
                    u32_(sys::NFTNL_EXPR_NG_OFFSET)
                } else {
                    0
                },
            },
            "nat" => Insn::Nat {
                family: u32_(sys::NFTNL_EXPR_NAT_FAMILY),
                reg_addr: u32_(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN),
                reg_proto: u32_(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN),
            },
            "masq" => Insn::Masq {
                flags: if is(sys::NFTNL_EXPR_MASQ_FLAGS) {
                    u32_(sys::NFTNL_EXPR_MASQ_FLAGS)
                } else {
                    0
                },
            },
            "reject" => Insn::Reject {
                kind: u32_(sys::NFTNL_EXPR_REJECT_TYPE),
                code: sys::nftnl_expr_get_u8(e, sys::NFTNL_EXPR_REJECT_CODE as u16),
            },
            "fib" => Insn::Fib {
                dreg: u32_(sys::NFTNL_EXPR_FIB_DREG),
                flags: u32_(sys::NFTNL_EXPR_FIB_FLAGS),
                result: u32_(sys::NFTNL_EXPR_FIB_RESULT),
            },
            "ct" => Insn::Ct {
                key: u32_(sys::NFTNL_EXPR_CT_KEY),
                dreg: u32_(sys::NFTNL_EXPR_CT_DREG),
                dir: is(sys::NFTNL_EXPR_CT_DIR)
                    .then(|| sys::nftnl_expr_get_u8(e, sys::NFTNL_EXPR_CT_DIR as u16)),
            },
            "objref" if is(sys::NFTNL_EXPR_OBJREF_SET_NAME) => Insn::ObjrefMap {
                sreg: u32_(sys::NFTNL_EXPR_OBJREF_SET_SREG),
                set: str_(sys::NFTNL_EXPR_OBJREF_SET_NAME),
            },
            "dynset" => Insn::Dynset {
                sreg_key: u32_(sys::NFTNL_EXPR_DYNSET_SREG_KEY),
                sreg_data: u32_(sys::NFTNL_EXPR_DYNSET_SREG_DATA),
                set: str_(sys::NFTNL_EXPR_DYNSET_SET_NAME),
                timeout_ms: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_DYNSET_TIMEOUT as u16),
            },
            "byteorder" => Insn::Byteorder {
                sreg: u32_(sys::NFTNL_EXPR_BYTEORDER_SREG),
                dreg: u32_(sys::NFTNL_EXPR_BYTEORDER_DREG),
                op: u32_(sys::NFTNL_EXPR_BYTEORDER_OP),
                len: u32_(sys::NFTNL_EXPR_BYTEORDER_LEN),
                size: u32_(sys::NFTNL_EXPR_BYTEORDER_SIZE),
            },
            other => {
                problem
                    .get_or_insert_with(|| DecodeError(format!("unexpected expression {other}")));
                return;
            }
        };
        out.push(insn);
    });
    match problem {
        Some(p) => Err(p),
        None => Ok(out),
    }
}
