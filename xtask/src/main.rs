//! `cargo xtask`: project automation (the alias is in `.cargo/config.toml`).
//!
//! Each subcommand is a module with a `run(args) -> ExitCode` and one line
//! in [`SUBCOMMANDS`]; `main` only dispatches. Exit status: 0 on success,
//! 2 for a usage error or rejected input, anything else for a failure of the
//! task itself.

use std::env;
use std::process::ExitCode;

mod cli;
mod compare;
mod loom;
mod sizeclasses;

/// Every subcommand: name and one-line summary, in the order `--help` lists
/// them. Add a line here and an arm in `main` for a new one.
const SUBCOMMANDS: &[(&str, &str)] = &[
    (
        "compare",
        "run the comparison suite: gomalloc against system, mimalloc, jemalloc, tcmalloc",
    ),
    (
        "sizeclasses",
        "print a size-class table (gomalloc's by default; --help for options)",
    ),
    (
        "loom",
        "run the loom models (release, debug assertions); --broken: check each catches its break",
    ),
];

/// Exit status for usage errors and rejected parameters.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = match env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("error: argument {bad:?} is not valid UTF-8");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprint!("error: no subcommand given\n\n{}", usage());
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match command {
        "compare" => compare::run(rest),
        "sizeclasses" => sizeclasses::run(rest),
        "loom" => loom::run(rest),
        "-h" | "--help" | "help" => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        other => {
            eprint!("error: unknown subcommand `{other}`\n\n{}", usage());
            ExitCode::from(USAGE_ERROR)
        }
    }
}

/// The top-level usage text, listing [`SUBCOMMANDS`].
fn usage() -> String {
    let mut text = String::from("usage: cargo xtask <subcommand> [options]\n\nsubcommands:\n");
    for (name, summary) in SUBCOMMANDS {
        text.push_str(&format!("  {name:<14}{summary}\n"));
    }
    text
}
