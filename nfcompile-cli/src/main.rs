//! The `nfcompile` command: definitions and glue only; the work is in the library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nfcompile::front::Source;

#[derive(Parser)]
#[command(
    name = "nfcompile",
    version,
    about = "Compile load-balanced services into an nftables ruleset"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Compile and program the running kernel (this network namespace) in one atomic
    /// transaction, replacing nfcompile's tables. Needs CAP_NET_ADMIN.
    Apply {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Check the input and report every problem, without printing the ruleset.
    Check {
        #[command(flatten)]
        input: InputArgs,
    },
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
    /// Do not print warnings about skipped objects.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Nft,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message.replace('\n', "\nerror: "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Render {
            input,
            format,
            output,
        } => {
            let ruleset = compile(&input)?;
            let text = match format {
                Format::Nft => nfcompile::emit::text::write_string(&ruleset),
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
            Ok(())
        }
        Command::Apply { input } => {
            let ruleset = compile(&input)?;
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
            Ok(())
        }
        Command::Check { input } => {
            let ruleset = compile(&input)?;
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
            Ok(())
        }
    }
}

fn compile(input: &InputArgs) -> Result<nfcompile::model::Ruleset, String> {
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
    let (ruleset, warnings) =
        nfcompile::compile_sources(&sources, input.node.as_deref()).map_err(|e| e.to_string())?;
    if !input.quiet {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(ruleset)
}
