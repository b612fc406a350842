//! What a shell and `man` need from the command line's own definition: completion scripts
//! (clap_complete) and the man page (clap_mangen), both made from [`Cli`] so they never
//! drift from the flags the binary takes.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::error::Error;

/// `moat completion bash|zsh|fish`: the script on stdout, for the shell's completion folder.
pub fn completion(shell: Shell) -> Result<(), Error> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "moat", &mut script);
    write_stdout(&script)
}

/// `moat man`: the man page of `moat` (roff) on stdout, e.g. for `/usr/share/man/man1/moat.1`.
pub fn man() -> Result<(), Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| Error::other("writing the man page", e))?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|_| stdout.flush()).map_err(|e| Error::other("writing output", e))
}
