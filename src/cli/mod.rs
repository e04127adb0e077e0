//! Command-line interface: flags are declared once, as data (clap derive);
//! each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use diskimage::{Format, OpenOptions};

mod cat;
mod changes;
mod commit;
mod convert;
mod create;
mod dump;
mod error;
mod extents;
mod extract;
mod hash;
mod info;
mod ls;
mod map;
#[cfg(all(feature = "fuse", unix))]
mod mount;
mod os;
mod progress;
mod select;
mod snapshot;
mod timeline;
mod vm;
mod volumes;
mod write;

pub use error::CliError;

/// Read virtual disk images (VMDK, VHD, VHDX, ISO, raw) offline and read-only.
#[derive(Debug, Parser)]
#[command(name = "diskimage", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Format, subformat, size, files, chain, metadata and warnings.
    Info(info::InfoArgs),
    /// Allocation map: data, zero, unallocated, parent and compressed runs.
    Map(map::MapArgs),
    /// The whole virtual disk as raw bytes (holes kept sparse in a file).
    Dump(dump::DumpArgs),
    /// Hash of the whole virtual disk, printed like sha256sum.
    Hash(hash::HashArgs),
    /// Volumes across the disk set (MBR, GPT, LVM2, whole disk), with file systems.
    Volumes(volumes::VolumesArgs),
    /// Installed operating systems: product, version, architecture, hostname, mount points.
    Os(os::OsArgs),
    /// List a directory (or, with -r, a tree) of a file system.
    Ls(ls::LsArgs),
    /// Write one file (or NTFS `path:stream`) of a file system to stdout.
    Cat(cat::CatArgs),
    /// Copy a tree out of a file system into a directory, safely.
    Extract(extract::ExtractArgs),
    /// TSK 3.x bodyfile of a file system, for mactime.
    Timeline(timeline::TimelineArgs),
    /// A VM (.vmx, .vbox, Hyper-V folder): facts, disks, chains, snapshot tree.
    Vm(vm::VmArgs),
    /// Mount a volume's files (or, with --raw, the disks and volumes) read-only through FUSE.
    #[cfg(all(feature = "fuse", unix))]
    Mount(mount::MountArgs),
    /// Create an empty image, or with --parent a child (delta) of one.
    Create(create::CreateArgs),
    /// Write bytes from a file or stdin into an image at a byte offset.
    Write(write::WriteArgs),
    /// Copy a disk, VM disk or volume into a new image of any writable format.
    Convert(convert::ConvertArgs),
    /// Merge a child (delta) into its parent.
    Commit(commit::CommitArgs),
    /// What changed between two states of a VM: byte runs per disk, and with --files the files.
    Changes(changes::ChangesArgs),
    /// Take, revert to or delete a snapshot of a powered-off VMware VM.
    Snapshot(snapshot::SnapshotArgs),
}

/// How images are opened; every command that opens images takes these.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Open a differencing/delta image alone, without its parents.
    #[arg(long)]
    no_parents: bool,
    /// Refuse recoverable damage (bad checksums ...) instead of warning.
    #[arg(long)]
    strict: bool,
    /// Read through a read-only memory map instead of pread.
    #[arg(long)]
    mmap: bool,
    /// Skip the content probe and open as this format: raw, split-raw, iso, vmdk, vhd, vhdx, qcow2, vdi.
    #[arg(long)]
    format: Option<Format>,
    #[command(flatten)]
    vm: vm::VmOpenArgs,
}

impl OpenArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> OpenOptions {
        OpenOptions::new()
            .strict(self.strict)
            .no_parents(self.no_parents)
            .mmap(self.mmap)
            .format(self.format)
    }

    /// Opens `path` with these options; a VM (`.vmx`, `.vbox`, folder)
    /// gives its only disk, or the one `--disk N` names.
    pub fn open(&self, path: &std::path::Path) -> Result<diskimage::DiskImage, CliError> {
        if diskimage::vm::is_vm_path(path) {
            return self.vm.one_disk(path, self.options());
        }
        let options = self.options().snapshot(self.vm.image_snapshot());
        Ok(diskimage::open(path, &options)?)
    }

    /// Opens the images of a disk set: one VM argument gives every disk of
    /// the VM's state, other arguments are images.
    pub fn open_all(
        &self,
        paths: &[std::path::PathBuf],
    ) -> Result<Vec<diskimage::DiskImage>, CliError> {
        if let [one] = paths {
            if diskimage::vm::is_vm_path(one) {
                return self.vm.all_disks(one, self.options());
            }
        }
        paths.iter().map(|p| self.open(p)).collect()
    }
}

/// Runs the command line and turns any error into one line and exit code 1.
pub fn main() -> ExitCode {
    // A panic is a bug in diskimage, never the input's fault: say so in one
    // line instead of a backtrace (RUST_BACKTRACE=1 still shows one).
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("diskimage: internal error (a bug, please report it with the image if you can): {info}");
        }));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Map(a) => map::run(&a),
        Command::Dump(a) => dump::run(&a),
        Command::Hash(a) => hash::run(&a),
        Command::Volumes(a) => volumes::run(&a),
        Command::Os(a) => os::run(&a),
        Command::Ls(a) => ls::run(&a),
        Command::Cat(a) => cat::run(&a),
        Command::Extract(a) => extract::run(&a),
        Command::Timeline(a) => timeline::run(&a),
        Command::Vm(a) => vm::run(&a),
        #[cfg(all(feature = "fuse", unix))]
        Command::Mount(a) => mount::run(&a),
        Command::Create(a) => create::run(&a),
        Command::Write(a) => write::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Commit(a) => commit::run(&a),
        Command::Changes(a) => changes::run(&a),
        Command::Snapshot(a) => snapshot::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diskimage: error: {e}");
            ExitCode::FAILURE
        }
    }
}
