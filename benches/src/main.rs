//! `moat-bench`: load for a scoring endpoint, the way its users measure it.
//!
//! The life of a run: the command line becomes a checked [`cli::Plan`]; [`target`] knows
//! how to connect and send one request (HTTP/1.1 by [`h1`], HTTP/2 by hyper); [`pace`] says
//! when each request is due (closed or open loop); [`run`] drives the connections and
//! merges what each saw ([`tally`]); [`report`] prints it for people or, with `--json`, for
//! scripts; and [`slo`] checks it against the bounds a release is gated on. A `--rates`
//! ladder is one run per rate, in turn.
//!
//! Exit codes: 0 done (every `--slo` bound held), 2 the command line could not be used, 3 a
//! bound was broken (named on stderr), 1 anything else that failed.

mod cli;
mod h1;
mod pace;
mod report;
mod run;
mod slo;
mod tally;
mod target;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::report::Report;
use crate::tally::Tally;

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
    let target = Arc::new(target);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One run, or one per step of the ladder.
    let steps: Vec<cli::Plan> = if plan.rates.is_empty() {
        vec![plan.clone()]
    } else {
        plan.rates.iter().map(|&rate| cli::Plan { rate: Some(rate), ..plan.clone() }).collect()
    };
    let mut results: Vec<(Report, Tally)> = Vec::new();
    for step in &steps {
        match run::run(step, target.clone(), threads) {
            Ok(result) => results.push(result),
            Err(e) => {
                eprintln!("moat-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(file) = &plan.timeline
        && let Err(e) = write_timeline(file, &results)
    {
        eprintln!("moat-bench: --timeline {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    let reports: Vec<&Report> = results.iter().map(|(r, _)| r).collect();
    if let Err(e) = print(&plan, &results, &reports) {
        eprintln!("moat-bench: {e}");
        return ExitCode::FAILURE;
    }
    let ladder = !plan.rates.is_empty();
    let mut broken = Vec::new();
    for report in &reports {
        for bound in &plan.slo {
            match bound.broken(report) {
                Some(b) if ladder => broken.push(format!("{b} at {:.0}/s", report.offered_rps)),
                Some(b) => broken.push(b),
                None => {}
            }
        }
    }
    if !broken.is_empty() {
        eprintln!("moat-bench: SLO not met: {}", broken.join("; "));
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn print(plan: &cli::Plan, results: &[(Report, Tally)], reports: &[&Report]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let text = if plan.json {
        let json = if plan.rates.is_empty() {
            serde_json::to_string_pretty(reports[0])
        } else {
            serde_json::to_string_pretty(&serde_json::json!({ "steps": reports }))
        };
        json.map_err(|e| e.to_string())? + "\n"
    } else if plan.rates.is_empty() {
        let (report, _) = &results[0];
        format!("{}\n{}", plan.url, report.human(plan.connections, plan.rate.is_some()))
    } else {
        format!("{} (open loop, {} steps)\n{}", plan.url, reports.len(), report::ladder(reports))
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    if plan.hist {
        // With --json, stdout is for the JSON alone.
        let mut err = std::io::stderr().lock();
        let sink: &mut dyn std::io::Write = if plan.json { &mut err } else { &mut out };
        for (report, tally) in results {
            if !plan.rates.is_empty() {
                let _ = writeln!(sink, "at {:.0}/s:", report.offered_rps);
            }
            sink.write_all(report::spectrum(&tally.latency).as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One JSON line per second of the run (of every step, one after the other).
fn write_timeline(file: &std::path::Path, results: &[(Report, Tally)]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    let mut t = 0;
    for (_, tally) in results {
        let Some(timeline) = &tally.timeline else { continue };
        for second in &timeline.seconds {
            let at = |q: f64| if second.latency.is_empty() { 0 } else { second.latency.value_at_quantile(q) };
            let line = serde_json::json!({
                "t": t,
                "requests": second.requests,
                "errors": second.errors,
                "p50_us": at(0.5),
                "p99_us": at(0.99),
            });
            writeln!(out, "{line}")?;
            t += 1;
        }
    }
    out.flush()
}
