//! Front ends: input files → [`crate::ir::Cluster`].
//!
//! Files hold Kubernetes objects as `kubectl get -o yaml|json` prints them (multi-document
//! YAML, one JSON object, or a `List`), or one native IR document
//! (`apiVersion: nfcompile.io/v1alpha1`, `kind: Cluster`). Each document is parsed on its own so
//! errors can say which file and line it starts on.

pub mod kube;
pub mod native;

use std::path::Path;

use serde_json::Value;

use crate::error::InputError;
use crate::ir::Cluster;

/// The `apiVersion` of native IR documents.
pub const NATIVE_API_VERSION: &str = "nfcompile.io/v1alpha1";

/// One input, already read: a name for messages and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source {
            name: path.display().to_string(),
            text,
        })
    }
}

/// One parsed object with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    /// 1-based line the document (or `List`) starts on.
    pub line: usize,
    pub value: Value,
}

impl Document {
    pub fn str_field(&self, field: &str) -> &str {
        self.value.get(field).and_then(Value::as_str).unwrap_or("")
    }

    /// `Kind namespace/name` (or `Kind name`) as far as the metadata can be read.
    pub fn describe(&self) -> String {
        let kind = self.str_field("kind");
        let meta = self.value.get("metadata");
        let get = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        match (get("namespace"), get("name")) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) if kind == "Service" || kind == "EndpointSlice" => {
                format!("{kind} default/{name}")
            }
            (_, Some(name)) => format!("{kind} {name}"),
            _ => kind.to_string(),
        }
    }

    /// Deserialize into `T`, naming the field at fault on failure. Consumes the document so
    /// that strings move into `T` instead of being copied (inputs can be tens of megabytes).
    pub fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, InputError> {
        let object = self.describe();
        serde_path_to_error::deserialize(self.value).map_err(|e| InputError::Shape {
            file: self.file,
            line: self.line,
            object,
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

/// Split every source into documents, flattening `List`s.
pub fn documents(sources: &[Source]) -> Result<Vec<Document>, InputError> {
    let mut docs = Vec::new();
    for source in sources {
        // JSON (what `kubectl get -o json` prints) is parsed as JSON: much faster than as YAML.
        let chunks = if source.text.trim_start().starts_with(['{', '[']) {
            vec![(1, source.text.as_str())]
        } else {
            split_yaml(&source.text)
        };
        for (start, chunk) in chunks {
            if chunk.trim().is_empty() {
                continue;
            }
            let parsed = if chunk.trim_start().starts_with(['{', '[']) {
                // A YAML flow mapping also starts with `{`: fall back before blaming JSON.
                serde_json::from_str(chunk).or_else(|e| {
                    parse_yaml(chunk, &source.name, start).map_err(|_| InputError::Syntax {
                        file: source.name.clone(),
                        line: start + e.line() - 1,
                        column: e.column(),
                        message: e.to_string(),
                    })
                })
            } else {
                parse_yaml(chunk, &source.name, start)
            };
            let value: Value = parsed?;
            if value.is_null() {
                continue;
            }
            let doc = Document {
                file: source.name.clone(),
                line: start,
                value,
            };
            push_flattened(&mut docs, doc);
        }
    }
    Ok(docs)
}

fn parse_yaml(chunk: &str, file: &str, start: usize) -> Result<Value, InputError> {
    serde_norway::from_str(chunk).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        InputError::Syntax {
            file: file.to_string(),
            line: start + line - 1,
            column,
            message: file_relative_lines(&e.to_string(), start),
        }
    })
}

/// A `List` stands for its items.
fn push_flattened(docs: &mut Vec<Document>, doc: Document) {
    if doc.str_field("kind") == "List" {
        let items = match doc.value {
            Value::Object(mut map) => match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        docs.extend(items.into_iter().map(|value| Document {
            file: doc.file.clone(),
            line: doc.line,
            value,
        }));
    } else {
        docs.push(doc);
    }
}

/// The YAML parser counts lines from the start of the document; say them from the file's.
fn file_relative_lines(message: &str, start: usize) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (head, tail) = rest.split_at(at + 5);
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>() {
            out.push_str(&(n + start - 1).to_string());
        }
        rest = &tail[digits.len()..];
    }
    out.push_str(rest);
    out
}

/// YAML documents with the 1-based line each starts on. `---` separates; `...` ends one.
fn split_yaml(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let is_marker =
            |m: &str| bare == m || (bare.starts_with(m) && bare[3..].starts_with([' ', '\t']));
        if is_marker("---") || is_marker("...") {
            out.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start_byte..]));
    out
}

/// Read the inputs and build the IR: native if they are a native document, Kubernetes otherwise.
/// Warnings (skipped kinds, ignored objects) are returned for the caller to show.
pub fn load(sources: &[Source], node: Option<&str>) -> Result<(Cluster, Vec<String>), InputError> {
    if let [source] = sources {
        if let Some(cluster) = native::from_json_text(source, node)? {
            return Ok((cluster, Vec::new()));
        }
    }
    let docs = documents(sources)?;
    let native = docs
        .iter()
        .filter(|d| d.str_field("apiVersion") == NATIVE_API_VERSION)
        .count();
    match native {
        0 => kube::to_ir(docs, node),
        1 if docs.len() == 1 => {
            let doc = docs.into_iter().next().expect("one document");
            native::to_ir(doc, node).map(|c| (c, Vec::new()))
        }
        _ => {
            let first = docs
                .iter()
                .find(|d| d.str_field("apiVersion") == NATIVE_API_VERSION)
                .expect("counted above");
            Err(if native > 1 {
                InputError::Duplicate {
                    file: first.file.clone(),
                    kind: "native Cluster document",
                }
            } else {
                InputError::MixedInputs {
                    file: first.file.clone(),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_json_fast_path_reads_what_the_generic_path_reads() {
        let cluster = crate::synth::cluster(crate::synth::Shape {
            services: 30,
            endpoints: 2,
            nodes: 2,
        });
        let mut v = serde_json::to_value(&cluster).unwrap();
        v["apiVersion"] = NATIVE_API_VERSION.into();
        v["kind"] = "Cluster".into();
        let src = Source {
            name: "c.json".into(),
            text: v.to_string(),
        };
        let fast = native::from_json_text(&src, None)
            .unwrap()
            .expect("fast path taken");
        let doc = documents(std::slice::from_ref(&src)).unwrap().remove(0);
        let generic = native::to_ir(doc, None).unwrap();
        assert_eq!(fast, generic);
        assert_eq!(fast, cluster);
        // A wrong node is refused on the fast path too.
        assert!(native::from_json_text(&src, Some("elsewhere")).is_err());
    }

    #[test]
    fn documents_know_their_lines() {
        let text = "a: 1\n---\nkind: X\n--- # c\n\nkind: Y\n...\n";
        let parts = split_yaml(text);
        assert_eq!(parts[0], (1, "a: 1\n"));
        assert_eq!(parts[1], (3, "kind: X\n"));
        assert_eq!(parts[2], (5, "\nkind: Y\n"));
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let src = Source {
            name: "in.yaml".into(),
            text: "kind: Service\n---\nkind: Node\nmetadata: [unclosed\n".into(),
        };
        let err = documents(&[src]).unwrap_err().to_string();
        assert!(
            err.starts_with("in.yaml:5:") || err.starts_with("in.yaml:4:"),
            "{err}"
        );
    }
}
