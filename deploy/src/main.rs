//! The `moat` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    let cli = moat::cli::Cli::parse();
    if let Err(e) = moat::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
