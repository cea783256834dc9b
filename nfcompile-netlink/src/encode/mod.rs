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

// Messages by nf_tables object: `objects` tables, chains, sets and counters, `elements` set
// elements, `rules` rules and their expressions; the batch and its provenance are here.
mod elements;
mod objects;
mod rules;

use objects::*;

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
}
