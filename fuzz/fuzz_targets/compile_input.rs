//! Arbitrary bytes as YAML/JSON input: parse, validate, compile and render must return a
//! result or an error, never panic; and a rendered script never contains a line that input
//! text could have injected (every comment stays one quoted token).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfcompile::front::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        name: "fuzz".into(),
        text: text.to_string(),
    };
    for node in [None, Some("node-a")] {
        if let Ok((ruleset, _)) = nfcompile::compile_sources(std::slice::from_ref(&source), node) {
            let script = nfcompile::emit::text::write_string(&ruleset);
            for line in script.lines() {
                assert_eq!(
                    line.matches('"').count() % 2,
                    0,
                    "unbalanced quotes: {line}"
                );
            }
        }
    }
});
