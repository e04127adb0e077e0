//! `diskimage cat`: write one file (or `path:stream`) of a file system to stdout.

use std::io::Write;

use clap::Args;

use super::select::FsArgs;
use super::CliError;

/// Arguments of `cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    fs: FsArgs,
}

/// Runs `cat`.
pub fn run(args: &CatArgs) -> Result<(), CliError> {
    let (fs, path) = args.fs.open_fs(true)?;
    let seen = fs.warnings().len();
    let mut reader = fs.open(&path)?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut reader, &mut out).map_err(|e| read_or_write(e, &path))?;
    drop(reader);
    super::select::print_fs_warnings_after(fs.as_ref(), seen);
    out.flush().map_err(|e| CliError::output("stdout", e))
}

/// A copy error: ours (reading the file system) or the output's.
pub fn read_or_write(e: std::io::Error, path: &str) -> CliError {
    if e.get_ref()
        .is_some_and(|i| i.is::<diskimage::fs::Error>() || i.is::<diskimage::formats::Error>())
    {
        CliError::Fs(diskimage::fs::Error::from_io(
            diskimage::fs::FsName::Detect,
            path,
            e,
        ))
    } else if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::BrokenPipe
    } else {
        CliError::Usage(format!("{path}: {e}"))
    }
}
