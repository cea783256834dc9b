//! Chains named after what they do: behaviour chains (one per way a frontend behaves, shared
//! by every frontend that behaves alike), selection chains (one per endpoint list kind and slot
//! capacity) and affinity chains (one per timeout). Each name is written by `Display` and
//! read back by `parse` here.

use std::fmt;

use super::maps::Shard;

/// How a frontend is addressed, which decides the key of its maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyed {
    /// `daddr . l4proto . dport`: cluster, external and load-balancer IPs.
    Addr,
    /// `l4proto . dport` on a node-port address.
    NodePort,
}

/// Which of a frontend's endpoint lists a selection uses, and its slot capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct List {
    /// This node's endpoints (slots from [`super::LOCAL_SLOT_OFFSET`]) rather than all.
    pub local: bool,
    /// How a slot is picked.
    pub selection: Selection,
}

/// How a selection chain picks a slot of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selection {
    /// Random draws over a capacity class (rejection sampling; see `lower::slots`).
    Random {
        /// Slots of the class.
        capacity: u32,
    },
    /// In turn over exactly this many filled slots (`numgen inc mod n`, no misses); such lists
    /// re-point their frontend when the count changes.
    RoundRobin {
        /// Slots filled.
        filled: u32,
    },
    /// A Maglev table of this many entries, picked by a hash of the client.
    Maglev {
        /// Entries of the table.
        size: u32,
    },
}

/// Who masquerades what a frontend sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Masq {
    /// Nobody.
    No,
    /// Traffic not from a pod (kube-proxy's "off-cluster" masquerade for cluster IPs).
    OffCluster,
    /// Everything.
    Always,
}

/// Where a frontend sends its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// To one list.
    Select(List),
    /// `externalTrafficPolicy: Local`: pods and the node itself use the cluster list (the node
    /// masqueraded), external clients only local endpoints — or are dropped without one (the
    /// local selection chain ends in `drop`, so gaining or losing the last local endpoint
    /// changes elements only).
    LocalPolicy {
        /// For pods and the node.
        cluster: List,
        /// For external clients.
        local: List,
    },
}

/// Which kind of frontend a behaviour serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A cluster IP.
    ClusterIp,
    /// An external or load-balancer IP.
    External,
    /// A node port.
    NodePort,
}

/// Everything a behaviour chain depends on; equal specs share one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Behaviour {
    /// The frontend's kind.
    pub role: Role,
    /// Who is masqueraded.
    pub masq: Masq,
    /// Whether clients are pinned (session affinity).
    pub affinity: bool,
    /// Where clients go.
    pub route: Route,
    /// Which endpoint map holds the frontend's endpoints, of how many.
    pub shard: Shard,
}

impl Behaviour {
    /// The key kind of the frontend's maps.
    pub fn keyed(&self) -> Keyed {
        match self.role {
            Role::NodePort => Keyed::NodePort,
            _ => Keyed::Addr,
        }
    }

    /// The chain's name, e.g. `cluster-ip-masq-offcluster-affinity-8`.
    pub fn chain_name(&self) -> String {
        BehaviourName::from(self).to_string()
    }
}

/// What a behaviour chain's name says: a [`Behaviour`] with the shard's index only (the name
/// carries `-shardN` when there is more than one shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BehaviourName {
    /// The frontend's kind.
    pub role: Role,
    /// Who is masqueraded.
    pub masq: Masq,
    /// Whether clients are pinned.
    pub affinity: bool,
    /// The endpoint map shard, if the map is sharded.
    pub shard: Option<u8>,
    /// Where clients go.
    pub route: Route,
}

impl From<&Behaviour> for BehaviourName {
    fn from(b: &Behaviour) -> BehaviourName {
        BehaviourName {
            role: b.role,
            masq: b.masq,
            affinity: b.affinity,
            shard: b.shard.named_index(),
            route: b.route,
        }
    }
}

impl fmt::Display for BehaviourName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.role {
            Role::ClusterIp => "cluster-ip",
            Role::External => "external",
            Role::NodePort => "nodeport",
        })?;
        f.write_str(match self.masq {
            Masq::No => "",
            Masq::OffCluster => "-masq-offcluster",
            Masq::Always => "-masq",
        })?;
        if self.affinity {
            f.write_str("-affinity")?;
        }
        f.write_str(&Shard::suffix_of(self.shard))?;
        match self.route {
            Route::Select(list) => write!(f, "-{}", ListToken(list)),
            Route::LocalPolicy { cluster, local } => {
                write!(f, "-local-{}-{}", ListToken(cluster), ListToken(local))
            }
        }
    }
}

impl BehaviourName {
    /// Read a name written by `Display`; `None` for any other chain.
    pub fn parse(name: &str) -> Option<BehaviourName> {
        let (role, rest) = [
            (Role::ClusterIp, "cluster-ip"),
            (Role::External, "external"),
            (Role::NodePort, "nodeport"),
        ]
        .into_iter()
        .find_map(|(role, token)| Some((role, name.strip_prefix(token)?)))?;
        let (masq, rest) = if let Some(r) = rest.strip_prefix("-masq-offcluster") {
            (Masq::OffCluster, r)
        } else if let Some(r) = rest.strip_prefix("-masq") {
            (Masq::Always, r)
        } else {
            (Masq::No, rest)
        };
        let (affinity, rest) = match rest.strip_prefix("-affinity") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (shard, rest) = Shard::strip_suffix_prefix(rest)?;
        let rest = rest.strip_prefix('-')?;
        let route = match rest.strip_prefix("local-") {
            Some(lists) => {
                let (cluster, local) = lists.split_once('-')?;
                Route::LocalPolicy {
                    cluster: ListToken::parse(cluster)?,
                    local: ListToken::parse(local)?,
                }
            }
            None => Route::Select(ListToken::parse(rest)?),
        };
        Some(BehaviourName {
            role,
            masq,
            affinity,
            shard,
            route,
        })
    }

    /// Whether the chain sends clients to this node's endpoints only: an
    /// `externalTrafficPolicy: Local` frontend (its external clients) or an
    /// `internalTrafficPolicy: Local` one. `plan` uses this to say how many endpoints are local.
    pub fn is_local(&self) -> bool {
        match self.route {
            Route::Select(list) => list.local,
            Route::LocalPolicy { .. } => true,
        }
    }
}

/// A list as behaviour names spell it: `8`, `rr3`, `mg251`, and `l…` for a local list.
struct ListToken(List);

impl fmt::Display for ListToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.local {
            f.write_str("l")?;
        }
        match self.0.selection {
            Selection::Random { capacity } => write!(f, "{capacity}"),
            Selection::RoundRobin { filled } => write!(f, "rr{filled}"),
            Selection::Maglev { size } => write!(f, "mg{size}"),
        }
    }
}

impl ListToken {
    fn parse(token: &str) -> Option<List> {
        let (local, rest) = match token.strip_prefix('l') {
            Some(r) => (true, r),
            None => (false, token),
        };
        let number = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let selection = if let Some(n) = rest.strip_prefix("rr") {
            Selection::RoundRobin { filled: number(n)? }
        } else if let Some(n) = rest.strip_prefix("mg") {
            Selection::Maglev { size: number(n)? }
        } else {
            Selection::Random {
                capacity: number(rest)?,
            }
        };
        Some(List { local, selection })
    }
}

/// A selection chain: which map's list it draws from, e.g. `endpoints-8`,
/// `rr-nodeport-local-endpoints-shard1-3`, `maglev-endpoints-251`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SelectionChain {
    /// The key kind of the frontends it serves.
    pub keyed: Keyed,
    /// The endpoint map shard, if the map is sharded.
    pub shard: Option<u8>,
    /// The list and how it is drawn from.
    pub list: List,
}

impl SelectionChain {
    /// The selection chain of `list` for frontends keyed `keyed` in `shard`.
    pub fn new(keyed: Keyed, shard: Shard, list: List) -> SelectionChain {
        SelectionChain {
            keyed,
            shard: shard.named_index(),
            list,
        }
    }

    /// Read a name written by `Display`; `None` for any other chain.
    pub fn parse(name: &str) -> Option<SelectionChain> {
        let (kind, rest) = if let Some(r) = name.strip_prefix("rr-") {
            ("rr", r)
        } else if let Some(r) = name.strip_prefix("maglev-") {
            ("maglev", r)
        } else {
            ("", name)
        };
        let (keyed, rest) = match rest.strip_prefix("nodeport-") {
            Some(r) => (Keyed::NodePort, r),
            None => (Keyed::Addr, rest),
        };
        let (local, rest) = match rest.strip_prefix("local-") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let rest = rest.strip_prefix("endpoints")?;
        let (shard, rest) = Shard::strip_suffix_prefix(rest)?;
        let size = rest.strip_prefix('-')?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let size: u32 = size.parse().ok()?;
        let selection = match kind {
            "rr" => Selection::RoundRobin { filled: size },
            "maglev" => Selection::Maglev { size },
            _ => Selection::Random { capacity: size },
        };
        Some(SelectionChain {
            keyed,
            shard,
            list: List { local, selection },
        })
    }
}

impl fmt::Display for SelectionChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, size) = match self.list.selection {
            Selection::Random { capacity } => ("", capacity),
            Selection::RoundRobin { filled } => ("rr-", filled),
            Selection::Maglev { size } => ("maglev-", size),
        };
        write!(
            f,
            "{kind}{}{}endpoints{}-{size}",
            if self.keyed == Keyed::NodePort {
                "nodeport-"
            } else {
                ""
            },
            if self.list.local { "local-" } else { "" },
            Shard::suffix_of(self.shard),
        )
    }
}

/// The chain that pins clients of frontends whose affinity lasts `timeout` seconds.
pub fn affinity_chain_name(timeout: u32) -> String {
    format!("affinity-{timeout}s")
}

/// The timeout of an affinity chain named by [`affinity_chain_name`].
pub fn is_affinity_chain(name: &str) -> Option<u32> {
    let seconds = name.strip_prefix("affinity-")?.strip_suffix('s')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seconds.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Vec<List> {
        let mut out = Vec::new();
        for local in [false, true] {
            for selection in [
                Selection::Random { capacity: 8 },
                Selection::Random { capacity: 1024 },
                Selection::RoundRobin { filled: 3 },
                Selection::Maglev { size: 251 },
            ] {
                out.push(List { local, selection });
            }
        }
        out
    }

    fn shards() -> [Shard; 3] {
        [
            Shard { index: 0, count: 1 },
            Shard { index: 0, count: 4 },
            Shard {
                index: 13,
                count: 16,
            },
        ]
    }

    #[test]
    fn behaviour_names_read_back_as_what_they_were_made_of() {
        let mut names = std::collections::HashSet::new();
        for role in [Role::ClusterIp, Role::External, Role::NodePort] {
            for masq in [Masq::No, Masq::OffCluster, Masq::Always] {
                for affinity in [false, true] {
                    for shard in shards() {
                        let mut routes: Vec<Route> =
                            lists().into_iter().map(Route::Select).collect();
                        for (c, l) in lists().into_iter().zip(lists().into_iter().rev()) {
                            routes.push(Route::LocalPolicy {
                                cluster: c,
                                local: l,
                            });
                        }
                        for route in routes {
                            let b = Behaviour {
                                role,
                                masq,
                                affinity,
                                route,
                                shard,
                            };
                            let name = b.chain_name();
                            assert_eq!(
                                BehaviourName::parse(&name),
                                Some(BehaviourName::from(&b)),
                                "{name}"
                            );
                            let local = match route {
                                Route::Select(l) => l.local,
                                Route::LocalPolicy { .. } => true,
                            };
                            assert_eq!(BehaviourName::parse(&name).unwrap().is_local(), local);
                            assert!(names.insert(name.clone()), "two behaviours named {name}");
                            assert!(SelectionChain::parse(&name).is_none(), "{name}");
                            assert_eq!(is_affinity_chain(&name), None);
                        }
                    }
                }
            }
        }
        assert_eq!(
            Behaviour {
                role: Role::ClusterIp,
                masq: Masq::OffCluster,
                affinity: true,
                route: Route::Select(lists()[0]),
                shard: shards()[0],
            }
            .chain_name(),
            "cluster-ip-masq-offcluster-affinity-8"
        );
    }

    #[test]
    fn selection_chain_names_read_back_as_what_they_were_made_of() {
        for keyed in [Keyed::Addr, Keyed::NodePort] {
            for shard in shards() {
                for list in lists() {
                    let chain = SelectionChain::new(keyed, shard, list);
                    let name = chain.to_string();
                    assert_eq!(SelectionChain::parse(&name), Some(chain), "{name}");
                    assert!(BehaviourName::parse(&name).is_none(), "{name}");
                }
            }
        }
        let chain = SelectionChain::new(
            Keyed::NodePort,
            Shard { index: 1, count: 2 },
            List {
                local: true,
                selection: Selection::RoundRobin { filled: 3 },
            },
        );
        assert_eq!(chain.to_string(), "rr-nodeport-local-endpoints-shard1-3");
    }

    #[test]
    fn other_chains_are_none_of_these() {
        for name in [
            "services",
            "masquerading",
            "affinity-update",
            "affinity-lookup",
            "reject-chain",
            "count-traffic",
            "nat-prerouting",
            "endpoints",
            "cluster-ip",
            "cluster-ip-",
            "cluster-ip-x8",
            "external-local-8",
            "endpoints-8x",
            "reject",
            "drop",
        ] {
            assert!(BehaviourName::parse(name).is_none(), "{name}");
            assert!(SelectionChain::parse(name).is_none(), "{name}");
            assert_eq!(is_affinity_chain(name), None, "{name}");
        }
        assert_eq!(is_affinity_chain(&affinity_chain_name(10800)), Some(10800));
    }
}
