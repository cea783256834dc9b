//! nfcompile: load-balanced services → a scalable nftables ruleset.
//!
//! ```text
//!  Kubernetes objects ─┐   front
//!  native YAML/JSON ───┼─> ir::Cluster ─> validate ─> lower ─────> optimize ─> model::Ruleset
//!  Rust builders ──────┘                  (all errors)  │ (builds        (passes)      │
//!                                                       │  the layout)                 │
//!        layout: names, slots, shards, comments,  <─────┴── read back by ──┐           │
//!        counters, capacities (format + parser)                            │           │
//!                                                                          │           ├─> emit::text (nft -f)
//!  changed services ─> incremental (lower_service per change) ─> Transaction ◄── diff ◄┤─> emit::json_string
//!                          │ stale: affinity entries, UDP flows to clean up            ├─> trace (one packet)
//!                          └──────────────────────────────> diff::describe (plan) ◄────┘
//!
//!  nfcompile-netlink: model / Transaction ─> bytecode + sets ─> encode ─> socket ─> kernel
//!                     kernel ─> readback (decode) ─> model;  features (probe), conntrack, sync (Syncer)
//! ```
//!
//! Every stage is a separate module with one entry point; backends read only the model.
//! The layout of the generated ruleset, and why it scales, is documented in [`lower`]; its
//! conventions (every name a backend reads back) live in [`layout`].

pub mod diff;
pub mod emit;
pub mod error;
pub mod front;
pub mod incremental;
pub mod ir;
pub mod layout;
pub mod lower;
pub mod model;
pub mod optimize;
pub mod synth;
pub mod trace;
pub mod validate;

pub use error::{CompileError, FieldError, InputError, Invalid};

/// Validate, lower and optimize: the whole middle of the pipeline.
pub fn compile(cluster: &ir::Cluster) -> Result<model::Ruleset, CompileError> {
    let validated = validate::validate(cluster)?;
    let mut ruleset = lower::lower(validated);
    optimize::run(&mut ruleset);
    Ok(ruleset)
}

/// Read inputs (Kubernetes or native) and compile them; warnings are returned, not printed.
pub fn compile_sources(
    sources: &[front::Source],
    node: Option<&str>,
) -> Result<(model::Ruleset, Vec<String>), InputError> {
    let (cluster, warnings) = front::load(sources, node)?;
    let ruleset = compile(&cluster).map_err(|e| match e {
        CompileError::Invalid(inv) => InputError::Invalid(inv),
    })?;
    Ok((ruleset, warnings))
}
