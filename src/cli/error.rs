//! The CLI's error: one line for a person.

use std::path::PathBuf;

/// Anything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The container layer refused or failed to read an image.
    #[error("{0}")]
    Image(#[from] diskimage::formats::Error),
    /// The library failed (a partition table, LVM metadata, a VM, an
    /// extraction ...).
    #[error("{0}")]
    Volume(#[from] diskimage::Error),
    /// A file system could not be read.
    #[error("{0}")]
    Fs(#[from] diskimage::fs::Error),
    /// A FUSE mount failed (no FUSE, a busy mount point ...).
    #[cfg(all(feature = "fuse", unix))]
    #[error("{0}")]
    Mount(#[from] diskimage::mount::MountError),
    /// Writing output failed.
    #[error("{path}: {source}")]
    Output {
        /// Where the output was going.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// `hash --verify`: the computed digests differ from the stored ones,
    /// or the image stores none.
    #[error("{0}")]
    Verify(String),
    /// The reader of our standard output went away (`| head`): not an error.
    #[error("broken pipe")]
    BrokenPipe,
}

impl CliError {
    /// An output error, with a closed pipe turned into [`CliError::BrokenPipe`].
    pub fn output(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Output {
                path: path.into(),
                source,
            }
        }
    }
}
