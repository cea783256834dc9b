//! Endpoint maps and their shards: `endpoints`, `nodeport-endpoints`, and `…-shardN` once a
//! map is split.

use std::fmt;

use super::chains::Keyed;
use super::names;
use crate::model::Table;

/// Endpoint maps are split in shards once they would hold more than
/// [`super::SHARD_ELEMENTS`] elements: the kernel dumps a hash set by re-walking it from the
/// start for every message, so reading one map of n elements back costs O(n²); shards keep n
/// small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    /// Which shard.
    pub index: u8,
    /// Of how many.
    pub count: u8,
}

impl Shard {
    /// The shard's index as names carry it: only when there is more than one.
    pub fn named_index(self) -> Option<u8> {
        (self.count > 1).then_some(self.index)
    }

    /// `-shardN`, or nothing for an unsharded map.
    pub(crate) fn suffix_of(index: Option<u8>) -> String {
        index.map(|i| format!("-shard{i}")).unwrap_or_default()
    }

    /// Split a leading `-shardN` off `rest`: the index (if any) and what follows; `None` if
    /// `-shard` is not followed by a number.
    pub(crate) fn strip_suffix_prefix(rest: &str) -> Option<(Option<u8>, &str)> {
        let Some(after) = rest.strip_prefix("-shard") else {
            return Some((None, rest));
        };
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let index = after[..digits].parse().ok()?;
        Some((Some(index), &after[digits..]))
    }
}

/// An endpoint map's name: the key kind of its frontends and its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointMap {
    /// Address-keyed frontends, or node ports.
    pub keyed: Keyed,
    /// The shard, if the map is sharded.
    pub shard: Option<u8>,
}

impl EndpointMap {
    /// Read a name written by `Display`; `None` for any other set.
    pub fn parse(name: &str) -> Option<EndpointMap> {
        let (keyed, rest) = if let Some(r) = name.strip_prefix(names::NODEPORT_ENDPOINTS) {
            (Keyed::NodePort, r)
        } else {
            (Keyed::Addr, name.strip_prefix(names::ENDPOINTS)?)
        };
        match Shard::strip_suffix_prefix(rest)? {
            (shard, "") => Some(EndpointMap { keyed, shard }),
            _ => None,
        }
    }
}

impl fmt::Display for EndpointMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.keyed {
            Keyed::Addr => names::ENDPOINTS,
            Keyed::NodePort => names::NODEPORT_ENDPOINTS,
        };
        write!(f, "{base}{}", Shard::suffix_of(self.shard))
    }
}

/// The endpoint map of `keyed` frontends in `shard`.
pub fn endpoint_map_name(keyed: Keyed, shard: Shard) -> String {
    EndpointMap {
        keyed,
        shard: shard.named_index(),
    }
    .to_string()
}

/// Whether `set` is an endpoint map (of either key kind, sharded or not).
pub fn is_endpoint_map(set: &str) -> bool {
    EndpointMap::parse(set).is_some()
}

/// Shard counts of a lowered table: (address-keyed, node-port-keyed) endpoint maps.
pub fn shard_counts(table: &Table) -> (u8, u8) {
    let count = |keyed: Keyed| {
        table
            .sets
            .iter()
            .filter(|s| EndpointMap::parse(&s.name).is_some_and(|m| m.keyed == keyed))
            .count()
            .max(1) as u8
    };
    (count(Keyed::Addr), count(Keyed::NodePort))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_map_names_read_back_as_what_they_were_made_of() {
        for keyed in [Keyed::Addr, Keyed::NodePort] {
            for shard in [
                Shard { index: 0, count: 1 },
                Shard { index: 0, count: 2 },
                Shard {
                    index: 63,
                    count: 64,
                },
            ] {
                let name = endpoint_map_name(keyed, shard);
                assert_eq!(
                    EndpointMap::parse(&name),
                    Some(EndpointMap {
                        keyed,
                        shard: shard.named_index()
                    }),
                    "{name}"
                );
                assert!(is_endpoint_map(&name));
            }
        }
        assert_eq!(
            endpoint_map_name(Keyed::NodePort, Shard { index: 3, count: 4 }),
            "nodeport-endpoints-shard3"
        );
        for other in [
            "endpoints-8",
            "endpoints-shard",
            "endpoints-shardx",
            "endpoints-shard1-2",
            "service-ips",
            "nodeport-ips",
            "affinity",
            "endpointsx",
        ] {
            assert!(!is_endpoint_map(other), "{other}");
        }
    }
}
