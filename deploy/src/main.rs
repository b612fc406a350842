//! The `moat` binary: parses the command line and hands it to the library.

use clap::Parser;

/// A request through the gateway makes a few dozen small allocations, freed on the same
/// thread soon after; mimalloc's thread-local free lists serve them in a fraction of glibc
/// malloc's time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = moat::cli::Cli::parse();
    if let Err(e) = moat::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
