//! Backends that write the model out. Each is a peer over [`crate::model`]; none looks upstream.

pub mod text;

use crate::model::Ruleset;

/// The model as pretty JSON, for tools and for `nfcompile render --format json`.
pub fn json_string(ruleset: &Ruleset) -> String {
    serde_json::to_string_pretty(ruleset).expect("the model always serialises")
}
