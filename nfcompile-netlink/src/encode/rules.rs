//! Rules: the instructions of [`crate::bytecode`] as libnftnl expressions, and the sets a rule
//! refers to (named, or anonymous ones declared beside it).

use super::*;

impl Encoder {
    pub(super) fn rule(
        &mut self,
        table: &Table,
        chain: &Chain,
        index: usize,
        rule: &nfcompile::model::Rule,
        ids: &HashMap<String, u32>,
    ) {
        let encoded = encode_rule(rule, table.family, &Sets(table));
        // Anonymous sets first, as nft does: declared and filled right before their rule.
        let mut anon_ids = Vec::new();
        for (key, values) in &encoded.anonymous {
            let set = anonymous_set(key, values);
            let id = self.set(table, &set, "__set%d", true);
            self.set_elements(table, &set, "__set%d", id);
            anon_ids.push(id);
        }
        let r = rule_object(table, &chain.name);
        for insn in &encoded.insns {
            unsafe { sys::nftnl_rule_add_expr(r.ptr(), expr(insn, ids, &anon_ids)) };
        }
        if let Some(c) = &rule.comment {
            // NFTNL_UDATA_RULE_COMMENT
            unsafe {
                set_comment(
                    r.ptr(),
                    sys::nftnl_rule_set_data,
                    sys::NFTNL_RULE_USERDATA,
                    c,
                )
            };
        }
        let mut what = format!(
            "rule {} of chain {} ({} {})",
            index + 1,
            chain.name,
            family_name(table.family),
            table.name
        );
        let refs = references(rule);
        if !refs.is_empty() {
            what.push_str(&format!(", which refers to {}", refs.join(", ")));
        }
        let (fam, flags) = (family_code(table.family), NLM_F_CREATE | NLM_F_APPEND);
        self.add_object(NFT_MSG_NEWRULE, fam, flags, what, r);
    }
}

/// The chains and sets a rule names, so an error about a missing one can say which.
pub(super) fn references(rule: &nfcompile::model::Rule) -> Vec<String> {
    use nfcompile::model::{Match, SetRef, Statement};
    let mut out = Vec::new();
    for m in &rule.matches {
        if let Match::Lookup {
            set: SetRef::Named(n),
            ..
        } = m
        {
            out.push(format!("set {n}"));
        }
    }
    for s in &rule.statements {
        match s {
            Statement::Verdict(v) => out.extend(v.target().map(|c| format!("chain {c}"))),
            Statement::VerdictMap { map, .. } | Statement::DnatMap { map, .. } => {
                out.push(format!("map {map}"))
            }
            Statement::UpdateMap { set, .. } => out.push(format!("map {set}")),
            Statement::CounterMap { map, .. } => out.push(format!("counter map {map}")),
            _ => {}
        }
    }
    out
}

/// The anonymous set an inline `{ … }` stands for.
pub(super) fn anonymous_set(key: &Expr, values: &[Value]) -> Set {
    let interval = values.iter().any(|v| matches!(v, Value::Prefix(_)));
    let field = match key {
        Expr::Saddr(f) | Expr::Daddr(f) | Expr::CtOriginalDaddr(f) => FieldType::addr(*f),
        Expr::L4Proto => FieldType::InetProto,
        Expr::Dport | Expr::CtOriginalDport => FieldType::InetService,
        Expr::NumgenRandom { .. } | Expr::NumgenInc { .. } | Expr::JhashSaddr { .. } => {
            FieldType::Slot
        }
    };
    Set {
        name: "__set%d".into(),
        key: vec![field],
        data: None,
        flags: if interval {
            SetFlags::INTERVAL
        } else {
            SetFlags::empty()
        },
        timeout: None,
        size: None,
        comment: None,
        elements: values
            .iter()
            .map(|v| Element {
                key: vec![*v],
                data: None,
                comment: None,
            })
            .collect(),
    }
}

/// One instruction as a libnftnl expression.
pub(super) fn expr(
    insn: &Insn,
    ids: &HashMap<String, u32>,
    anon_ids: &[u32],
) -> *mut sys::nftnl_expr {
    use sys::*;
    let new = |name: &str| {
        let n = cstr(name);
        unsafe { nftnl_expr_alloc(n.as_ptr()) }
    };
    let set_u32 = |e, attr: u32, v: u32| unsafe { nftnl_expr_set_u32(e, attr as u16, v) };
    let set_data = |e, attr: u32, d: &[u8]| unsafe {
        nftnl_expr_set(e, attr as u16, d.as_ptr().cast(), d.len() as u32)
    };
    let set_str = |e, attr: u32, s: &str| {
        let s = cstr(s);
        unsafe { nftnl_expr_set_str(e, attr as u16, s.as_ptr()) };
    };
    match insn {
        Insn::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let e = new("payload");
            set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, *base);
            set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
            set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, *len);
            e
        }
        Insn::Meta { key, dreg } => {
            let e = new("meta");
            set_u32(e, NFTNL_EXPR_META_KEY, *key);
            set_u32(e, NFTNL_EXPR_META_DREG, *dreg);
            e
        }
        Insn::MetaSet { key, sreg } => {
            let e = new("meta");
            set_u32(e, NFTNL_EXPR_META_KEY, *key);
            set_u32(e, NFTNL_EXPR_META_SREG, *sreg);
            e
        }
        Insn::Cmp { sreg, op, data } => {
            let e = new("cmp");
            set_u32(e, NFTNL_EXPR_CMP_SREG, *sreg);
            set_u32(e, NFTNL_EXPR_CMP_OP, *op);
            set_data(e, NFTNL_EXPR_CMP_DATA, data);
            e
        }
        Insn::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            let e = new("bitwise");
            set_u32(e, NFTNL_EXPR_BITWISE_SREG, *sreg);
            set_u32(e, NFTNL_EXPR_BITWISE_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_BITWISE_LEN, mask.len() as u32);
            set_data(e, NFTNL_EXPR_BITWISE_MASK, mask);
            set_data(e, NFTNL_EXPR_BITWISE_XOR, xor);
            e
        }
        Insn::Lookup {
            sreg,
            dreg,
            set,
            invert,
        } => {
            let e = new("lookup");
            set_u32(e, NFTNL_EXPR_LOOKUP_SREG, *sreg);
            if let Some(d) = dreg {
                set_u32(e, NFTNL_EXPR_LOOKUP_DREG, *d);
            }
            match set {
                SetName::Named(n) => {
                    set_str(e, NFTNL_EXPR_LOOKUP_SET, n);
                    if let Some(id) = ids.get(n) {
                        set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, *id);
                    }
                }
                SetName::Anonymous(i) => {
                    set_str(e, NFTNL_EXPR_LOOKUP_SET, "__set%d");
                    set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, anon_ids[*i]);
                }
            }
            if *invert {
                set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, bytecode::k::NFT_LOOKUP_F_INV);
            }
            e
        }
        Insn::ObjrefMap { sreg, set } => {
            let e = new("objref");
            set_u32(e, NFTNL_EXPR_OBJREF_SET_SREG, *sreg);
            set_str(e, NFTNL_EXPR_OBJREF_SET_NAME, set);
            if let Some(id) = ids.get(set) {
                set_u32(e, NFTNL_EXPR_OBJREF_SET_ID, *id);
            }
            e
        }
        Insn::Immediate { verdict, chain } => {
            let e = new("immediate");
            set_u32(e, NFTNL_EXPR_IMM_DREG, bytecode::k::NFT_REG_VERDICT);
            set_u32(e, NFTNL_EXPR_IMM_VERDICT, *verdict as u32);
            if let Some(c) = chain {
                set_str(e, NFTNL_EXPR_IMM_CHAIN, c);
            }
            e
        }
        Insn::Hash {
            sreg,
            dreg,
            len,
            modulus,
            seed,
            offset,
        } => {
            let e = new("hash");
            set_u32(e, NFTNL_EXPR_HASH_SREG, *sreg);
            set_u32(e, NFTNL_EXPR_HASH_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_HASH_LEN, *len);
            set_u32(e, NFTNL_EXPR_HASH_MODULUS, *modulus);
            set_u32(e, NFTNL_EXPR_HASH_SEED, *seed);
            set_u32(e, NFTNL_EXPR_HASH_TYPE, bytecode::k::NFT_HASH_JENKINS);
            if *offset != 0 {
                set_u32(e, NFTNL_EXPR_HASH_OFFSET, *offset);
            }
            e
        }
        Insn::Numgen {
            dreg,
            kind,
            modulus,
            offset,
        } => {
            let e = new("numgen");
            set_u32(e, NFTNL_EXPR_NG_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_NG_MODULUS, *modulus);
            set_u32(e, NFTNL_EXPR_NG_TYPE, *kind);
            if *offset != 0 {
                set_u32(e, NFTNL_EXPR_NG_OFFSET, *offset);
            }
            e
        }
        Insn::Nat {
            family,
            reg_addr,
            reg_proto,
        } => {
            let e = new("nat");
            set_u32(e, NFTNL_EXPR_NAT_TYPE, bytecode::k::NFT_NAT_DNAT);
            set_u32(e, NFTNL_EXPR_NAT_FAMILY, *family);
            set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, *reg_addr);
            set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, *reg_proto);
            e
        }
        Insn::Masq { flags } => {
            let e = new("masq");
            if *flags != 0 {
                set_u32(e, NFTNL_EXPR_MASQ_FLAGS, *flags);
            }
            e
        }
        Insn::Reject { kind, code } => {
            let e = new("reject");
            set_u32(e, NFTNL_EXPR_REJECT_TYPE, *kind);
            unsafe { nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE as u16, *code) };
            e
        }
        Insn::Fib {
            dreg,
            flags,
            result,
        } => {
            let e = new("fib");
            set_u32(e, NFTNL_EXPR_FIB_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_FIB_RESULT, *result);
            set_u32(e, NFTNL_EXPR_FIB_FLAGS, *flags);
            e
        }
        Insn::Ct { key, dreg, dir } => {
            let e = new("ct");
            set_u32(e, NFTNL_EXPR_CT_KEY, *key);
            set_u32(e, NFTNL_EXPR_CT_DREG, *dreg);
            if let Some(d) = dir {
                unsafe { nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR as u16, *d) };
            }
            e
        }
        Insn::Dynset {
            sreg_key,
            sreg_data,
            set,
            timeout_ms,
        } => {
            let e = new("dynset");
            set_u32(e, NFTNL_EXPR_DYNSET_SREG_KEY, *sreg_key);
            set_u32(e, NFTNL_EXPR_DYNSET_SREG_DATA, *sreg_data);
            set_u32(e, NFTNL_EXPR_DYNSET_OP, bytecode::k::NFT_DYNSET_OP_UPDATE);
            unsafe { nftnl_expr_set_u64(e, NFTNL_EXPR_DYNSET_TIMEOUT as u16, *timeout_ms) };
            set_str(e, NFTNL_EXPR_DYNSET_SET_NAME, set);
            if let Some(id) = ids.get(set) {
                set_u32(e, NFTNL_EXPR_DYNSET_SET_ID, *id);
            }
            e
        }
        Insn::Byteorder {
            sreg,
            dreg,
            op,
            len,
            size,
        } => {
            let e = new("byteorder");
            set_u32(e, NFTNL_EXPR_BYTEORDER_SREG, *sreg);
            set_u32(e, NFTNL_EXPR_BYTEORDER_DREG, *dreg);
            set_u32(e, NFTNL_EXPR_BYTEORDER_OP, *op);
            set_u32(e, NFTNL_EXPR_BYTEORDER_LEN, *len);
            set_u32(e, NFTNL_EXPR_BYTEORDER_SIZE, *size);
            e
        }
    }
}

/// Instructions some supported kernel refuses must never be encoded.
#[cfg(test)]
mod kernel_limits {
    use super::*;
    use crate::bytecode::{encode_rule, Insn};

    /// Linux 6.12.115+ refuses a byteorder instruction whose length differs from its size
    /// ("nft_byteorder: remove multi-register support"): no rule of any scenario-like random
    /// cluster (source ranges of every protocol, affinity, both families …) may carry one.
    #[test]
    fn no_byteorder_of_length_other_than_its_size() {
        let mut rules = 0;
        for seed in 1..=60 {
            let cluster = nfcompile::synth::random(seed, 30);
            let ruleset = nfcompile::compile(&cluster).unwrap();
            for table in &ruleset.tables {
                for chain in &table.chains {
                    for rule in &chain.rules {
                        let enc = encode_rule(rule, table.family, &Sets(table));
                        for insn in &enc.insns {
                            if let Insn::Byteorder { len, size, .. } = insn {
                                assert_eq!(
                                    len, size,
                                    "seed {seed}, chain {}: {insn:?}",
                                    chain.name
                                );
                            }
                        }
                        rules += 1;
                    }
                }
            }
        }
        assert!(rules > 1000, "{rules}");
    }
}
