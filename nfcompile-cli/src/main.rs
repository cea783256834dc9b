//! The `nfcompile` command: definitions and glue only; the work is in the library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nfcompile::front::Source;

mod stats;

#[derive(Parser)]
#[command(
    name = "nfcompile",
    version,
    about = "Compile load-balanced services into an nftables ruleset"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print how long each stage took (parse, compile, read back, diff, …) on standard error.
    #[arg(long, global = true)]
    timings: bool,
}

/// Stage timings for `--timings`: each call reports the time since the previous one.
struct Stopwatch {
    on: bool,
    last: std::time::Instant,
}

impl Stopwatch {
    fn new(on: bool) -> Stopwatch {
        Stopwatch {
            on,
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, stage: &str) {
        let now = std::time::Instant::now();
        if self.on {
            eprintln!(
                "timing: {stage:<10} {:>9.1} ms",
                (now - self.last).as_secs_f64() * 1000.0
            );
        }
        self.last = now;
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print the ruleset for one node as an `nft -f` script (or the model as JSON).
    Render {
        #[command(flatten)]
        input: InputArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Nft)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compile, read back what the kernel holds, and program only the difference in one
    /// atomic transaction (this network namespace). Needs CAP_NET_ADMIN.
    ///
    /// Then deletes session-affinity entries and UDP conntrack entries that point at endpoints
    /// their frontend no longer has. Exit status: 0 done; 1 error, nothing changed; 3 the rules
    /// were committed but that clean-up failed (run apply again to retry it).
    Apply {
        #[command(flatten)]
        input: InputArgs,
        /// Replace nfcompile's tables whole instead of applying the difference.
        #[arg(long)]
        replace: bool,
    },
    /// Show what applying would change, per service, without changing anything.
    Plan {
        #[command(flatten)]
        input: InputArgs,
        /// Compare with the live kernel (needs CAP_NET_ADMIN), with nothing, or with a
        /// model saved by `render --format json`.
        #[arg(long, default_value = "live", value_name = "live|empty|FILE")]
        against: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to change, 2 when there is, 1 on errors.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also print the exact nft operations.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Follow one packet through the compiled rules, offline (no kernel, no root).
    Trace {
        #[command(flatten)]
        input: InputArgs,
        #[arg(long, value_enum, default_value_t = Proto::Tcp)]
        proto: Proto,
        /// Source address, optionally with a port (`10.244.1.5:40000`, `[fd00::5]:40000`).
        #[arg(long)]
        src: String,
        /// Destination address and port.
        #[arg(long)]
        dst: String,
        /// Where the packet comes from.
        #[arg(long, value_enum, default_value_t = From::External)]
        from: From,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check the input and report every problem, without printing the ruleset.
    Check {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Print the per-service-port counters of the live rules (applied with `--counters`):
    /// new connections, packets and bytes. Needs CAP_NET_ADMIN.
    Stats {
        #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
        format: StatsFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatsFormat {
    Table,
    /// Prometheus text exposition format.
    Prometheus,
    Json,
}

#[derive(clap::Args)]
struct InputArgs {
    /// Input files: Kubernetes objects (YAML/JSON, multi-document, List) or one native IR
    /// document. `-` reads standard input. May be given several times.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The node to compile for (default: hostnameOverride of the KubeProxyConfiguration).
    #[arg(long)]
    node: Option<String>,
    /// Do not print warnings (skipped objects; rules the nft text leaves out).
    #[arg(short, long)]
    quiet: bool,
    /// Count packets, bytes and new connections per service port (read them with
    /// `nfcompile stats`). Same as `counters: true` in a native input's config. Applying
    /// without it later removes the counters.
    #[arg(long)]
    counters: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    Pod,
    Node,
    External,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Nft,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {}", message.replace('\n', "\nerror: "));
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `apply` when the rules were committed but the clean-up after them failed.
const CLEANUP_FAILED: u8 = 3;

fn run(cli: Cli) -> Result<ExitCode, String> {
    let mut watch = Stopwatch::new(cli.timings);
    match cli.command {
        Command::Render {
            input,
            format,
            output,
        } => {
            let ruleset = compile(&input, &mut watch)?;
            let text = match format {
                Format::Nft => {
                    if !input.quiet {
                        for line in nfcompile::emit::text::left_out(&ruleset) {
                            eprintln!("warning: {line}");
                        }
                    }
                    nfcompile::emit::text::write_string(&ruleset)
                }
                Format::Json => nfcompile::emit::json_string(&ruleset) + "\n",
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => std::io::stdout()
                    .lock()
                    .write_all(text.as_bytes())
                    .map_err(|e| format!("standard output: {e}"))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { input, replace } => {
            let (cluster, mut ruleset) = compile_cluster(&input, &mut watch)?;
            let connection = nfcompile_netlink::Connection::open().map_err(|e| e.to_string())?;
            // An unsupported kernel is named before anything is read or committed.
            connection.features().map_err(|e| e.to_string())?;
            let tx = if replace {
                let s = nfcompile_netlink::apply(&ruleset).map_err(|e| e.to_string())?;
                println!(
                    "applied: {} tables, {} chains, {} rules, {} sets and maps, {} elements in {} messages ({} KiB) in {:.1} ms",
                    s.tables,
                    s.chains,
                    s.rules,
                    s.sets,
                    s.elements,
                    s.messages,
                    s.bytes / 1024,
                    s.elapsed.as_secs_f64() * 1000.0
                );
                nfcompile::diff::Transaction::default()
            } else {
                let (live, generation) =
                    nfcompile_netlink::readback_with_generation().map_err(|e| e.to_string())?;
                watch.lap("read back");
                nfcompile::diff::keep_capacities(&live, &mut ruleset);
                let tx = nfcompile::diff::diff(&live, &ruleset);
                watch.lap("diff");
                if tx.is_empty() {
                    println!("No changes.");
                } else {
                    // The kernel refuses the transaction if the ruleset changed since the read.
                    let s = connection
                        .apply_transaction(&tx, &ruleset, Some(generation))
                        .map_err(|e| e.to_string())?;
                    watch.lap("commit");
                    println!(
                        "applied: {} operations, {} elements in {} messages ({} KiB) in {:.1} ms",
                        tx.ops.len(),
                        tx.element_changes(),
                        s.messages,
                        s.bytes / 1024,
                        s.elapsed.as_secs_f64() * 1000.0
                    );
                }
                tx
            };
            // Clients pinned by affinity, and UDP flows that keep sending, must not stay with
            // an endpoint that left: those this transaction removed, and any the kernel still
            // holds from an earlier apply whose clean-up failed (a sweep of its state).
            let udp = nfcompile::incremental::UdpServing::of_cluster(&cluster);
            let mut stale = nfcompile::incremental::stale_in(&tx, &ruleset);
            stale.keep_serving(&udp);
            let sweep = nfcompile_netlink::Sweep {
                desired: &ruleset,
                udp: Some(&udp),
            };
            let cleanup =
                nfcompile_netlink::clean_up(&connection, &mut None, &ruleset, &stale, Some(sweep));
            watch.lap("affinity and conntrack cleanup");
            if cleanup.affinity_cleared > 0 {
                println!(
                    "session affinity: {} entries of removed endpoints deleted",
                    cleanup.affinity_cleared
                );
            }
            if cleanup.udp_flows_cleared > 0 {
                println!(
                    "conntrack: {} UDP flows deleted (their endpoints left or stopped serving)",
                    cleanup.udp_flows_cleared
                );
            }
            if cleanup.failures.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for f in &cleanup.failures {
                eprintln!("error: after the commit: {f}");
            }
            eprintln!(
                "note: {}only this clean-up failed. Run apply again to retry it.",
                if tx.is_empty() && !replace {
                    "nothing needed committing; "
                } else {
                    "the rules were committed; "
                }
            );
            Ok(ExitCode::from(CLEANUP_FAILED))
        }
        Command::Plan {
            input,
            against,
            json,
            detailed_exitcode,
            verbose,
        } => {
            let mut desired = compile(&input, &mut watch)?;
            let current = match against.as_str() {
                "live" => nfcompile_netlink::readback().map_err(|e| e.to_string())?,
                "empty" => nfcompile::model::Ruleset::default(),
                file => {
                    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                    serde_json::from_str(&text).map_err(|e| {
                        format!("{file}: not a model saved by `render --format json`: {e}")
                    })?
                }
            };
            watch.lap("read back");
            nfcompile::diff::keep_capacities(&current, &mut desired);
            let tx = nfcompile::diff::diff(&current, &desired);
            watch.lap("diff");
            let changes = nfcompile::diff::describe::describe(&current, &desired, &tx);
            watch.lap("describe");
            print_plan(&tx, &changes, &desired, json, verbose);
            watch.lap("print");
            Ok(if detailed_exitcode && !tx.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Trace {
            input,
            proto,
            src,
            dst,
            from,
            json,
        } => {
            let cluster = load(&input)?;
            let ruleset = nfcompile::compile(&cluster).map_err(|e| e.to_string())?;
            let (src, src_port) = endpoint(&src, "--src", false)?;
            let (dst, dst_port) = endpoint(&dst, "--dst", true)?;
            let packet = nfcompile::trace::Packet {
                proto: match proto {
                    Proto::Tcp => nfcompile::model::Protocol::Tcp,
                    Proto::Udp => nfcompile::model::Protocol::Udp,
                    Proto::Sctp => nfcompile::model::Protocol::Sctp,
                },
                src,
                src_port: src_port.unwrap_or(40000),
                dst,
                dst_port: dst_port.expect("required"),
                origin: match from {
                    From::Pod => nfcompile::trace::Origin::Pod,
                    From::Node => nfcompile::trace::Origin::Node,
                    From::External => nfcompile::trace::Origin::External,
                },
            };
            let t = nfcompile::trace::trace(&ruleset, &cluster.node.addresses, &packet)
                .map_err(|e| e.to_string())?;
            if json {
                let v = serde_json::json!({"packet": packet, "branches": t.branches, "verdict": t.verdict_line()});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serialisable")
                );
            } else {
                for (i, b) in t.branches.iter().enumerate() {
                    if t.branches.len() > 1 {
                        println!("branch {} (probability {:.3}):", i + 1, b.probability);
                    }
                    // Repeated draws of a selection chain print once, with their count.
                    let mut steps = b.steps.iter().peekable();
                    while let Some(s) = steps.next() {
                        let mut n = 1;
                        while steps.next_if(|next| *next == s).is_some() {
                            n += 1;
                        }
                        if n > 1 {
                            println!("  {s}  (×{n})");
                        } else {
                            println!("  {s}");
                        }
                    }
                    println!("  → {}", b.outcome);
                }
                println!("{}", t.verdict_line());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { format } => {
            let values = nfcompile_netlink::read_counters().map_err(|e| e.to_string())?;
            if values.is_empty() {
                return Err(
                    "no service counters here: nfcompile's tables are missing, hold no service, or were applied without --counters"
                        .into(),
                );
            }
            let rows = stats::rows(&values);
            print!(
                "{}",
                match format {
                    StatsFormat::Table => stats::table(&rows),
                    StatsFormat::Prometheus => stats::prometheus(&rows),
                    StatsFormat::Json => stats::json(&rows),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { input } => {
            let ruleset = compile(&input, &mut watch)?;
            let (sets, elements, chains, rules) =
                ruleset.tables.iter().fold((0, 0, 0, 0), |acc, t| {
                    (
                        acc.0 + t.sets.len(),
                        acc.1 + t.sets.iter().map(|s| s.elements.len()).sum::<usize>(),
                        acc.2 + t.chains.len(),
                        acc.3 + t.chains.iter().map(|c| c.rules.len()).sum::<usize>(),
                    )
                });
            println!(
                "ok: {} tables, {chains} chains, {rules} rules, {sets} sets and maps, {elements} elements",
                ruleset.tables.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Human (or JSON) rendering of a plan: services first, then the summary line.
fn print_plan(
    tx: &nfcompile::diff::Transaction,
    changes: &[nfcompile::diff::describe::ServiceChange],
    desired: &nfcompile::model::Ruleset,
    json: bool,
    verbose: bool,
) {
    use nfcompile::diff::describe::ChangeKind;
    use std::io::IsTerminal;
    let count = |k: ChangeKind| changes.iter().filter(|c| c.kind == k).count();
    let (counters_new, counters_gone) = tx.counter_changes();
    let (add, change, destroy) = (
        count(ChangeKind::Add),
        count(ChangeKind::Change),
        count(ChangeKind::Destroy),
    );
    if json {
        let v = serde_json::json!({
            "changes": changes,
            "summary": {"add": add, "change": change, "destroy": destroy, "operations": tx.ops.len(), "elements": tx.element_changes(), "counters_new": counters_new, "counters_removed": counters_gone},
            "transaction": tx,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
        return;
    }
    let colour = std::io::stdout().is_terminal();
    let paint = |code: &str, text: String| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    for c in changes {
        let (sign, code) = match c.kind {
            ChangeKind::Add => ("+", "32"),
            ChangeKind::Change => ("~", "33"),
            ChangeKind::Destroy => ("-", "31"),
        };
        match c.details.as_slice() {
            [] => println!("{}", paint(code, format!("{sign} Service {}", c.service))),
            [one] => println!(
                "{}",
                paint(code, format!("{sign} Service {}: {one}", c.service))
            ),
            many => {
                println!("{}", paint(code, format!("{sign} Service {}:", c.service)));
                for d in many {
                    println!("    {d}");
                }
            }
        }
    }
    // Counters are state: say plainly when counts would be lost (e.g. `--counters` forgotten).
    let mut counted = Vec::new();
    if counters_new > 0 {
        counted.push(format!("{counters_new} new (from zero)"));
    }
    if counters_gone > 0 {
        counted.push(format!("{counters_gone} removed (their counts are lost)"));
    }
    if !counted.is_empty() {
        println!(
            "{}",
            paint("33", format!("~ counters: {}", counted.join(", ")))
        );
    }
    if changes.is_empty() && !tx.is_empty() {
        println!(
            "~ ruleset layout: {} operations (-v shows them)",
            tx.ops.len()
        );
    }
    if verbose && !tx.is_empty() {
        println!();
        print!("{}", nfcompile::emit::text::write_transaction(tx, desired));
    }
    if tx.is_empty() {
        println!("No changes.");
    } else {
        println!();
        println!(
            "Plan: {add} to add, {change} to change, {destroy} to destroy ({} operations, {} elements).",
            tx.ops.len(),
            tx.element_changes()
        );
    }
}

/// `ADDR`, `ADDR:PORT` or `[ADDR6]:PORT`.
fn endpoint(
    text: &str,
    flag: &str,
    need_port: bool,
) -> Result<(std::net::IpAddr, Option<u16>), String> {
    let bad = || {
        format!(
            "{flag} {text:?} is not ADDRESS{}",
            if need_port { ":PORT" } else { "[:PORT]" }
        )
    };
    if let Ok(a) = text.parse::<std::net::IpAddr>() {
        return if need_port { Err(bad()) } else { Ok((a, None)) };
    }
    let sa: std::net::SocketAddr = text.parse().map_err(|_| bad())?;
    Ok((sa.ip(), Some(sa.port())))
}

fn read_sources(input: &InputArgs) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for path in &input.files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            sources.push(Source {
                name: "<stdin>".into(),
                text,
            });
        } else {
            sources.push(Source::read(path).map_err(|e| e.to_string())?);
        }
    }
    Ok(sources)
}

/// Read and convert the inputs, printing warnings unless `--quiet`.
fn load(input: &InputArgs) -> Result<nfcompile::ir::Cluster, String> {
    let sources = read_sources(input)?;
    let (mut cluster, warnings) =
        nfcompile::front::load(&sources, input.node.as_deref()).map_err(|e| e.to_string())?;
    cluster.config.counters |= input.counters;
    if !input.quiet {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(cluster)
}

fn compile(input: &InputArgs, watch: &mut Stopwatch) -> Result<nfcompile::model::Ruleset, String> {
    Ok(compile_cluster(input, watch)?.1)
}

/// [`compile`], keeping the cluster it compiled.
fn compile_cluster(
    input: &InputArgs,
    watch: &mut Stopwatch,
) -> Result<(nfcompile::ir::Cluster, nfcompile::model::Ruleset), String> {
    let cluster = load(input)?;
    watch.lap("parse");
    let ruleset = nfcompile::compile(&cluster).map_err(|e| e.to_string())?;
    watch.lap("compile");
    Ok((cluster, ruleset))
}
