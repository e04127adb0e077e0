//! `diskimage commit`: a delta's data merged into its parent.

use std::path::PathBuf;

use clap::Args;
use diskimage::formats::write::commit::commit;

use super::{progress, CliError};

/// Arguments of `commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The child (delta, differencing disk) whose data goes into its parent.
    child: PathBuf,
    /// Delete the child's files afterwards.
    #[arg(long)]
    drop: bool,
}

/// Runs `commit`.
pub fn run(args: &CommitArgs) -> Result<(), CliError> {
    let bar = progress::bytes(0, "commit");
    let result = commit(
        &args.child,
        &diskimage::OpenOptions::new(),
        args.drop,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    result?;
    Ok(())
}
