//! nfcompile's kernel backend: the model as one atomic nf_tables netlink batch, and the
//! kernel's state read back.
//!
//! ```text
//! model::Ruleset / diff::Transaction
//!     ─> bytecode (rules → instructions, pure Rust) ┐
//!     ─> sets (declarations, userdata, elements)    ├─> encode (one nftnl::Batch, provenance
//!                                                   ┘   per message) ─> socket (one sendmsg,
//!                                                       every answer) ─> apply / Connection
//! kernel ─> readback (dumps) ─> decode (instructions → model) ─> model::Ruleset
//! features: what this kernel can do (one aborted probe batch)
//! conntrack: UDP flows of endpoints that left (ctnetlink)
//! sync: Syncer = readback once, then diff/incremental ─> apply ─> clean-up (affinity, conntrack)
//! wire: the netlink message numbers all of them use
//! ```

pub mod apply;
mod attr;
pub mod bytecode;
pub mod conntrack;
pub mod decode;
pub mod encode;
pub mod features;
mod object;
pub mod readback;
pub mod sets;
pub mod socket;
pub mod sync;
pub(crate) mod wire;

pub use apply::{apply, apply_transaction, ApplyError, Connection, Summary};
pub use features::KernelFeatures;
pub use readback::{
    generation_now, normalize, read_counters, read_set_elements, readback,
    readback_with_generation, CounterValue, ReadbackError, SetReader,
};
pub use sync::{clean_up, clear_affinity, Cleanup, Sweep, SyncError, SyncReport, Syncer};
