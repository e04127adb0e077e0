//! `diskimage extract`: copy a tree out of a file system into a host
//! directory, safely, with the library's extraction engine
//! ([`diskimage::extract`]); renames, skipped entries and read failures
//! are printed on stderr in walk order.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::Args;
use diskimage::extract::{extract, ExtractOptions, Observer, Report};

use super::select::FsArgs;
use super::{progress, CliError};

/// Arguments of `extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The target directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Also write NTFS alternate data streams, as `name:stream` files.
    #[arg(long)]
    streams: bool,
    /// Threads that extract at once, each a whole directory at a time
    /// (default: the cores available, at most 4). The output and the
    /// report are the same whatever the number.
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Read every file through the file system's reader, never copying
    /// one stored verbatim in an image file by the kernel (`sendfile`).
    #[arg(long)]
    no_kernel_copy: bool,
    /// Leave out the file system's own metadata files (NTFS `$MFT`,
    /// `$Boot`, `/$Extend/...`).
    #[arg(long)]
    skip_fs_metadata: bool,
    #[command(flatten)]
    fs: FsArgs,
}

/// Prints what the engine reports and moves the progress bar.
struct Printer(indicatif::ProgressBar);

impl Observer for Printer {
    fn file_done(&self) {
        self.0.inc(1);
    }

    fn report(&self, report: &Report) {
        match report {
            Report::Failed(e) => eprintln!("diskimage: {e}"),
            Report::FsWarning(_) => eprintln!("diskimage: {report}"),
            other => eprintln!("{other}"),
        }
    }
}

/// Runs `extract`.
pub fn run(args: &ExtractArgs) -> Result<(), CliError> {
    let (device, others, path) = args.fs.open_device(false)?;
    let options = ExtractOptions::new()
        .fs_devices(others)
        .streams(args.streams)
        .threads(args.threads)
        .kernel_copy(!args.no_kernel_copy)
        .fs_metadata(!args.skip_fs_metadata)
        .strict(args.fs.strict())
        .fs_kind(args.fs.fs_kind());
    let printer = Printer(progress::count(0, "extract"));
    let summary = extract(&device, &path, &args.output, &options, &printer)?;
    printer.0.finish_and_clear();
    eprintln!(
        "extracted {} files, renamed {}",
        summary.files, summary.renamed
    );
    if summary.failed > 0 {
        return Err(CliError::Usage(format!(
            "{} entries could not be read",
            summary.failed
        )));
    }
    Ok(())
}
