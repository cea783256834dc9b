//! The command as users run it: the bad-input catalog (`tests/bad/*.yaml`, each naming the
//! error it must produce on its first line) and the happy paths.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nfcompile(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nfcompile"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn every_bad_input_fails_with_its_error_and_prints_no_ruleset() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 20, "the catalog shrank");
    let mut failures = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be '# expect: …'", path.display()));
        let rel = format!("bad/{}", path.file_name().unwrap().to_string_lossy());
        for command in ["render", "check"] {
            let out = nfcompile(&[command, "-f", &rel], None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(1) || !stderr.contains(expect) || !out.stdout.is_empty() {
                failures.push(format!(
                    "{rel} ({command}): exit {:?}, stdout {} bytes, stderr:\n{stderr}\n  wanted: {expect}",
                    out.status.code(),
                    out.stdout.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let input = "apiVersion: nfcompile.io/v1alpha1\nkind: Cluster\nnode: {name: n, addresses: [192.168.1.1]}\n\
                 config: {masqueradeBit: 40}\nservices:\n\
                 - {namespace: default, name: a, clusterIPs: [10.96.0.1], ports: [{port: 0}, {port: 70000}]}\n";
    let out = nfcompile(&["check", "-f", "-"], Some(input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        5,
        "{stderr}"
    );
}

#[test]
fn render_reads_stdin_and_several_files() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node-cluster.yaml"),
    )
    .unwrap();
    let (first, rest) = example
        .split_once("\n---\napiVersion: v1\nkind: Service")
        .unwrap();
    let dir = std::env::temp_dir().join(format!("nfcompile-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.yaml");
    std::fs::write(&a, first).unwrap();
    let out = nfcompile(
        &[
            "render",
            "-f",
            a.to_str().unwrap(),
            "-f",
            "-",
            "--node",
            "vm2",
            "--quiet",
        ],
        Some(&format!("apiVersion: v1\nkind: Service{rest}")),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("service rules for node vm2"));
    assert!(text.contains("10.123.123.100 . tcp . 80"));
    assert!(out.stderr.is_empty(), "--quiet still warned");
}

#[test]
fn json_output_is_the_model() {
    let out = nfcompile(
        &[
            "render",
            "-f",
            "../../examples/two-node-cluster.yaml",
            "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tables"][0]["name"], "nfcompile");
    // The Deployment in the example is skipped, and said so.
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("skipping Deployment default/nginx-deployment"));
}

#[test]
fn plan_against_empty_or_a_saved_model_needs_no_kernel() {
    let example = "../../examples/two-node-cluster.yaml";
    let out = nfcompile(
        &[
            "plan",
            "-q",
            "-f",
            example,
            "--against",
            "empty",
            "--detailed-exitcode",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+ Service default/nginx-service: port 80/TCP → 2 endpoints"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 5 to add, 0 to change, 0 to destroy"),
        "{text}"
    );

    let dir = std::env::temp_dir().join(format!("nfcompile-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("model.json");
    let out = nfcompile(
        &[
            "render",
            "-q",
            "-f",
            example,
            "--format",
            "json",
            "-o",
            saved.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    let out = nfcompile(
        &[
            "plan",
            "-q",
            "-f",
            example,
            "--against",
            saved.to_str().unwrap(),
            "--detailed-exitcode",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "No changes.");

    let out = nfcompile(
        &[
            "plan",
            "-q",
            "-f",
            example,
            "--against",
            saved.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["operations"], 0);

    // Turning counters on or off says so: counts are state the plan would lose.
    let plan_text = |extra: &[&str], against: &Path| -> String {
        let args = [
            &["plan", "-q", "-f", example][..],
            extra,
            &["--against", against.to_str().unwrap()],
        ]
        .concat();
        String::from_utf8_lossy(&nfcompile(&args, None).stdout).into_owned()
    };
    let on = plan_text(&["--counters"], &saved);
    assert!(on.contains("~ counters: 14 new (from zero)\n"), "{on}");
    let counted = dir.join("counted.json");
    let out = nfcompile(
        &[
            "render",
            "-q",
            "-f",
            example,
            "--counters",
            "--format",
            "json",
            "-o",
            counted.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    let out = nfcompile(
        &[
            "plan",
            "-q",
            "-f",
            example,
            "--counters",
            "--json",
            "--against",
            saved.to_str().unwrap(),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["counters_new"], 14);
    let off = plan_text(&[], &counted);
    assert!(
        off.contains("~ counters: 14 removed (their counts are lost)\n"),
        "{off}"
    );

    std::fs::write(dir.join("bad.json"), "{\"tables\": 3}").unwrap();
    let out = nfcompile(
        &[
            "plan",
            "-q",
            "-f",
            example,
            "--against",
            dir.join("bad.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("not a model saved by `render --format json`"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trace_ends_with_the_verdict_and_needs_no_kernel() {
    let out = nfcompile(
        &[
            "trace",
            "-q",
            "-f",
            "../../nfcompile/tests/in/vip-workshop.yaml",
            "--src",
            "192.168.10.10:5555",
            "--dst",
            "192.168.10.100:80",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some("verdict: dnat 192.168.20.20:80 masquerade"),
        "{text}"
    );
    assert!(text.contains("services: ip daddr . meta l4proto . th dport vmap @service-ips"));

    let out = nfcompile(
        &[
            "trace",
            "-q",
            "-f",
            "../../examples/two-node-cluster.yaml",
            "--from",
            "pod",
            "--proto",
            "udp",
            "--src",
            "10.42.0.50",
            "--dst",
            "10.43.0.10:53",
            "--json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "verdict: dnat 10.42.0.2:53");

    let out = nfcompile(
        &[
            "trace",
            "-q",
            "-f",
            "../../examples/two-node-cluster.yaml",
            "--src",
            "1.2.3.4",
            "--dst",
            "10.43.0.10",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dst \"10.43.0.10\" is not ADDRESS:PORT")
    );
}
