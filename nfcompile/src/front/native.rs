//! The native IR front end: one document, the [`Cluster`] schema plus `apiVersion`/`kind`.
//!
//! ```yaml
//! apiVersion: nfcompile.io/v1alpha1
//! kind: Cluster
//! node: { name: node-1, addresses: [192.168.1.10] }
//! config: { clusterCIDRs: [10.244.0.0/16] }
//! services:
//!   - namespace: default
//!     name: web
//!     clusterIPs: [10.96.0.10]
//!     ports: [{ name: http, protocol: TCP, port: 80, nodePort: 30080 }]
//!     endpoints:
//!       - { address: 10.244.1.5, nodeName: node-1, ports: [{ name: http, port: 8080 }] }
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::{Document, Source, NATIVE_API_VERSION};
use crate::error::InputError;
use crate::ir::{Cluster, Node, Origin, ProxyConfig, Service};

/// A native document read straight from JSON text into the IR: this skips building (and then
/// re-reading) a generic JSON tree, which at scale costs more than compiling.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NativeJson {
    api_version: String,
    kind: String,
    node: Node,
    #[serde(default)]
    config: ProxyConfig,
    #[serde(default)]
    services: Vec<Service>,
}

/// `Ok(None)` when `source` is not one native JSON document (the generic path handles it,
/// and reports errors with its own context).
pub fn from_json_text(source: &Source, node: Option<&str>) -> Result<Option<Cluster>, InputError> {
    let text = source.text.trim_start();
    // The first 4 KiB, cut at a character boundary (input is any UTF-8).
    let mut end = text.len().min(4096);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    if !text.starts_with('{') || !head.contains(NATIVE_API_VERSION) {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let Ok(doc) = serde_path_to_error::deserialize::<_, NativeJson>(&mut de) else {
        return Ok(None); // let the generic path produce the error message
    };
    if de.end().is_err() || doc.api_version != NATIVE_API_VERSION || doc.kind != "Cluster" {
        return Ok(None);
    }
    let cluster = Cluster {
        node: doc.node,
        config: doc.config,
        services: doc.services,
        origin: Origin::Native,
    };
    check_node(&cluster, node)?;
    Ok(Some(cluster))
}

fn check_node(cluster: &Cluster, node: Option<&str>) -> Result<(), InputError> {
    match node {
        Some(name) if name != cluster.node.name => Err(InputError::UnknownNode {
            name: name.to_string(),
            known: vec![cluster.node.name.clone()],
        }),
        _ => Ok(()),
    }
}

pub fn to_ir(mut doc: Document, node: Option<&str>) -> Result<Cluster, InputError> {
    if doc.str_field("kind") != "Cluster" {
        return Err(InputError::Shape {
            file: doc.file.clone(),
            line: doc.line,
            object: doc.describe(),
            field: "kind".into(),
            message: format!("must be Cluster, not {:?}", doc.str_field("kind")),
        });
    }
    if let Value::Object(map) = &mut doc.value {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let mut cluster: Cluster = doc.decode().map_err(|e| match e {
        InputError::Shape {
            file,
            line,
            field,
            message,
            ..
        } => InputError::Shape {
            file,
            line,
            object: "Cluster".into(),
            field,
            message,
        },
        other => other,
    })?;
    cluster.origin = Origin::Native;
    check_node(&cluster, node)?;
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/seeds/compile_input/crash-963a6e28…): a multi-byte character across
    /// the 4 KiB the JSON fast path looks at panicked on a byte slice.
    #[test]
    fn a_character_across_the_first_4_kib_is_no_panic() {
        let source = Source {
            name: "x.json".into(),
            text: format!("{{{}\u{d268b} {NATIVE_API_VERSION}", " ".repeat(4092)),
        };
        assert!(from_json_text(&source, None).unwrap().is_none());
        assert!(crate::compile_sources(&[source], None).is_err());
    }
}
