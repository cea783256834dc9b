//! Following one packet through a compiled ruleset, offline: a peer backend that evaluates the
//! model hook by hook, the way the kernel would.
//!
//! The first packet of a new connection is traced (NAT chains only see that one): the
//! destination-NAT hook (`prerouting`, or `output` for the node's own traffic), then
//! `postrouting` for source NAT. `numgen` forks the trace into one branch per value, each with
//! its probability; the session-affinity map is empty for a first packet. Any construct the
//! tracer does not understand is an error, never skipped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::model::*;

/// Where the packet comes from, which decides its hook and what `fib saddr type local` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A pod on this node (arrives on a pod interface).
    Pod,
    /// This node itself (leaves through the output hook).
    Node,
    /// Anything else (arrives from the network).
    External,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub proto: Protocol,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub origin: Origin,
}

/// One way the packet can go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Branch {
    pub probability: f64,
    /// Every rule that matched, as `chain: rule`.
    pub steps: Vec<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Destination rewritten; `masquerade` when the source is rewritten too.
    Dnat {
        to: String,
        masquerade: bool,
    },
    Drop,
    Reject,
    /// No service rule applied.
    Accept {
        masquerade: bool,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masq = |m: bool| if m { ", masqueraded" } else { "" };
        match self {
            Outcome::Dnat { to, masquerade } => write!(f, "dnat to {to}{}", masq(*masquerade)),
            Outcome::Drop => f.write_str("drop"),
            Outcome::Reject => f.write_str("reject"),
            Outcome::Accept { masquerade } => {
                write!(f, "accept (no service rule){}", masq(*masquerade))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub branches: Vec<Branch>,
}

impl Trace {
    /// The last line of `nfcompile trace`: `verdict: dnat A:P B:P masquerade`, `verdict: drop`…
    pub fn verdict_line(&self) -> String {
        let mut dnat: Vec<String> = Vec::new();
        let mut masq = Vec::new();
        let mut other = Vec::new();
        for b in &self.branches {
            match &b.outcome {
                Outcome::Dnat { to, masquerade } => {
                    if !dnat.contains(to) {
                        dnat.push(to.clone());
                    }
                    masq.push(*masquerade);
                }
                Outcome::Drop => other.push("drop"),
                Outcome::Reject => other.push("reject"),
                Outcome::Accept { .. } => other.push("accept"),
            }
        }
        if !dnat.is_empty() {
            let mut line = format!("verdict: dnat {}", dnat.join(" "));
            if masq.iter().all(|m| *m) {
                line.push_str(" masquerade");
            } else if masq.iter().any(|m| *m) {
                line.push_str(" masquerade-on-some-branches");
            }
            return line;
        }
        other.dedup();
        format!("verdict: {}", other.join(" "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot trace: {0}")]
pub struct TraceError(pub String);

/// The state one branch carries through the hooks.
#[derive(Clone)]
struct State<'a> {
    probability: f64,
    steps: Vec<Step<'a>>,
    mark: u32,
    dst: IpAddr,
    dst_port: u16,
    dnat: bool,
}

/// One line of a branch's story, rendered only for the branches a trace keeps: a Maglev or
/// affinity fork makes hundreds of branches that merge into a few, and rendering every
/// matched rule on each of them was most of the tracer's time.
#[derive(Clone, Copy)]
enum Step<'a> {
    Rule { chain: &'a str, rule: &'a Rule },
    Counted(&'a str),
    Route(&'static str),
}

impl Step<'_> {
    fn render(&self) -> String {
        match self {
            Step::Rule { chain, rule } => {
                let mut line = format!("{chain}: ");
                crate::emit::text::write_rule(&mut line, rule);
                line
            }
            Step::Counted(name) => format!("  counted in {name}"),
            Step::Route(text) => (*text).to_string(),
        }
    }
}

/// A finished branch whose steps are not rendered yet.
struct Path<'a> {
    probability: f64,
    steps: Vec<Step<'a>>,
    outcome: Outcome,
}

#[derive(Clone)]
enum Flow {
    Continue,
    Accept,
    Drop,
    Reject,
    Dnat,
    Masquerade,
    Return,
    /// The rule stopped (a map lookup missed); the chain goes on with the next rule.
    Break,
}

/// Trace `packet` through `ruleset` as seen on a node with `node_addresses`. To trace many
/// packets through one ruleset, [`Prepared`] indexes its sets once.
pub fn trace(
    ruleset: &Ruleset,
    node_addresses: &[IpAddr],
    packet: &Packet,
) -> Result<Trace, TraceError> {
    Prepared::new(ruleset).trace(node_addresses, packet)
}

/// Elements by exact key, per table and set: a lookup is then one hash probe rather than a
/// walk over the set (a selection chain probes its map up to 21 × capacity times). Sets whose
/// keys hold prefixes (intervals) are walked.
type Index<'r> = FxHashMap<(Family, &'r str), FxHashMap<&'r [Value], &'r Element>>;

/// A ruleset ready to trace many packets.
pub struct Prepared<'r> {
    ruleset: &'r Ruleset,
    index: Index<'r>,
}

impl<'r> Prepared<'r> {
    pub fn new(ruleset: &'r Ruleset) -> Prepared<'r> {
        let mut index = Index::default();
        for t in &ruleset.tables {
            for s in &t.sets {
                let exact = s
                    .elements
                    .iter()
                    .all(|e| !e.key.iter().any(|v| matches!(v, Value::Prefix(_))));
                if exact && !s.flags.contains(SetFlags::INTERVAL) {
                    let by_key = s.elements.iter().map(|e| (e.key.as_slice(), e)).collect();
                    index.insert((t.family, s.name.as_str()), by_key);
                }
            }
        }
        Prepared { ruleset, index }
    }

    /// Trace `packet` as seen on a node with `node_addresses`.
    pub fn trace(&self, node_addresses: &[IpAddr], packet: &Packet) -> Result<Trace, TraceError> {
        let ruleset = self.ruleset;
        let family = match packet.dst {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        };
        let Some(table) = ruleset.tables.iter().find(|t| t.family == family) else {
            return Ok(Trace {
                branches: vec![Branch {
                    probability: 1.0,
                    steps: vec![],
                    outcome: Outcome::Accept { masquerade: false },
                }],
            });
        };
        let t = Tracer {
            table,
            index: &self.index,
            node_addresses,
            packet,
        };
        // The first hook: `output` for the node's own packets, `prerouting` for arriving ones.
        let first = if packet.origin == Origin::Node {
            Hook::Output
        } else {
            Hook::Prerouting
        };
        let start = State {
            probability: 1.0,
            steps: Vec::new(),
            mark: 0,
            dst: packet.dst,
            dst_port: packet.dst_port,
            dnat: false,
        };
        let mut branches = Vec::new();
        for (mut state, flow) in t.hook(first, start)? {
            if let Some(outcome) = stopped(&flow) {
                branches.push(branch(state, outcome));
                continue;
            }
            // The routing decision sees the destination after DNAT: a packet for one of this
            // node's addresses goes up to `input`, anything else is forwarded (or, for the node's
            // own packets, sent) and leaves through `postrouting`.
            let delivered = packet.origin != Origin::Node && t.local(state.dst);
            let after: Vec<Hook> = if delivered {
                state
                    .steps
                    .push(Step::Route("route: local delivery (input)"));
                vec![Hook::Input]
            } else if packet.origin == Origin::Node {
                state
                    .steps
                    .push(Step::Route("route: out of this node (postrouting)"));
                vec![Hook::Postrouting]
            } else {
                state
                    .steps
                    .push(Step::Route("route: forwarded (forward, postrouting)"));
                vec![Hook::Forward, Hook::Postrouting]
            };
            let mut states = vec![(state, Flow::Continue)];
            for hook in after {
                let mut next = Vec::new();
                for (s, f) in states {
                    if stopped(&f).is_some() {
                        next.push((s, f));
                    } else {
                        next.extend(t.hook(hook, s)?);
                    }
                }
                states = next;
            }
            for (s, f) in states {
                let outcome = match stopped(&f) {
                    Some(o) => o,
                    None => {
                        let masquerade = matches!(f, Flow::Masquerade);
                        if s.dnat {
                            Outcome::Dnat {
                                to: endpoint(s.dst, s.dst_port),
                                masquerade,
                            }
                        } else {
                            Outcome::Accept { masquerade }
                        }
                    }
                };
                branches.push(branch(s, outcome));
            }
        }
        Ok(Trace {
            branches: merge(branches),
        })
    }
}

/// One branch per outcome: repeated draws reach the same endpoint along several paths (a first
/// draw, a second after a miss, …); their probabilities add up and the likeliest path is shown.
fn merge(branches: Vec<Path>) -> Vec<Branch> {
    let mut out: Vec<Path> = Vec::new();
    for b in branches {
        match out.iter_mut().find(|o| o.outcome == b.outcome) {
            Some(o) => {
                if b.probability > o.probability {
                    o.steps = b.steps;
                }
                o.probability += b.probability;
            }
            None => out.push(b),
        }
    }
    out.into_iter()
        .map(|p| Branch {
            probability: p.probability,
            steps: p.steps.iter().map(Step::render).collect(),
            outcome: p.outcome,
        })
        .collect()
}

/// The outcome of a flow that ends the packet's way through the hooks.
fn stopped(flow: &Flow) -> Option<Outcome> {
    match flow {
        Flow::Drop => Some(Outcome::Drop),
        Flow::Reject => Some(Outcome::Reject),
        _ => None,
    }
}

fn branch(s: State, outcome: Outcome) -> Path {
    Path {
        probability: s.probability,
        steps: s.steps,
        outcome,
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}:{port}"),
        IpAddr::V6(v) => format!("[{v}]:{port}"),
    }
}

struct Tracer<'a> {
    table: &'a Table,
    index: &'a Index<'a>,
    node_addresses: &'a [IpAddr],
    packet: &'a Packet,
}

impl<'a> Tracer<'a> {
    /// Every base chain on `hook` (filter and nat alike), in priority order. `accept` ends one
    /// base chain, not the hook; `drop` and `reject` end the packet.
    fn hook(&self, hook: Hook, state: State<'a>) -> Result<Vec<(State<'a>, Flow)>, TraceError> {
        let mut chains: Vec<&'a Chain> = self
            .table
            .chains
            .iter()
            .filter(|c| c.base.is_some_and(|b| b.hook == hook))
            .collect();
        chains.sort_by_key(|c| c.base.map(|b| b.priority));
        let mut states = vec![(state, Flow::Continue)];
        for chain in chains {
            let mut next = Vec::new();
            for (s, flow) in states {
                match flow {
                    Flow::Continue | Flow::Accept | Flow::Return => {
                        next.extend(self.chain(chain, s, 0)?)
                    }
                    // NAT ends its base chain like `accept`; later base chains still see the
                    // packet, and the NAT stays done.
                    Flow::Dnat | Flow::Masquerade => {
                        for (s2, f) in self.chain(chain, s, 0)? {
                            let f = match f {
                                Flow::Continue | Flow::Accept | Flow::Return => flow.clone(),
                                other => other,
                            };
                            next.push((s2, f));
                        }
                    }
                    done => next.push((s, done)),
                }
            }
            states = next;
        }
        Ok(states
            .into_iter()
            .map(|(s, f)| {
                (
                    s,
                    if matches!(f, Flow::Return) {
                        Flow::Continue
                    } else {
                        f
                    },
                )
            })
            .collect())
    }

    /// Run `chain` from rule `from`; returns every branch with how it ended.
    fn chain(
        &self,
        chain: &'a Chain,
        state: State<'a>,
        depth: usize,
    ) -> Result<Vec<(State<'a>, Flow)>, TraceError> {
        if depth > 16 {
            return Err(TraceError(format!(
                "jumps nest deeper than 16 at chain {}",
                chain.name
            )));
        }
        let mut done = Vec::new();
        let mut live = vec![state];
        for rule in &chain.rules {
            let mut still = Vec::new();
            for s in live {
                if !self.matches(rule, &s)? {
                    still.push(s);
                    continue;
                }
                let mut s = s;
                s.steps.push(Step::Rule {
                    chain: &chain.name,
                    rule,
                });
                for (mut s2, flow) in self.statements(&rule.statements, s, depth)? {
                    match flow {
                        Flow::Continue => still.push(s2),
                        Flow::Break => {
                            s2.steps.pop(); // the rule did not apply after all
                            still.push(s2);
                        }
                        Flow::Return => done.push((s2, Flow::Continue)),
                        other => done.push((s2, other)),
                    }
                }
            }
            live = still;
        }
        done.extend(live.into_iter().map(|s| (s, Flow::Continue)));
        Ok(done)
    }

    fn statements(
        &self,
        stmts: &'a [Statement],
        state: State<'a>,
        depth: usize,
    ) -> Result<Vec<(State<'a>, Flow)>, TraceError> {
        let mut states = vec![(state, Flow::Continue)];
        for st in stmts {
            let mut next = Vec::new();
            for (mut s, flow) in states {
                if !matches!(flow, Flow::Continue) {
                    next.push((s, flow));
                    continue;
                }
                match st {
                    Statement::Verdict(v) => next.extend(self.verdict(v, s, depth)?),
                    Statement::VerdictMap { key, map } => {
                        let set = self.set(map)?;
                        let keys = self.key(key, &s)?;
                        match self.lookup(set, &keys) {
                            Some(Element {
                                data: Some(ElementData::Verdict(v)),
                                ..
                            }) => next.extend(self.verdict(v, s, depth)?),
                            Some(_) => {
                                return Err(TraceError(format!("map {map} is not a verdict map")))
                            }
                            None => next.push((s, Flow::Continue)),
                        }
                    }
                    Statement::MarkOr(b) => {
                        s.mark |= b;
                        next.push((s, Flow::Continue));
                    }
                    Statement::MarkXor(b) => {
                        s.mark ^= b;
                        next.push((s, Flow::Continue));
                    }
                    Statement::DnatMap { key, map, .. } => {
                        let set = self.set(map)?;
                        if set.flags.contains(SetFlags::DYNAMIC) {
                            // Session-affinity state: empty for a first packet.
                            next.push((s, Flow::Continue));
                            continue;
                        }
                        // Draws that land on the same endpoint are one branch, and so are
                        // all draws that miss (they go on to the next rule together).
                        let mut hits: Vec<((IpAddr, u16), f64)> = Vec::new();
                        let mut missed = 0.0;
                        for (p, keys) in self.keys_with_numgen(key, &s)? {
                            match self.lookup(set, &keys) {
                                Some(Element {
                                    data: Some(ElementData::Values(v)),
                                    ..
                                }) => match v.as_slice() {
                                    [Value::Addr(a), Value::Port(port)] => {
                                        match hits.iter_mut().find(|(to, _)| *to == (*a, *port)) {
                                            Some((_, q)) => *q += p,
                                            None => hits.push(((*a, *port), p)),
                                        }
                                    }
                                    _ => {
                                        return Err(TraceError(format!(
                                            "map {map} holds no address . port"
                                        )))
                                    }
                                },
                                _ => missed += p,
                            }
                        }
                        for ((a, port), p) in hits {
                            let mut b = s.clone();
                            b.probability *= p;
                            b.dst = a;
                            b.dst_port = port;
                            b.dnat = true;
                            next.push((b, Flow::Dnat));
                        }
                        if missed > 0.0 {
                            s.probability *= missed;
                            next.push((s, Flow::Continue));
                        }
                    }
                    Statement::CounterMap { key, map } => {
                        let keys = self.key(key, &s)?;
                        match self.lookup(self.set(map)?, &keys) {
                            Some(Element {
                                data: Some(ElementData::Counter(name)),
                                ..
                            }) => {
                                s.steps.push(Step::Counted(name));
                                next.push((s, Flow::Continue));
                            }
                            Some(_) => {
                                return Err(TraceError(format!("map {map} is not a counter map")))
                            }
                            // No element: the kernel ends the rule here.
                            None => next.push((s, Flow::Break)),
                        }
                    }
                    Statement::UpdateMap { .. } => next.push((s, Flow::Continue)), // remembers; no effect now
                    Statement::Masquerade { .. } => next.push((s, Flow::Masquerade)),
                    Statement::Reject => next.push((s, Flow::Reject)),
                }
            }
            states = next;
        }
        Ok(states)
    }

    fn verdict(
        &self,
        v: &'a Verdict,
        s: State<'a>,
        depth: usize,
    ) -> Result<Vec<(State<'a>, Flow)>, TraceError> {
        Ok(match v {
            Verdict::Accept => vec![(s, Flow::Accept)],
            Verdict::Drop => vec![(s, Flow::Drop)],
            Verdict::Return => vec![(s, Flow::Return)],
            Verdict::Jump(c) | Verdict::Goto(c) => {
                let chain = self
                    .table
                    .chain(c)
                    .ok_or_else(|| TraceError(format!("no chain {c}")))?;
                let after = self.chain(chain, s, depth + 1)?;
                let goto = matches!(v, Verdict::Goto(_));
                after
                    .into_iter()
                    .map(|(s, f)| match (f, goto) {
                        // The end of a goto'd chain returns to where the caller's caller was.
                        (Flow::Continue, true) => (s, Flow::Return),
                        (f, _) => (s, f),
                    })
                    .collect()
            }
        })
    }

    fn lookup(&self, set: &'a Set, key: &[Value]) -> Option<&'a Element> {
        match self.index.get(&(self.table.family, set.name.as_str())) {
            Some(by_key) => by_key.get(key).copied(),
            None => lookup(set, key),
        }
    }

    fn set(&self, name: &str) -> Result<&'a Set, TraceError> {
        self.table
            .set(name)
            .ok_or_else(|| TraceError(format!("no set {name}")))
    }

    fn value(&self, e: &Expr, s: &State) -> Result<Value, TraceError> {
        let p = self.packet;
        Ok(match e {
            Expr::Saddr(_) => Value::Addr(p.src),
            Expr::Daddr(_) => Value::Addr(s.dst),
            Expr::L4Proto => Value::Proto(p.proto),
            Expr::Dport => Value::Port(s.dst_port),
            // After DNAT, the original destination is the packet's first one.
            Expr::CtOriginalDaddr(_) => Value::Addr(p.dst),
            Expr::CtOriginalDport => Value::Port(p.dst_port),
            Expr::NumgenRandom { .. } | Expr::NumgenInc { .. } | Expr::JhashSaddr { .. } => {
                return Err(TraceError("numgen or jhash outside a map key".into()))
            }
        })
    }

    fn key(&self, key: &[Expr], s: &State) -> Result<Vec<Value>, TraceError> {
        key.iter().map(|e| self.value(e, s)).collect()
    }

    /// Every value of the key, forking on `numgen` with its probability.
    fn keys_with_numgen(
        &self,
        key: &[Expr],
        s: &State,
    ) -> Result<Vec<(f64, Vec<Value>)>, TraceError> {
        let mut out = vec![(1.0, Vec::new())];
        for e in key {
            out = match e {
                // A counter visits every value in turn: over many connections, each as often
                // as a random draw would.
                // A hash of the client address: one slot per client, each slot as likely as
                // the next across clients (the tracer does not compute jhash itself).
                Expr::NumgenRandom { modulus, offset }
                | Expr::NumgenInc { modulus, offset }
                | Expr::JhashSaddr {
                    modulus, offset, ..
                } => out
                    .into_iter()
                    .flat_map(|(p, k)| {
                        (0..*modulus).map(move |i| {
                            let mut k = k.clone();
                            k.push(Value::Integer(offset + i));
                            (p / f64::from(*modulus), k)
                        })
                    })
                    .collect(),
                e => {
                    let v = self.value(e, s)?;
                    out.into_iter()
                        .map(|(p, mut k)| {
                            k.push(v);
                            (p, k)
                        })
                        .collect()
                }
            };
        }
        Ok(out)
    }

    fn local(&self, a: IpAddr) -> bool {
        a.is_loopback() || self.node_addresses.contains(&a)
    }

    fn matches(&self, rule: &Rule, s: &State) -> Result<bool, TraceError> {
        for m in &rule.matches {
            let hit = match m {
                Match::Cmp {
                    expr,
                    value,
                    negate,
                } => {
                    let v = self.value(expr, s)?;
                    value_matches(value, &v) != *negate
                }
                Match::Lookup { key, set, negate } => {
                    let keys = self.key(key, s)?;
                    let found = match set {
                        SetRef::Named(n) => self.lookup(self.set(n)?, &keys).is_some(),
                        SetRef::Anonymous(values) => {
                            values.iter().any(|v| value_matches(v, &keys[0]))
                        }
                    };
                    found != *negate
                }
                Match::MarkBitClear { mask, negate } => (s.mark & mask == 0) != *negate,
                Match::FibLocal { side, negate } => {
                    let a = match side {
                        AddrSide::Source => self.packet.src,
                        AddrSide::Destination => s.dst,
                    };
                    self.local(a) != *negate
                }
                Match::CtStatusDnat => s.dnat,
                // Pod detection by interface: a packet said to come from a pod arrives on one.
                Match::IifName { negate, .. } => (self.packet.origin == Origin::Pod) != *negate,
            };
            if !hit {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn value_matches(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::Prefix(p), Value::Addr(a)) => p.contains(*a),
        (a, b) => a == b,
    }
}

fn lookup<'s>(set: &'s Set, key: &[Value]) -> Option<&'s Element> {
    set.elements.iter().find(|e| {
        e.key.len() == key.len() && e.key.iter().zip(key).all(|(p, v)| value_matches(p, v))
    })
}

/// Probability of each distinct outcome, for tests and summaries.
pub fn outcomes(t: &Trace) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for b in &t.branches {
        *out.entry(format!("{:?}", b.outcome)).or_insert(0.0) += b.probability;
    }
    out
}

#[cfg(test)]
mod tests;
