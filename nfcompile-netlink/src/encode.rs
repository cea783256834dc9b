//! The model as one `nftnl::Batch`: libnftnl builds each message from the specs and
//! instructions of [`crate::sets`] and [`crate::bytecode`], except set elements, whose
//! attributes are written here (a libnftnl object per element costs more than the kernel's
//! insertion of it, see `docs/kernel-facts.md`; a test checks the bytes against libnftnl's). Every message remembers what it carried, so a
//! kernel error can name the object (`chain services of table ip nfcompile`).
//!
//! A table is replaced whole, the way the text backend's script does it: declare it, delete
//! it, declare it again with its contents — all inside one transaction.

use crate::wire::{
    NFT_MSG_DELCHAIN, NFT_MSG_DELOBJ, NFT_MSG_DELRULE, NFT_MSG_DELSET, NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE, NFT_MSG_DESTROYSETELEM, NFT_MSG_NEWCHAIN, NFT_MSG_NEWOBJ, NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_EXCL,
};
use std::cell::Cell;
use std::collections::HashMap;
use std::os::raw::c_void;

use nfcompile::model::{
    Chain, ChainType, Element, Expr, FieldType, Hook, Ruleset, Set, SetFlags, Table, Value,
};
use nftnl::nftnl_sys as sys;
use nftnl::{Batch, FinalizedBatch, MsgType, NlMsg};

use crate::bytecode::{self, encode_rule, Insn, SetInfo, SetName};
use crate::object::{cstr, Object, Owned};
use crate::sets::{self, flags, ElemData, ElemSpec, SetSpec};

const NF_ACCEPT: u32 = 1;

/// What one message of a batch carried, so that a refusal can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The nf_tables message type (`NFT_MSG_NEWSETELEM` …).
    pub message: u16,
    /// The object, as an error names it: `rule 1 of chain services (ip nfcompile)`,
    /// `elements of set endpoints (ip nfcompile)` …
    pub what: String,
}

impl Provenance {
    /// Whether the message added set elements (a refusal with ENFILE then means a full set).
    pub fn adds_elements(&self) -> bool {
        self.message == NFT_MSG_NEWSETELEM
    }
}

/// A finished batch and, per sequence number, what its message carried.
pub struct Encoded {
    pub batch: FinalizedBatch,
    pub provenance: HashMap<u32, Provenance>,
    pub messages: usize,
    pub elements: usize,
    /// Sequence numbers of the messages that ask for an ACK: all but counter objects (one
    /// message each: 100,000 ACKs would overflow any receive buffer), which the kernel still
    /// answers when they fail.
    pub acked: std::collections::BTreeSet<u32>,
}

fn family_code(f: nfcompile::model::Family) -> u16 {
    bytecode::nfproto(f) as u16
}

fn family_name(f: nfcompile::model::Family) -> &'static str {
    match f {
        nfcompile::model::Family::Ipv4 => "ip",
        nfcompile::model::Family::Ipv6 => "ip6",
    }
}

/// One message of the batch: a libnftnl object, how to send it, what it is.
struct Message {
    build: Box<dyn Fn(*mut libc::nlmsghdr) -> bool>,
    kind: u16,
    family: u16,
    flags: u16,
    /// Set by `write`: the sequence number the batch gave it, and whether more follows.
    seq: Cell<u32>,
    more: Cell<bool>,
}

unsafe impl NlMsg for Message {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        let hdr = unsafe {
            sys::nftnl_nlmsg_build_hdr(
                buf.cast(),
                self.kind, // libnftnl adds the nf_tables subsystem
                self.family,
                self.flags,
                seq,
            )
        };
        self.seq.set(seq);
        self.more.set((self.build)(hdr));
    }
}

/// How a message writes `obj`: its payload, and never a follow-up message.
fn write_object<T: Object + 'static>(obj: Owned<T>) -> Box<dyn Fn(*mut libc::nlmsghdr) -> bool> {
    // A method call, so the closure owns `obj` whole (not just its pointer) until it is
    // dropped with the message.
    Box::new(move |hdr| {
        unsafe { obj.write(hdr) };
        false
    })
}

/// The table `table` (its name and family).
fn table_object(table: &Table) -> Owned<sys::nftnl_table> {
    let t = Owned::new();
    unsafe {
        t.set_str(sys::NFTNL_TABLE_NAME, &table.name);
        t.set_u32(sys::NFTNL_TABLE_FAMILY, family(table));
    }
    t
}

/// The chain `chain` of `table`.
fn chain_object(table: &Table, chain: &str) -> Owned<sys::nftnl_chain> {
    Owned::named(&table.name, family(table), chain)
}

/// A rule of the chain `chain` of `table`, without expressions yet.
fn rule_object(table: &Table, chain: &str) -> Owned<sys::nftnl_rule> {
    Owned::named(&table.name, family(table), chain)
}

/// The set `name` of `table`, known in the batch by `id`.
fn set_object(table: &Table, name: &str, id: u32) -> Owned<sys::nftnl_set> {
    let s = Owned::named(&table.name, family(table), name);
    unsafe { s.set_u32(sys::NFTNL_SET_ID, id) };
    s
}

/// The named counter `name` of `table`, with no values: a new counter starts at zero (and the
/// message stays small).
fn counter_object(table: &Table, name: &str) -> Owned<sys::nftnl_obj> {
    let o = Owned::named(&table.name, family(table), name);
    unsafe { o.set_u32(sys::NFTNL_OBJ_TYPE, bytecode::k::NFT_OBJECT_COUNTER) };
    o
}

/// The family attribute of `table`'s objects.
fn family(table: &Table) -> u32 {
    u32::from(family_code(table.family))
}

struct Sets<'a>(&'a Table);

impl SetInfo for Sets<'_> {
    fn is_interval(&self, name: &str) -> bool {
        self.0
            .set(name)
            .is_some_and(|s| s.flags.contains(SetFlags::INTERVAL))
    }
}

/// Build the batch that replaces every table of `ruleset`.
pub fn encode(ruleset: &Ruleset) -> Encoded {
    let mut enc = Encoder::new();
    for table in &ruleset.tables {
        enc.table(table);
    }
    enc.finish()
}

/// Build the batch that carries out `tx` (computed against the kernel's current ruleset)
/// towards `desired`, which supplies set declarations and interval facts.
pub fn encode_transaction(tx: &nfcompile::diff::Transaction, desired: &Ruleset) -> Encoded {
    use nfcompile::diff::Op;
    let mut enc = Encoder::new();
    // Tables being deleted are not in `desired`: stand-ins carry their family and name.
    let stand_ins: Vec<Table> = tx
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteTable { table } => Some(Table {
                family: table.family,
                name: table.name.clone(),
                comment: None,
                counters: Vec::new(),
                sets: Vec::new(),
                chains: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    let find = |r: &nfcompile::diff::TableRef| -> &Table {
        desired
            .tables
            .iter()
            .chain(&stand_ins)
            .find(|t| t.family == r.family && t.name == r.name)
            .expect("every table of a transaction is desired or deleted")
    };
    let mut ids: HashMap<(nfcompile::diff::TableRef, String), u32> = HashMap::new();
    for op in &tx.ops {
        match op {
            Op::AddTable { table } => enc.table(table),
            Op::DeleteTable { table } => enc.delete_table(find(table)),
            Op::FlushChain { table, chain } => {
                enc.delete_by_chain(find(table), chain, NFT_MSG_DELRULE)
            }
            Op::DeleteChain { table, chain } => {
                enc.delete_by_chain(find(table), chain, NFT_MSG_DELCHAIN)
            }
            Op::DeleteSet { table, set, .. } => enc.delete_set(find(table), set),
            Op::AddSet { table, set } => {
                let id = enc.set(find(table), set, &set.name, false);
                ids.insert((table.clone(), set.name.clone()), id);
            }
            Op::AddChain { table, chain } => enc.chain(find(table), chain),
            Op::AddCounters { table, names } => {
                for n in names {
                    enc.counter(find(table), n, NFT_MSG_NEWOBJ);
                }
            }
            Op::DeleteCounters { table, names } => {
                for n in names {
                    enc.counter(find(table), n, NFT_MSG_DELOBJ);
                }
            }
            Op::AddElements {
                table,
                set,
                elements,
            }
            | Op::DeleteElements {
                table,
                set,
                elements,
            } => {
                let t = find(table);
                let Some(decl) = t.set(set) else {
                    continue;
                };
                // The declaration only; cloning the whole set would copy all its elements.
                let part = Set {
                    name: decl.name.clone(),
                    key: decl.key.clone(),
                    data: decl.data.clone(),
                    flags: decl.flags,
                    timeout: decl.timeout,
                    size: decl.size,
                    comment: decl.comment.clone(),
                    elements: elements.clone(),
                };
                let id = ids.get(&(table.clone(), set.clone())).copied();
                if matches!(op, Op::AddElements { .. }) {
                    let specs = sets::elements(&part);
                    enc.element_message(t, &part, set, id, specs, NFT_MSG_NEWSETELEM, NLM_F_CREATE);
                } else {
                    let specs = sets::deletion_elements(&part);
                    enc.element_message(t, &part, set, id, specs, NFT_MSG_DELSETELEM, 0);
                }
            }
            Op::AddRules {
                table,
                chain,
                rules,
            } => {
                let t = find(table);
                let c = Chain {
                    name: chain.clone(),
                    base: None,
                    comment: None,
                    rules: Vec::new(),
                };
                let by_name: HashMap<String, u32> = ids
                    .iter()
                    .filter(|((r, _), _)| r == table)
                    .map(|((_, n), id)| (n.clone(), *id))
                    .collect();
                for (i, rule) in rules.iter().enumerate() {
                    enc.rule(t, &c, i, rule, &by_name);
                }
            }
        }
    }
    enc.finish()
}

/// How [`encode_remove_elements`] deletes elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `NFT_MSG_DESTROYSETELEM` (Linux 6.3+): an element already gone is no error.
    Destroy,
    /// `NFT_MSG_DELSETELEM`: an element already gone fails the batch with ENOENT.
    Delete,
}

/// Build the batch that deletes `elements` from `set` of `table` — for runtime state such as
/// session-affinity entries, which may expire at any moment (see [`Removal`]).
pub fn encode_remove_elements(
    table: &Table,
    set: &Set,
    elements: &[Element],
    how: Removal,
) -> Encoded {
    let mut enc = Encoder::new();
    let part = Set {
        elements: elements.to_vec(),
        ..set.clone()
    };
    let specs = sets::deletion_elements(&part);
    let kind = match how {
        Removal::Destroy => NFT_MSG_DESTROYSETELEM,
        Removal::Delete => NFT_MSG_DELSETELEM,
    };
    enc.element_message(table, &part, &set.name, None, specs, kind, 0);
    enc.finish()
}

/// The sequence numbers of the feature probe's messages, by what each asks (see
/// [`crate::features`]).
pub(crate) struct ProbeSeqs {
    /// The throw-away table (declared, deleted, declared again, as every table is).
    pub table: Vec<u32>,
    /// The interval concatenation set.
    pub set: u32,
    /// `NFT_MSG_DESTROYSETELEM` of an element the set does not hold.
    pub destroy: u32,
    /// `NFT_MSG_DELSETELEM` of the same element: ENOENT proves the element itself encodes,
    /// so an EINVAL of the destroy means the kernel does not know the message.
    pub control: u32,
    /// An exclusive re-declaration of the table: always refused (EEXIST), so the kernel
    /// aborts the batch whatever else it answered.
    pub abort: u32,
}

/// The feature probe: one batch that the kernel must abort (see [`crate::features`]).
pub(crate) fn encode_probe(table: &Table, set: &Set, element: &Element) -> (Encoded, ProbeSeqs) {
    let mut enc = Encoder::new();
    let last = |enc: &Encoder| enc.acked.last().copied().unwrap_or(0);
    let bare = Table {
        sets: Vec::new(),
        ..table.clone()
    };
    enc.table(&bare);
    let table_seqs: Vec<u32> = enc.acked.iter().copied().collect();
    enc.set(table, set, &set.name, false);
    let set_seq = last(&enc);
    let part = Set {
        elements: vec![element.clone()],
        ..set.clone()
    };
    let specs = sets::deletion_elements(&part);
    enc.element_message(
        table,
        &part,
        &set.name,
        None,
        specs,
        NFT_MSG_DESTROYSETELEM,
        0,
    );
    let destroy = last(&enc);
    let specs = sets::deletion_elements(&part);
    enc.element_message(table, &part, &set.name, None, specs, NFT_MSG_DELSETELEM, 0);
    let control = last(&enc);
    let what = format!(
        "exclusive declaration of table {} {} (the probe's abort)",
        family_name(table.family),
        table.name
    );
    enc.add_object(
        NFT_MSG_NEWTABLE,
        family_code(table.family),
        NLM_F_CREATE | NLM_F_EXCL,
        what,
        table_object(&bare),
    );
    let abort = last(&enc);
    let seqs = ProbeSeqs {
        table: table_seqs,
        set: set_seq,
        destroy,
        control,
        abort,
    };
    (enc.finish(), seqs)
}

/// Attach `comment` as nft's userdata comment: TLV type 0 for tables, chains and rules alike,
/// set through the object's own `nftnl_*_set_data`.
///
/// # Safety
/// `obj` must be a live libnftnl object of the kind `set_data` takes.
unsafe fn set_comment<T>(
    obj: *mut T,
    set_data: unsafe extern "C" fn(*mut T, u16, *const libc::c_void, u32) -> libc::c_int,
    attr: u32,
    comment: &str,
) {
    let u = sets::comment_udata(0, comment);
    // libnftnl copies the data.
    unsafe { set_data(obj, attr as u16, u.as_ptr().cast(), u.len() as u32) };
}

struct Encoder {
    batch: Batch,
    provenance: HashMap<u32, Provenance>,
    messages: usize,
    elements: usize,
    next_set_id: u32,
    acked: std::collections::BTreeSet<u32>,
}

impl Encoder {
    fn new() -> Encoder {
        Encoder {
            batch: Batch::new(),
            provenance: HashMap::new(),
            messages: 0,
            elements: 0,
            next_set_id: 1,
            acked: Default::default(),
        }
    }

    fn finish(self) -> Encoded {
        Encoded {
            batch: self.batch.finalize(),
            provenance: self.provenance,
            messages: self.messages,
            elements: self.elements,
            acked: self.acked,
        }
    }

    /// A message the kernel acknowledges.
    fn add(
        &mut self,
        kind: u16,
        family: u16,
        flags: u16,
        what: String,
        build: Box<dyn Fn(*mut libc::nlmsghdr) -> bool>,
    ) {
        self.push(kind, family, flags | NLM_F_ACK, what, build)
    }

    /// A message; acknowledged only with NLM_F_ACK in `flags`.
    fn push(
        &mut self,
        kind: u16,
        family: u16,
        flags: u16,
        what: String,
        build: Box<dyn Fn(*mut libc::nlmsghdr) -> bool>,
    ) {
        let msg = Message {
            build,
            kind,
            family,
            flags,
            seq: Cell::new(0),
            more: Cell::new(false),
        };
        loop {
            self.batch.add(&msg, MsgType::Add);
            self.messages += 1;
            self.provenance.insert(
                msg.seq.get(),
                Provenance {
                    message: kind,
                    what: what.clone(),
                },
            );
            if flags & NLM_F_ACK != 0 {
                self.acked.insert(msg.seq.get());
            }
            if !msg.more.get() {
                break;
            }
        }
    }

    /// An acknowledged message carrying one libnftnl object.
    fn add_object<T: Object + 'static>(
        &mut self,
        kind: u16,
        family: u16,
        flags: u16,
        what: String,
        obj: Owned<T>,
    ) {
        self.add(kind, family, flags, what, write_object(obj));
    }

    fn table(&mut self, table: &Table) {
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

    fn delete_table(&mut self, table: &Table) {
        let what = format!(
            "deletion of table {} {}",
            family_name(table.family),
            table.name
        );
        let t = table_object(table);
        self.add_object(NFT_MSG_DELTABLE, family_code(table.family), 0, what, t);
    }

    /// DELRULE without a handle flushes the chain; DELCHAIN deletes it with its rules.
    fn delete_by_chain(&mut self, table: &Table, chain: &str, kind: u16) {
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

    fn delete_set(&mut self, table: &Table, name: &str) {
        let what = format!(
            "deletion of set {name} of table {} {}",
            family_name(table.family),
            table.name
        );
        let s = set_object(table, name, 0);
        unsafe { sys::nftnl_set_unset(s.ptr(), sys::NFTNL_SET_ID as u16) };
        self.add_object(NFT_MSG_DELSET, family_code(table.family), 0, what, s);
    }

    fn chain(&mut self, table: &Table, chain: &Chain) {
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
    fn counter(&mut self, table: &Table, name: &str, kind: u16) {
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
    fn set(&mut self, table: &Table, set: &Set, name: &str, anonymous: bool) -> u32 {
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

    fn set_elements(&mut self, table: &Table, set: &Set, name: &str, id: u32) {
        let specs = sets::elements(set);
        self.element_message(
            table,
            set,
            name,
            Some(id),
            specs,
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
        );
    }

    /// One NEWSETELEM/DELSETELEM exchange (split in as many messages as needed).
    #[allow(clippy::too_many_arguments)]
    fn element_message(
        &mut self,
        table: &Table,
        set: &Set,
        name: &str,
        id: Option<u32>,
        specs: Vec<ElemSpec>,
        kind: u16,
        flags: u16,
    ) {
        if specs.is_empty() {
            return;
        }
        self.elements += specs.len();
        let mut what = element_provenance(table, set);
        if kind == NFT_MSG_DELSETELEM || kind == NFT_MSG_DESTROYSETELEM {
            what = format!("deletion of {what}");
        }
        for body in element_bodies(&table.name, name, id, &specs) {
            self.add(
                kind,
                family_code(table.family),
                flags,
                what.clone(),
                Box::new(move |hdr| {
                    // The batch leaves room for a message of 64 KiB + a page after `hdr`;
                    // element_bodies keeps each body under 60 KiB.
                    unsafe {
                        let len = (*hdr).nlmsg_len as usize;
                        let at = hdr.cast::<u8>().add(len);
                        std::ptr::copy_nonoverlapping(body.as_ptr(), at, body.len());
                        (*hdr).nlmsg_len = (len + body.len()) as u32;
                    }
                    false
                }),
            );
        }
    }

    fn rule(
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
fn references(rule: &nfcompile::model::Rule) -> Vec<String> {
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

/// What an element message carries, for errors: the set and the services its comments name.
fn element_provenance(table: &Table, set: &Set) -> String {
    let mut named: Vec<&str> = set
        .elements
        .iter()
        .filter_map(|e| e.comment.as_deref())
        .take(3)
        .collect();
    named.dedup();
    let mut s = format!(
        "elements of set {} ({} {})",
        set.name,
        family_name(table.family),
        table.name
    );
    if !named.is_empty() {
        s.push_str(&format!(", e.g. {}", named.join(", ")));
    }
    s
}

/// Bodies of NEWSETELEM/DELSETELEM messages (after the nfgenmsg header) carrying `specs`,
/// as libnftnl would write them: the set by name (and batch id), then the elements, split so
/// that the element list stays within a netlink attribute's 64 KiB.
fn element_bodies(table: &str, set: &str, id: Option<u32>, specs: &[ElemSpec]) -> Vec<Vec<u8>> {
    use crate::attr::{nested, nft, put, put_strz};
    const MAX_LIST: usize = 60 * 1024;
    let head = |b: &mut Vec<u8>| {
        put_strz(b, nft::SET_ELEM_LIST_SET, set);
        if let Some(id) = id {
            put(b, nft::SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        put_strz(b, nft::SET_ELEM_LIST_TABLE, table);
    };
    let element = |b: &mut Vec<u8>, e: &ElemSpec| {
        nested(b, nft::LIST_ELEM, |b| {
            if e.flags != 0 {
                put(b, nft::SET_ELEM_FLAGS, &e.flags.to_be_bytes());
            }
            nested(b, nft::SET_ELEM_KEY, |b| put(b, nft::DATA_VALUE, &e.key));
            if let Some(end) = &e.key_end {
                nested(b, nft::SET_ELEM_KEY_END, |b| put(b, nft::DATA_VALUE, end));
            }
            match &e.data {
                ElemData::None => {}
                ElemData::Bytes(v) => {
                    nested(b, nft::SET_ELEM_DATA, |b| put(b, nft::DATA_VALUE, v));
                }
                ElemData::Verdict(code, chain) => nested(b, nft::SET_ELEM_DATA, |b| {
                    nested(b, nft::DATA_VERDICT, |b| {
                        put(b, nft::VERDICT_CODE, &code.to_be_bytes());
                        if let Some(c) = chain {
                            put_strz(b, nft::VERDICT_CHAIN, c);
                        }
                    })
                }),
                ElemData::Object(name) => put_strz(b, nft::SET_ELEM_OBJREF, name),
            }
            if let Some(u) = &e.userdata {
                put(b, nft::SET_ELEM_USERDATA, u);
            }
        })
    };
    let mut bodies = Vec::new();
    let mut rest = specs;
    while !rest.is_empty() {
        let mut body = Vec::with_capacity(MAX_LIST + 1024);
        head(&mut body);
        let list_start = body.len();
        let mut taken = 0;
        nested(&mut body, nft::SET_ELEM_LIST_ELEMENTS, |b| {
            for e in rest {
                // Written in place; an element that does not fit is taken back and opens
                // the next message.
                let before = b.len();
                element(b, e);
                if taken > 0 && b.len() - list_start > MAX_LIST {
                    b.truncate(before);
                    break;
                }
                taken += 1;
            }
        });
        rest = &rest[taken..];
        bodies.push(body);
    }
    bodies
}

/// libnftnl's element object: the reference [`element_bodies`] is tested against.
#[cfg(test)]
fn new_elem(e: &ElemSpec) -> *mut sys::nftnl_set_elem {
    let el = unsafe { sys::nftnl_set_elem_alloc() };
    unsafe {
        sys::nftnl_set_elem_set(
            el,
            sys::NFTNL_SET_ELEM_KEY as u16,
            e.key.as_ptr().cast(),
            e.key.len() as u32,
        );
        if let Some(end) = &e.key_end {
            sys::nftnl_set_elem_set(
                el,
                sys::NFTNL_SET_ELEM_KEY_END as u16,
                end.as_ptr().cast(),
                end.len() as u32,
            );
        }
        if e.flags != 0 {
            sys::nftnl_set_elem_set_u32(el, sys::NFTNL_SET_ELEM_FLAGS as u16, e.flags);
        }
        match &e.data {
            ElemData::None => {}
            ElemData::Bytes(b) => {
                sys::nftnl_set_elem_set(
                    el,
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    b.as_ptr().cast(),
                    b.len() as u32,
                );
            }
            ElemData::Object(name) => {
                let n = cstr(name);
                sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_OBJREF as u16, n.as_ptr());
            }
            ElemData::Verdict(v, chain) => {
                sys::nftnl_set_elem_set_u32(el, sys::NFTNL_SET_ELEM_VERDICT as u16, *v as u32);
                if let Some(c) = chain {
                    let c = cstr(c);
                    sys::nftnl_set_elem_set_str(el, sys::NFTNL_SET_ELEM_CHAIN as u16, c.as_ptr());
                }
            }
        }
        if let Some(u) = &e.userdata {
            sys::nftnl_set_elem_set(
                el,
                sys::NFTNL_SET_ELEM_USERDATA as u16,
                u.as_ptr().cast(),
                u.len() as u32,
            );
        }
    }
    el
}

/// The anonymous set an inline `{ … }` stands for.
fn anonymous_set(key: &Expr, values: &[Value]) -> Set {
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
fn expr(insn: &Insn, ids: &HashMap<String, u32>, anon_ids: &[u32]) -> *mut sys::nftnl_expr {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::nft;
    use crate::readback::attrs;

    /// Attributes as (type, payload).
    type Attrs = Vec<(u16, Vec<u8>)>;

    /// The set attributes and each element's attribute bytes of message bodies.
    fn split(bodies: &[Vec<u8>]) -> (Attrs, Vec<Vec<u8>>) {
        let mut head = Vec::new();
        let mut elements = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            for (t, v) in attrs(body) {
                if t & 0x3fff == nft::SET_ELEM_LIST_ELEMENTS {
                    elements.extend(attrs(v).map(|(_, e)| e.to_vec()));
                } else if i == 0 {
                    head.push((t, v.to_vec()));
                }
            }
        }
        head.sort();
        (head, elements)
    }

    /// What libnftnl writes for the same elements (its element nests are numbered, ours
    /// are NFTA_LIST_ELEM; the kernel reads neither number).
    fn libnftnl_bodies(table: &Table, set: &Set, id: u32, specs: &[ElemSpec]) -> Vec<Vec<u8>> {
        let s = set_object(table, &set.name, id);
        for e in specs {
            unsafe { sys::nftnl_set_elem_add(s.ptr(), new_elem(e)) };
        }
        let iter = unsafe { sys::nftnl_set_elems_iter_create(s.ptr()) };
        let mut bodies = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let hdr = unsafe {
                sys::nftnl_nlmsg_build_hdr(
                    buf.as_mut_ptr().cast(),
                    NFT_MSG_NEWSETELEM,
                    family_code(table.family),
                    0,
                    1,
                )
            };
            let more = unsafe { sys::nftnl_set_elems_nlmsg_build_payload_iter(hdr, iter) } > 0;
            let len = unsafe { (*hdr).nlmsg_len } as usize;
            bodies.push(buf[20..len].to_vec()); // after nlmsghdr (16) and nfgenmsg (4)
            if !more {
                break;
            }
        }
        unsafe { sys::nftnl_set_elems_iter_destroy(iter) };
        bodies
    }

    #[test]
    fn element_messages_carry_what_libnftnl_would_write() {
        let mut compared = 0;
        for seed in 0..12 {
            let mut cluster = nfcompile::synth::random(seed, 40);
            cluster.config.counters = seed % 2 == 0;
            let ruleset = nfcompile::compile(&cluster).unwrap();
            for table in &ruleset.tables {
                for set in &table.sets {
                    let specs = sets::elements(set);
                    if specs.is_empty() {
                        continue;
                    }
                    let ours = element_bodies(&table.name, &set.name, Some(7), &specs);
                    let theirs = libnftnl_bodies(table, set, 7, &specs);
                    assert_eq!(split(&ours), split(&theirs), "set {}", set.name);
                    compared += specs.len();
                }
            }
        }
        assert!(compared > 5_000, "only {compared} elements compared");
    }

    #[test]
    fn long_element_lists_are_split_under_64_kib() {
        let cluster = nfcompile::synth::cluster(nfcompile::synth::Shape {
            services: 2_000,
            endpoints: 5,
            nodes: 10,
        });
        let ruleset = nfcompile::compile(&cluster).unwrap();
        let set = ruleset.tables[0].set("endpoints").unwrap();
        let specs = sets::elements(set);
        let bodies = element_bodies("t", &set.name, None, &specs);
        assert!(bodies.len() > 1, "{} elements in one message", specs.len());
        assert!(bodies.iter().all(|b| b.len() < 62 * 1024));
        let (_, elements) = split(&bodies);
        assert_eq!(elements.len(), specs.len());
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
