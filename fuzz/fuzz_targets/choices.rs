//! A fuzzer's bytes as the decisions of `nfcompile::synth::random_from`: coverage guidance
//! steers the shape of the generated (always valid) cluster.

use arbitrary::Unstructured;
use nfcompile::synth::Choices;

pub struct Bytes<'a, 'b>(pub &'b mut Unstructured<'a>);

impl Choices for Bytes<'_, '_> {
    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        self.0.int_in_range(0..=n - 1).unwrap_or(0)
    }
}

/// The structured targets allocate and free whole rulesets on every execution; glibc's
/// allocator was about 40% of their time (fastbin consolidation on every large free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
