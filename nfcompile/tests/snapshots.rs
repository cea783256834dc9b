//! Every scenario through every backend, compared with the files in `tests/out/<backend>/`.
//! `NFCOMPILE_BLESS=1 cargo test` rewrites them; review the diff like code.

use nfcompile_test_support as common;

use nfcompile::front::Source;

fn render(path: &std::path::Path) -> nfcompile::model::Ruleset {
    let source = Source::read(path).unwrap();
    let (ruleset, _warnings) = nfcompile::compile_sources(&[source], None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ruleset
}

fn check(backend: &str, name: &str, ext: &str, actual: &str) -> Option<String> {
    let file = common::golden_dir(backend).join(format!("{name}.{ext}"));
    if std::env::var_os("NFCOMPILE_BLESS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, actual).unwrap();
        return None;
    }
    match std::fs::read_to_string(&file) {
        Ok(expected) if expected == actual => None,
        Ok(_) => Some(format!(
            "{} differs (NFCOMPILE_BLESS=1 to accept)",
            file.display()
        )),
        Err(_) => Some(format!(
            "{} is missing (NFCOMPILE_BLESS=1 to create)",
            file.display()
        )),
    }
}

#[test]
fn every_scenario_matches_its_snapshots() {
    let mut failures = Vec::new();
    let scenarios = common::scenarios();
    assert!(scenarios.len() >= 12, "scenario fixtures went missing");
    for (name, path) in scenarios {
        let ruleset = render(&path);
        let text = nfcompile::emit::text::write_string(&ruleset);
        let json = nfcompile::emit::json_string(&ruleset) + "\n";
        failures.extend(check("nft", &name, "nft", &text));
        failures.extend(check("json", &name, "json", &json));
        // The JSON model is a faithful serialisation: it reads back to the same model.
        let back: nfcompile::model::Ruleset = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ruleset, "{name}: JSON round trip");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_is_deterministic_whatever_the_input_order() {
    for (name, path) in common::scenarios() {
        let text = std::fs::read_to_string(&path).unwrap();
        // Reverse the document order: the output must not change.
        let mut docs: Vec<&str> = text.split("\n---\n").collect();
        docs.reverse();
        let reversed = docs.join("\n---\n");
        let a = nfcompile::compile_sources(
            &[Source {
                name: name.clone(),
                text,
            }],
            None,
        )
        .unwrap()
        .0;
        let b = nfcompile::compile_sources(
            &[Source {
                name: name.clone(),
                text: reversed,
            }],
            None,
        )
        .unwrap()
        .0;
        assert_eq!(
            nfcompile::emit::text::write_string(&a),
            nfcompile::emit::text::write_string(&b),
            "{name}: output depends on document order"
        );
    }
}
