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

use serde_json::Value;

use super::Document;
use crate::error::InputError;
use crate::ir::{Cluster, Origin};

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
    if let Some(name) = node {
        if name != cluster.node.name {
            return Err(InputError::UnknownNode {
                name: name.to_string(),
                known: vec![cluster.node.name.clone()],
            });
        }
    }
    Ok(cluster)
}
