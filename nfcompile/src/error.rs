//! Errors of the whole pipeline. Every one names the object and the field at fault, so that a
//! user can find the line to fix without reading the compiler.

use std::fmt;
use std::path::PathBuf;

/// One problem with one field of one object, e.g.
/// `Service default/web: spec.ports[0].nodePort 70000 is outside 1-65535`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `Service default/web`, `EndpointSlice default/web-x1`, `Node vm1`, `KubeProxyConfiguration`.
    pub object: String,
    /// The field path in the input's own terms; empty when the object as a whole is at fault.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {} {}", self.object, self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Everything wrong with an input, all at once (fixing one error at a time is tedious).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reading and understanding input files.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML/JSON at all.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed, but a field has the wrong shape (`port: "eighty"`).
    #[error("{file}:{line}: {object}: {field}: {message}")]
    Shape {
        file: String,
        /// First line of the document holding the object.
        line: usize,
        object: String,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("node {name:?} is not among the Node objects ({})", if known.is_empty() { "there are none".to_string() } else { known.join(", ") })]
    UnknownNode { name: String, known: Vec<String> },
    #[error("no node given: pass --node NAME or set hostnameOverride in a KubeProxyConfiguration")]
    NoNode,
    #[error("{file}: input mixes native IR with Kubernetes objects; use one or the other")]
    MixedInputs { file: String },
    #[error("{file}: more than one {kind} given")]
    Duplicate { file: String, kind: &'static str },
}

/// What can go wrong between IR and model.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
}
