//! `moat-bench`: load for a scoring endpoint, the way its users measure it.
//!
//! The life of a run: the command line becomes a checked [`cli::Plan`]; [`target`] knows
//! how to connect and send one request (HTTP/1.1 by [`h1`], HTTP/2 by hyper); [`pace`] says
//! when each request is due (closed or open loop); [`run`] drives the connections and
//! merges what each saw ([`tally`]); and [`report`] prints it for people or, with `--json`,
//! for scripts.

mod cli;
mod h1;
mod pace;
mod report;
mod run;
mod tally;
mod target;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let plan = match args.plan().and_then(|plan| Ok((target::Target::new(&plan)?, plan))) {
        Ok(ok) => ok,
        Err(error) => {
            eprintln!("moat-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let (target, plan) = plan;
    let open_loop = plan.rate.is_some();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = match run::run(&plan, Arc::new(target), threads) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("moat-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if plan.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("moat-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{}", plan.url);
        print!("{}", report.human(plan.connections, open_loop));
    }
    ExitCode::SUCCESS
}
