//! What a change means for services, for `nfcompile plan`.
//!
//! Read from the models themselves, so it works the same against the live kernel (readback
//! keeps comments) as against a file: dispatch elements carry `namespace/name:port` comments,
//! and endpoint maps are keyed by the same frontend.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::{Op, Transaction};
use crate::layout::{
    is_endpoint_map, names, BehaviourName, FrontendComment, Role, LOCAL_SLOT_OFFSET,
};
use crate::model::{ElementData, Ruleset, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Add,
    Change,
    Destroy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceChange {
    /// `namespace/name`.
    pub service: String,
    pub kind: ChangeKind,
    /// One line per port or frontend, e.g. `port 80/TCP: endpoints 3 → 2 (−10.244.2.10:8080)`.
    pub details: Vec<String>,
}

/// One frontend: where, which service and port, and its cluster-wide endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frontend {
    service: String,
    /// `port 80/TCP`, `external 203.0.113.7:80/TCP`, `node port 30080/TCP`.
    label: String,
    endpoints: BTreeSet<String>,
    /// For a Local traffic policy: this node's endpoints, the only ones its (external) clients
    /// reach.
    local: Option<BTreeSet<String>>,
    /// reject, drop, or a behaviour chain.
    target: String,
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Addr(a) => a.to_string(),
        Value::Prefix(p) => p.to_string(),
        Value::Proto(p) => p.to_string(),
        Value::Port(p) => p.to_string(),
        Value::Integer(i) => i.to_string(),
    }
}

/// Frontend keys a transaction touches, or `None` when it may touch any (a table or a
/// dispatch or endpoint map replaced whole). Describing only those keeps a small plan
/// against a large table cheap.
fn scope(tx: &Transaction) -> Option<HashSet<Vec<Value>>> {
    let is_frontend = |s: &str| s == names::SERVICE_IPS || s == names::SERVICE_NODEPORTS;
    let mut keys = HashSet::new();
    for op in &tx.ops {
        match op {
            Op::AddTable { .. } | Op::DeleteTable { .. } => return None,
            Op::AddSet { set, .. } if is_endpoint_map(&set.name) || is_frontend(&set.name) => {
                return None
            }
            Op::DeleteSet { set, .. } if is_endpoint_map(set) || is_frontend(set) => return None,
            Op::AddElements { set, elements, .. } | Op::DeleteElements { set, elements, .. } => {
                for e in elements {
                    if is_frontend(set) {
                        keys.insert(e.key.clone());
                    } else if is_endpoint_map(set) && !e.key.is_empty() {
                        keys.insert(e.key[..e.key.len() - 1].to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    Some(keys)
}

fn frontends(
    rs: &Ruleset,
    scope: Option<&HashSet<Vec<Value>>>,
) -> BTreeMap<(String, Vec<Value>), Frontend> {
    let wanted = |key: &[Value]| scope.is_none_or(|s| s.contains(key));
    let mut out = BTreeMap::new();
    for t in &rs.tables {
        let fam = format!("{:?}", t.family);
        // Endpoints by frontend key, from every endpoint map (sharded or not): the cluster-wide
        // list and this node's.
        let mut eps: BTreeMap<Vec<Value>, BTreeSet<String>> = BTreeMap::new();
        let mut local_eps: BTreeMap<Vec<Value>, BTreeSet<String>> = BTreeMap::new();
        for s in t.sets.iter().filter(|s| is_endpoint_map(&s.name)) {
            for e in &s.elements {
                let (Some(Value::Integer(slot)), Some(ElementData::Values(v))) =
                    (e.key.last(), &e.data)
                else {
                    continue;
                };
                let key = &e.key[..e.key.len() - 1];
                if !wanted(key) {
                    continue;
                }
                let key = key.to_vec();
                let ep = match v.as_slice() {
                    [Value::Addr(std::net::IpAddr::V6(a)), Value::Port(p)] => format!("[{a}]:{p}"),
                    [a, p] => format!("{}:{}", fmt_value(a), fmt_value(p)),
                    _ => continue,
                };
                let list = if *slot >= LOCAL_SLOT_OFFSET {
                    &mut local_eps
                } else {
                    &mut eps
                };
                list.entry(key).or_default().insert(ep);
            }
        }
        for map in [names::SERVICE_IPS, names::SERVICE_NODEPORTS] {
            let Some(s) = t.set(map) else { continue };
            for e in s.elements.iter().filter(|e| wanted(&e.key)) {
                let Some(comment) = &e.comment else { continue };
                let Some(parsed) = FrontendComment::parse(comment) else {
                    continue;
                };
                let service = parsed.service();
                let label = match (parsed.role, e.key.as_slice()) {
                    (Role::NodePort, [proto, port]) => {
                        format!("node port {}/{}", fmt_value(port), fmt_value(proto))
                    }
                    (Role::External, [addr, proto, port]) => format!(
                        "external {}:{}/{}",
                        fmt_value(addr),
                        fmt_value(port),
                        fmt_value(proto)
                    ),
                    (_, [_, proto, port]) => {
                        format!("port {}/{}", fmt_value(port), fmt_value(proto))
                    }
                    _ => comment.clone(),
                };
                let target = match &e.data {
                    Some(ElementData::Verdict(v)) => match v.target() {
                        Some(names::REJECT_CHAIN) => "reject".to_string(),
                        Some(c) => c.to_string(),
                        None => format!("{v:?}").to_lowercase(),
                    },
                    _ => String::new(),
                };
                let local = BehaviourName::parse(&target)
                    .is_some_and(|b| b.is_local())
                    .then(|| local_eps.get(&e.key).cloned().unwrap_or_default());
                out.insert(
                    (fam.clone(), e.key.clone()),
                    Frontend {
                        service,
                        label,
                        endpoints: eps.get(&e.key).cloned().unwrap_or_default(),
                        local,
                        target,
                    },
                );
            }
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn summary(f: &Frontend) -> String {
    let n = f.endpoints.len();
    match (f.target.as_str(), &f.local) {
        ("reject", _) => format!("{} → no endpoints (rejected)", f.label),
        ("drop", _) => format!("{} → no local endpoints (dropped)", f.label),
        // internalTrafficPolicy: Local: only this node's list exists.
        (_, Some(local)) if n == 0 => {
            format!(
                "{} → {} local endpoint{}",
                f.label,
                local.len(),
                plural(local.len())
            )
        }
        (_, Some(local)) => format!(
            "{} → {n} endpoint{} ({} local)",
            f.label,
            plural(n),
            local.len()
        ),
        (_, None) => format!("{} → {n} endpoint{}", f.label, plural(n)),
    }
}

/// `−a, +b`: what left and what joined a list.
fn list_change(old: &BTreeSet<String>, new: &BTreeSet<String>) -> String {
    let gone = old.difference(new).map(|e| format!("−{e}"));
    let joined = new.difference(old).map(|e| format!("+{e}"));
    gone.chain(joined).collect::<Vec<_>>().join(", ")
}

/// A service's frontends before and after, and the lines describing what changed.
type Before<'a> = Vec<&'a Frontend>;
type After<'a> = Vec<&'a Frontend>;

/// Per service: added, changed (what) or destroyed, in service order. `tx` is
/// `diff(current, desired)`; only what it touches is looked at.
pub fn describe(current: &Ruleset, desired: &Ruleset, tx: &Transaction) -> Vec<ServiceChange> {
    if tx.is_empty() {
        return Vec::new();
    }
    let scope = scope(tx);
    let cur = frontends(current, scope.as_ref());
    let want = frontends(desired, scope.as_ref());
    let mut by_service: BTreeMap<String, (Before, After, Vec<String>)> = BTreeMap::new();
    for (k, f) in &want {
        let entry = by_service.entry(f.service.clone()).or_default();
        entry.1.push(f);
        match cur.get(k) {
            None => entry.2.push(format!("+ {}", summary(f))),
            Some(old) if old != f => {
                let same_kind = old.target != "reject"
                    && f.target != "reject"
                    && old.local.is_some() == f.local.is_some();
                if same_kind && (old.endpoints != f.endpoints || old.local != f.local) {
                    let mut parts = Vec::new();
                    if old.endpoints != f.endpoints {
                        parts.push(format!(
                            "endpoints {} → {} ({})",
                            old.endpoints.len(),
                            f.endpoints.len(),
                            list_change(&old.endpoints, &f.endpoints)
                        ));
                    }
                    if let (Some(was), Some(now)) = (&old.local, &f.local) {
                        if was != now {
                            parts.push(format!(
                                "local endpoints {} → {} ({})",
                                was.len(),
                                now.len(),
                                list_change(was, now)
                            ));
                        }
                    }
                    entry.2.push(format!("{}: {}", f.label, parts.join("; ")));
                } else {
                    entry.2.push(format!(
                        "{} (was {})",
                        summary(f),
                        summary(old).split(" → ").nth(1).unwrap_or("")
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for (k, f) in &cur {
        let entry = by_service.entry(f.service.clone()).or_default();
        entry.0.push(f);
        if !want.contains_key(k) {
            entry.2.push(format!("- {}", f.label));
        }
    }
    by_service
        .into_iter()
        .filter(|(_, (_, _, lines))| !lines.is_empty())
        .map(|(service, (old, new, lines))| {
            let kind = match (old.is_empty(), new.is_empty()) {
                (true, _) => ChangeKind::Add,
                (_, true) => ChangeKind::Destroy,
                _ => ChangeKind::Change,
            };
            let details = match kind {
                ChangeKind::Add => new.iter().map(|f| summary(f)).collect(),
                ChangeKind::Destroy => Vec::new(),
                ChangeKind::Change => lines,
            };
            ServiceChange {
                service,
                kind,
                details,
            }
        })
        .collect()
}
