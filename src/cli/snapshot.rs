//! `diskimage snapshot create|revert|delete`: snapshots of a powered-off
//! VM, on its files alone.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use diskimage::snapshot::{self, SnapshotOptions, SnapshotReport};

use super::CliError;

/// Arguments of `snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Take a snapshot: a new delta on every non-independent disk.
    Create {
        /// The VM (.vmx, or its folder).
        vm: PathBuf,
        /// The snapshot's display name.
        name: String,
        /// The snapshot's description.
        #[arg(long)]
        description: Option<String>,
        /// Save the memory state too (refused: a powered-off VM has none).
        #[arg(long)]
        include_memory: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Revert to a snapshot: new deltas on its disks, its configuration restored.
    Revert {
        /// The VM (.vmx, or its folder).
        vm: PathBuf,
        /// The snapshot's display name or uid.
        snapshot: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a snapshot: its data merged so every other state reads the same.
    Delete {
        /// The VM (.vmx, or its folder).
        vm: PathBuf,
        /// The snapshot's display name or uid.
        snapshot: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Go on when only states the change does not need are incomplete (revert:
    /// a snapshot without a .vmsn keeps the current configuration).
    #[arg(long)]
    fallback: bool,
}

fn print(action: &str, r: &SnapshotReport) {
    println!("{action} snapshot {:?} (uid {})", r.snapshot, r.uid);
    for (what, files) in [
        ("created", &r.created),
        ("changed", &r.changed),
        ("removed", &r.removed),
    ] {
        for f in files {
            println!("  {what} {}", f.display());
        }
    }
}

/// Runs `snapshot`.
pub fn run(args: &SnapshotArgs) -> Result<(), CliError> {
    match &args.action {
        Action::Create {
            vm,
            name,
            description,
            include_memory,
            common,
        } => {
            let opts = SnapshotOptions::new()
                .description(description.clone())
                .include_memory(*include_memory)
                .fallback(common.fallback);
            print("created", &snapshot::create(vm, name, &opts)?);
        }
        Action::Revert {
            vm,
            snapshot: which,
            common,
        } => {
            let opts = SnapshotOptions::new().fallback(common.fallback);
            print("reverted to", &snapshot::revert(vm, which, &opts)?);
        }
        Action::Delete {
            vm,
            snapshot: which,
            common,
        } => {
            let opts = SnapshotOptions::new().fallback(common.fallback);
            print("deleted", &snapshot::delete(vm, which, &opts)?);
        }
    }
    Ok(())
}
