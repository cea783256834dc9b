//! What a change means for services, for `nfcompile plan`.
//!
//! Read from the models themselves, so it works the same against the live kernel (readback
//! keeps comments) as against a file: dispatch elements carry `namespace/name:port` comments,
//! and endpoint maps are keyed by the same frontend.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::{Op, Transaction};
use crate::lower::{names, LOCAL_SLOT_OFFSET};
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

/// An endpoint map, sharded or not.
fn is_endpoint_map(set: &str) -> bool {
    set.starts_with(names::ENDPOINTS) || set.starts_with(names::NODEPORT_ENDPOINTS)
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
        // Endpoints by frontend key, from every endpoint map (sharded or not).
        let mut eps: BTreeMap<Vec<Value>, BTreeSet<String>> = BTreeMap::new();
        for s in t.sets.iter().filter(|s| is_endpoint_map(&s.name)) {
            for e in &s.elements {
                let (Some(Value::Integer(slot)), Some(ElementData::Values(v))) =
                    (e.key.last(), &e.data)
                else {
                    continue;
                };
                let key = &e.key[..e.key.len() - 1];
                if *slot >= LOCAL_SLOT_OFFSET || !wanted(key) {
                    continue;
                }
                let key = key.to_vec();
                let ep = match v.as_slice() {
                    [Value::Addr(std::net::IpAddr::V6(a)), Value::Port(p)] => format!("[{a}]:{p}"),
                    [a, p] => format!("{}:{}", fmt_value(a), fmt_value(p)),
                    _ => continue,
                };
                eps.entry(key).or_default().insert(ep);
            }
        }
        for map in [names::SERVICE_IPS, names::SERVICE_NODEPORTS] {
            let Some(s) = t.set(map) else { continue };
            for e in s.elements.iter().filter(|e| wanted(&e.key)) {
                let Some(comment) = &e.comment else { continue };
                let (id, kind) = comment.split_once(' ').unwrap_or((comment, ""));
                let service = id.split(':').next().unwrap_or(id).to_string();
                let label = match (kind, e.key.as_slice()) {
                    ("nodeport", [proto, port]) => {
                        format!("node port {}/{}", fmt_value(port), fmt_value(proto))
                    }
                    ("external", [addr, proto, port]) => format!(
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
                out.insert(
                    (fam.clone(), e.key.clone()),
                    Frontend {
                        service,
                        label,
                        endpoints: eps.get(&e.key).cloned().unwrap_or_default(),
                        target,
                    },
                );
            }
        }
    }
    out
}

fn summary(f: &Frontend) -> String {
    match f.target.as_str() {
        "reject" => format!("{} → no endpoints (rejected)", f.label),
        "drop" => format!("{} → no local endpoints (dropped)", f.label),
        _ => format!(
            "{} → {} endpoint{}",
            f.label,
            f.endpoints.len(),
            if f.endpoints.len() == 1 { "" } else { "s" }
        ),
    }
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
                if old.endpoints != f.endpoints && old.target != "reject" && f.target != "reject" {
                    let gone: Vec<String> = old
                        .endpoints
                        .difference(&f.endpoints)
                        .map(|e| format!("−{e}"))
                        .collect();
                    let new: Vec<String> = f
                        .endpoints
                        .difference(&old.endpoints)
                        .map(|e| format!("+{e}"))
                        .collect();
                    let mut what: Vec<String> = gone;
                    what.extend(new);
                    entry.2.push(format!(
                        "{}: endpoints {} → {} ({})",
                        f.label,
                        old.endpoints.len(),
                        f.endpoints.len(),
                        what.join(", ")
                    ));
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
