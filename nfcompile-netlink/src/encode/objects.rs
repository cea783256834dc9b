//! Tables, chains, sets and counter objects: their libnftnl objects and the messages that
//! declare and delete them.

use super::*;

impl Encoder {
    pub(super) fn table(&mut self, table: &Table) {
        let fam = family_code(table.family);
        let what = format!("table {} {}", family_name(table.family), table.name);
        // Declared, deleted, declared again: valid whether or not the table exists.
        for (kind, flags, with_comment) in [
            (NFT_MSG_NEWTABLE, NLM_F_CREATE, false),
            (NFT_MSG_DELTABLE, 0, false),
            (NFT_MSG_NEWTABLE, NLM_F_CREATE, true),
        ] {
            let t = table_object(table);
            if let (true, Some(c)) = (with_comment, &table.comment) {
                // NFTNL_UDATA_TABLE_COMMENT
                unsafe {
                    set_comment(
                        t.ptr(),
                        sys::nftnl_table_set_data,
                        sys::NFTNL_TABLE_USERDATA,
                        c,
                    )
                };
            }
            self.add_object(kind, fam, flags, what.clone(), t);
        }
        for chain in &table.chains {
            self.chain(table, chain);
        }
        for name in &table.counters {
            self.counter(table, name, NFT_MSG_NEWOBJ);
        }
        let mut ids = HashMap::new();
        for set in &table.sets {
            let id = self.set(table, set, &set.name, false);
            ids.insert(set.name.clone(), id);
        }
        // Rules before elements: a rule bound to a map that already holds elements walks all
        // of them, while an element added to a bound map is only checked against each rule.
        // Selection chains bind their endpoint map from many rules (one per draw).
        for chain in &table.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                self.rule(table, chain, i, rule, &ids);
            }
        }
        for set in &table.sets {
            self.set_elements(table, set, &set.name, ids[&set.name]);
        }
    }

    pub(super) fn delete_table(&mut self, table: &Table) {
        let what = format!(
            "deletion of table {} {}",
            family_name(table.family),
            table.name
        );
        let t = table_object(table);
        self.add_object(NFT_MSG_DELTABLE, family_code(table.family), 0, what, t);
    }

    /// DELRULE without a handle flushes the chain; DELCHAIN deletes it with its rules.
    pub(super) fn delete_by_chain(&mut self, table: &Table, chain: &str, kind: u16) {
        let fam = family_code(table.family);
        let what = format!(
            "{} {chain} of table {} {}",
            if kind == NFT_MSG_DELRULE {
                "flush of chain"
            } else {
                "deletion of chain"
            },
            family_name(table.family),
            table.name
        );
        if kind == NFT_MSG_DELRULE {
            self.add_object(kind, fam, 0, what, rule_object(table, chain));
        } else {
            self.add_object(kind, fam, 0, what, chain_object(table, chain));
        }
    }

    pub(super) fn delete_set(&mut self, table: &Table, name: &str) {
        let what = format!(
            "deletion of set {name} of table {} {}",
            family_name(table.family),
            table.name
        );
        let s = set_object(table, name, 0);
        unsafe { sys::nftnl_set_unset(s.ptr(), sys::NFTNL_SET_ID as u16) };
        self.add_object(NFT_MSG_DELSET, family_code(table.family), 0, what, s);
    }

    pub(super) fn chain(&mut self, table: &Table, chain: &Chain) {
        let c = chain_object(table, &chain.name);
        if let Some(b) = &chain.base {
            let hook = match b.hook {
                Hook::Prerouting => libc::NF_INET_PRE_ROUTING,
                Hook::Input => libc::NF_INET_LOCAL_IN,
                Hook::Forward => libc::NF_INET_FORWARD,
                Hook::Output => libc::NF_INET_LOCAL_OUT,
                Hook::Postrouting => libc::NF_INET_POST_ROUTING,
            };
            let kind = match b.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
            };
            unsafe {
                c.set_u32(sys::NFTNL_CHAIN_HOOKNUM, hook as u32);
                sys::nftnl_chain_set_s32(c.ptr(), sys::NFTNL_CHAIN_PRIO as u16, b.priority);
                c.set_str(sys::NFTNL_CHAIN_TYPE, kind);
                c.set_u32(sys::NFTNL_CHAIN_POLICY, NF_ACCEPT);
            }
        }
        if let Some(comment) = &chain.comment {
            // NFTNL_UDATA_CHAIN_COMMENT
            unsafe {
                set_comment(
                    c.ptr(),
                    sys::nftnl_chain_set_data,
                    sys::NFTNL_CHAIN_USERDATA,
                    comment,
                )
            };
        }
        let what = format!(
            "chain {} of table {} {}",
            chain.name,
            family_name(table.family),
            table.name
        );
        self.add_object(
            NFT_MSG_NEWCHAIN,
            family_code(table.family),
            NLM_F_CREATE,
            what,
            c,
        );
    }

    /// NEWOBJ (a counter at zero) or DELOBJ of the counter `name`.
    pub(super) fn counter(&mut self, table: &Table, name: &str, kind: u16) {
        let what = format!(
            "{}counter {name} of table {} {}",
            if kind == NFT_MSG_DELOBJ {
                "deletion of "
            } else {
                ""
            },
            family_name(table.family),
            table.name
        );
        let flags = if kind == NFT_MSG_NEWOBJ {
            NLM_F_CREATE
        } else {
            0
        };
        // Without an ACK: one message per counter.
        let o = write_object(counter_object(table, name));
        self.push(kind, family_code(table.family), flags, what, o);
    }

    /// Declare a set; returns its batch id.
    pub(super) fn set(&mut self, table: &Table, set: &Set, name: &str, anonymous: bool) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let spec: SetSpec = sets::set_spec(set);
        let obj = set_object(table, name, id);
        let s = obj.ptr();
        let mut set_flags = spec.flags;
        if anonymous {
            set_flags |= flags::NFT_SET_ANONYMOUS | flags::NFT_SET_CONSTANT;
        }
        unsafe {
            obj.set_u32(sys::NFTNL_SET_FLAGS, set_flags);
            obj.set_u32(sys::NFTNL_SET_KEY_TYPE, spec.key_type);
            obj.set_u32(sys::NFTNL_SET_KEY_LEN, spec.key_len);
            if let Some((t, l)) = spec.data {
                obj.set_u32(sys::NFTNL_SET_DATA_TYPE, t);
                obj.set_u32(sys::NFTNL_SET_DATA_LEN, l);
            }
            if let Some(t) = spec.obj_type {
                obj.set_u32(sys::NFTNL_SET_OBJ_TYPE, t);
            }
            if let Some(ms) = spec.timeout_ms {
                sys::nftnl_set_set_u64(s, sys::NFTNL_SET_TIMEOUT as u16, ms);
            }
            if let Some(size) = spec.size {
                obj.set_u32(sys::NFTNL_SET_DESC_SIZE, size);
            }
            if let Some(fields) = &spec.concat {
                sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_DESC_CONCAT as u16,
                    fields.as_ptr().cast(),
                    fields.len() as u32,
                );
            }
            if !anonymous {
                sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_USERDATA as u16,
                    spec.userdata.as_ptr().cast(),
                    spec.userdata.len() as u32,
                );
            }
        }
        let what = format!(
            "set {} of table {} {}",
            set.name,
            family_name(table.family),
            table.name
        );
        self.add_object(
            NFT_MSG_NEWSET,
            family_code(table.family),
            NLM_F_CREATE,
            what,
            obj,
        );
        id
    }
}

/// The table `table` (its name and family).
pub(super) fn table_object(table: &Table) -> Owned<sys::nftnl_table> {
    let t = Owned::new();
    unsafe {
        t.set_str(sys::NFTNL_TABLE_NAME, &table.name);
        t.set_u32(sys::NFTNL_TABLE_FAMILY, family(table));
    }
    t
}

/// The chain `chain` of `table`.
pub(super) fn chain_object(table: &Table, chain: &str) -> Owned<sys::nftnl_chain> {
    Owned::named(&table.name, family(table), chain)
}

/// A rule of the chain `chain` of `table`, without expressions yet.
pub(super) fn rule_object(table: &Table, chain: &str) -> Owned<sys::nftnl_rule> {
    Owned::named(&table.name, family(table), chain)
}

/// The set `name` of `table`, known in the batch by `id`.
pub(super) fn set_object(table: &Table, name: &str, id: u32) -> Owned<sys::nftnl_set> {
    let s = Owned::named(&table.name, family(table), name);
    unsafe { s.set_u32(sys::NFTNL_SET_ID, id) };
    s
}

/// The named counter `name` of `table`, with no values: a new counter starts at zero (and the
/// message stays small).
pub(super) fn counter_object(table: &Table, name: &str) -> Owned<sys::nftnl_obj> {
    let o = Owned::named(&table.name, family(table), name);
    unsafe { o.set_u32(sys::NFTNL_OBJ_TYPE, bytecode::k::NFT_OBJECT_COUNTER) };
    o
}
