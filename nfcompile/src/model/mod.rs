//! A typed nftables ruleset: the one structure every backend (text, netlink, diff, trace) reads.
//!
//! It holds only what nf_tables itself can express — tables, chains, rules made of typed
//! matches and statements, named sets and maps with their elements — so that a backend never
//! needs to know where a rule came from. Comments carry the provenance people want to see.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use bitflags::bitflags;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

pub use crate::ir::{Family, Protocol};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
    /// Named counter objects (`counter NAME`), in name order. The kernel keeps their values
    /// across transactions that leave them alone, which is what makes counters survive
    /// incremental applies; the model holds names only, values live in the kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// One component of a set key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    /// A 32-bit integer produced by `numgen`: the endpoint slot.
    Slot,
}

impl FieldType {
    pub fn addr(family: Family) -> FieldType {
        match family {
            Family::Ipv4 => FieldType::Ipv4Addr,
            Family::Ipv6 => FieldType::Ipv6Addr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetData {
    Verdict,
    Fields(Vec<FieldType>),
    /// Names of counter objects (`type … : counter`), for `counter name … map @m`.
    Counter,
}

bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct SetFlags: u8 {
        /// Elements may be ranges (prefixes).
        const INTERVAL = 1;
        /// Elements expire.
        const TIMEOUT = 2;
        /// Elements are added from the packet path (`update @set`).
        const DYNAMIC = 4;
    }
}

/// A named set, or a map when `data` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub key: Vec<FieldType>,
    pub data: Option<SetData>,
    pub flags: SetFlags,
    /// Default element lifetime in seconds (with `TIMEOUT`).
    pub timeout: Option<u32>,
    /// Maximum element count (dynamic sets need one).
    pub size: Option<u32>,
    pub comment: Option<String>,
    pub elements: Vec<Element>,
}

impl Set {
    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Element {
    pub key: Vec<Value>,
    pub data: Option<ElementData>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementData {
    Verdict(Verdict),
    Values(Vec<Value>),
    /// The counter object an element of a counter map names.
    Counter(String),
}

/// A constant, as it appears in elements and comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Addr(IpAddr),
    /// Only in interval sets and prefix comparisons.
    Prefix(IpNetwork),
    Proto(Protocol),
    Port(u16),
    Integer(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// Point a jump or goto at the new name of a renamed chain.
    pub fn retarget<S: BuildHasher>(&mut self, renames: &HashMap<String, String, S>) {
        if let Verdict::Jump(c) | Verdict::Goto(c) = self {
            if let Some(to) = renames.get(c) {
                *c = to.clone();
            }
        }
    }

    /// The chain this verdict continues in, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// Matches (all must hold), then statements in order. A rule without statements only counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub statements: Vec<Statement>,
    pub comment: Option<String>,
}

impl Rule {
    /// Chains this rule jumps or goes to.
    pub fn jump_targets(&self) -> impl Iterator<Item = &str> {
        self.statements.iter().filter_map(|s| match s {
            Statement::Verdict(v) => v.target(),
            _ => None,
        })
    }

    /// See [`Verdict::retarget`].
    pub fn retarget<S: BuildHasher>(&mut self, renames: &HashMap<String, String, S>) {
        for s in &mut self.statements {
            if let Statement::Verdict(v) = s {
                v.retarget(renames);
            }
        }
    }
}

impl Element {
    /// See [`Verdict::retarget`].
    pub fn retarget<S: BuildHasher>(&mut self, renames: &HashMap<String, String, S>) {
        if let Some(ElementData::Verdict(v)) = &mut self.data {
            v.retarget(renames);
        }
    }
}

/// A value computed from the packet, its conntrack entry or the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    Saddr(Family),
    Daddr(Family),
    L4Proto,
    /// Transport destination port (`th dport`).
    Dport,
    /// The destination address before DNAT.
    CtOriginalDaddr(Family),
    /// The destination port before DNAT.
    CtOriginalDport,
    /// `numgen random mod modulus offset offset`.
    NumgenRandom {
        modulus: u32,
        offset: u32,
    },
    /// `numgen inc mod modulus offset offset`: a counter of the rule, for round robin.
    NumgenInc {
        modulus: u32,
        offset: u32,
    },
    /// `jhash ip saddr mod modulus seed 0x0 offset offset`: the client's Maglev slot.
    JhashSaddr {
        family: Family,
        modulus: u32,
        offset: u32,
    },
}

impl Expr {
    /// Bytes the kernel loads for it (an address 4 or 16, the protocol 1, a port 2, a number 4).
    pub fn byte_len(&self) -> u32 {
        match self {
            Expr::Saddr(f) | Expr::Daddr(f) | Expr::CtOriginalDaddr(f) => match f {
                Family::Ipv4 => 4,
                Family::Ipv6 => 16,
            },
            Expr::L4Proto => 1,
            Expr::Dport | Expr::CtOriginalDport => 2,
            Expr::NumgenRandom { .. } | Expr::NumgenInc { .. } | Expr::JhashSaddr { .. } => 4,
        }
    }

    /// Bytes it takes in a concatenation: [`Expr::byte_len`] in whole 32-bit registers.
    pub fn register_len(&self) -> u32 {
        self.byte_len().div_ceil(4) * 4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrSide {
    Source,
    Destination,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// `expr == value` (or `!=`); a `Prefix` value compares the masked address.
    Cmp {
        expr: Expr,
        value: Value,
        negate: bool,
    },
    /// `expr . expr … @set` (or `!=`); `Anonymous` sets are written inline.
    Lookup {
        key: Vec<Expr>,
        set: SetRef,
        negate: bool,
    },
    /// `meta mark & mask == 0` (negate: `!= 0`): one mark bit, never the others.
    MarkBitClear { mask: u32, negate: bool },
    /// `fib saddr type local` / `fib daddr type local`.
    FibLocal { side: AddrSide, negate: bool },
    /// `ct status dnat`.
    CtStatusDnat,
    /// `iifname "name"` (with `prefix`: `"name*"`).
    IifName {
        name: String,
        prefix: bool,
        negate: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SetRef {
    Named(String),
    Anonymous(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Statement {
    Verdict(Verdict),
    /// `key vmap @map`: continue as the matching element says; no match falls through.
    VerdictMap {
        key: Vec<Expr>,
        map: String,
    },
    /// `meta mark set meta mark | bits`.
    MarkOr(u32),
    /// `meta mark set meta mark ^ bits` (clears a bit known to be set).
    MarkXor(u32),
    /// `dnat to key map @map`: address and port from the map; no match falls through.
    DnatMap {
        family: Family,
        key: Vec<Expr>,
        map: String,
    },
    /// `update @set { key timeout T : data }` — refresh a dynamic map from the packet path.
    UpdateMap {
        set: String,
        key: Vec<Expr>,
        data: Vec<Expr>,
        timeout: u32,
    },
    /// `counter name key map @map`: count the packet in the counter the element names. No
    /// element ends the rule here (its later statements do not run), as in the kernel.
    CounterMap {
        key: Vec<Expr>,
        map: String,
    },
    Masquerade {
        fully_random: bool,
    },
    /// ICMP port unreachable / TCP reset, as the kernel's default `reject`.
    Reject,
}
