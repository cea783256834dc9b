//! Peak heap of the compiler: a counting allocator around `compile` (and `render`) of the scale
//! benchmark's cluster, beyond the input IR already in memory. Goal: ≤ 500 bytes per endpoint
//! at 50,000 services × 5. Usage: memory-bench [SERVICES…]   (default 1000 10000 50000)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of services"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 50_000]
    } else {
        sizes
    };
    println!("| services | endpoints | input IR | compile peak (beyond IR) | per endpoint | model kept | compile + render peak | per endpoint |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for services in sizes {
        let before = CURRENT.load(Ordering::Relaxed);
        let cluster = nfcompile::synth::cluster(nfcompile::synth::Shape {
            services,
            endpoints: 5,
            nodes: 10,
        });
        let endpoints = services * 5;
        let ir = CURRENT.load(Ordering::Relaxed) - before;
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let ruleset = nfcompile::compile(&cluster).expect("valid");
        let compile_peak = PEAK.load(Ordering::Relaxed) - base;
        let kept = CURRENT.load(Ordering::Relaxed) - base;
        let text = nfcompile::emit::text::write_string(&ruleset);
        let total_peak = PEAK.load(Ordering::Relaxed) - base;
        drop(text);
        drop(ruleset);
        let mb = |b: usize| format!("{:.1} MB", b as f64 / 1e6);
        println!(
            "| {services} | {endpoints} | {} | {} | {} B | {} | {} | {} B |",
            mb(ir),
            mb(compile_peak),
            compile_peak / endpoints,
            mb(kept),
            mb(total_peak),
            total_peak / endpoints
        );
    }
}
