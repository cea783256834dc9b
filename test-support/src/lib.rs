//! Shared by the workspace's integration tests (a crate, not `#[path]` includes): the
//! scenario fixtures and throw-away network namespaces, the conformance matrix, kube-proxy's
//! packet-flow fixtures and the reference model.

pub mod conformance;
pub mod kube_proxy;
pub mod reference;
pub mod two_pods;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every scenario: `tests/in/*.yaml` plus the bundled examples, as (name, path).
pub fn scenarios() -> Vec<(String, PathBuf)> {
    let root = core_dir();
    let mut out = Vec::new();
    for dir in [root.join("tests/in"), root.join("../examples")] {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                out.push((name, path));
            }
        }
    }
    out.sort();
    out
}

pub fn golden_dir(backend: &str) -> PathBuf {
    core_dir().join("tests/out").join(backend)
}

/// The `nfcompile` crate's folder (beside this one in the workspace).
fn core_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates live in the workspace root")
        .join("nfcompile")
}

/// The first lines where two texts differ, for assertion messages that stay readable.
pub fn first_differences(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = Vec::new();
    for i in 0..la.len().max(lb.len()) {
        let x = la.get(i).copied().unwrap_or("<end>");
        let y = lb.get(i).copied().unwrap_or("<end>");
        if x != y {
            out.push(format!("line {}:\n  - {x}\n  + {y}", i + 1));
            if out.len() == 5 {
                break;
            }
        }
    }
    out.join("\n")
}

/// Why kernel tests cannot run here, if they cannot. In CI they must run: a missing
/// prerequisite there is a failure, not a skip.
pub fn kernel_unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let reason = if uid.as_deref() != Some("0") {
        Some("not running as root".to_string())
    } else if Command::new("nft").arg("--version").output().is_err() {
        Some("the nft binary is not installed (apt-get install nftables)".to_string())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the ip binary is not installed (apt-get install iproute2)".to_string())
    } else {
        None
    };
    if let (Some(r), Ok("true")) = (&reason, std::env::var("CI").as_deref()) {
        panic!("kernel tests must run in CI, but {r}");
    }
    reason
}

/// Why real-packet tests cannot run here: the kernel ones' reasons, or no `python3` for the
/// small echo servers and clients (installed by scripts/test.sh; required in CI).
pub fn packets_unavailable() -> Option<String> {
    let reason = kernel_unavailable().or_else(|| {
        Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
            .then(|| "python3 (echo servers and clients) is missing".to_string())
    });
    if let (Some(r), Ok("true")) = (&reason, std::env::var("CI").as_deref()) {
        panic!("real-packet tests must run in CI, but {r}");
    }
    reason
}

/// A process (an echo server, a client) that is stopped when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    /// SIGTERM first: servers run under `timeout`, which passes SIGTERM on to its child but
    /// dies of SIGKILL alone, orphaning it. SIGKILL only if it is still there after 2 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Say loudly that a kernel test did not run.
pub fn skip(test: &str, reason: &str) {
    eprintln!("\n!!!!!!!! SKIPPED {test}: {reason} — kernel behaviour was NOT tested !!!!!!!!\n");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that exists for the lifetime of the value, deleted even on panic.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "nfct-{}-{}-{}",
            tag.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    /// `sh -c CMD` inside the namespace; panics with its error output when it fails.
    pub fn sh(&self, cmd: &str) {
        let out = self.exec(&["sh", "-c", cmd]);
        assert!(
            out.status.success(),
            "{} in {}: {}",
            cmd,
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `args` inside the namespace; its standard output, or a panic naming `what` with
    /// its error output when it fails.
    pub fn ok(&self, what: &str, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// `nft -f FILE` inside the namespace; Err carries nft's message.
    pub fn nft_load(&self, file: &Path) -> Result<(), String> {
        let out = self.exec(&["nft", "-f", file.to_str().unwrap()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn nft(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Run `f` in a new, empty network namespace (only this thread enters it).
pub fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .expect("test thread")
}

/// `nft ARGS` in this thread's namespace; its output, or a panic with nft's error.
pub fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
