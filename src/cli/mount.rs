//! `diskimage mount`: a volume's files, every volume's files (`--all`) or
//! the raw disks and volumes (`--raw`) as a read-only FUSE mount.
//!
//! The command always stays in the foreground, serving the mount until
//! SIGINT (Ctrl-C) or SIGTERM — it then unmounts and exits 0 — or until
//! someone runs `fusermount3 -u MOUNTPOINT`. Forking a multi-threaded Rust
//! process to daemonize is unsafe, so there is no background mode: run it
//! with `&`, `nohup`, `setsid` or a systemd unit; `--foreground` is
//! accepted and is what happens anyway.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use diskimage::mount::{MountOptions, Selection};
use diskimage::DiskSet;

use super::{CliError, OpenArgs};

/// Arguments of `mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The image(s) of the disk set, then the mount point (an empty directory).
    #[arg(required = true, value_name = "IMAGE... MOUNTPOINT")]
    args: Vec<PathBuf>,
    /// The volume to mount, as `diskimage volumes` numbers it; by default
    /// the one volume whose file system can be read.
    #[arg(short = 'V', long = "volume", value_name = "N", conflicts_with_all = ["all", "raw"])]
    volume: Option<usize>,
    /// Mount every readable volume, each as MOUNTPOINT/<index>-<label>/.
    #[arg(long, conflicts_with = "raw")]
    all: bool,
    /// Expose each disk and volume as a flat read-only file (disk0,
    /// disk0p1, lvm/<vg>/<lv>) for other tools.
    #[arg(long)]
    raw: bool,
    /// Stay in the foreground: the default and only mode (background it
    /// with `&`, `setsid` or a service manager).
    #[arg(short, long)]
    foreground: bool,
    /// Let other users see the files (needs `user_allow_other` in
    /// /etc/fuse.conf unless run as root).
    #[arg(long)]
    allow_other: bool,
    /// Worker threads per volume (default: CPUs, 2 to 8).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    open: OpenArgs,
}

/// Runs `mount` until a signal or an outside unmount ends it.
pub fn run(args: &MountArgs) -> Result<(), CliError> {
    let Some((mountpoint, images)) = args.args.split_last().filter(|(_, i)| !i.is_empty()) else {
        return Err(CliError::Usage("expected IMAGE... MOUNTPOINT".into()));
    };
    // Flags first: a signal during the (possibly long) open still unmounts.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::Usage(format!("cannot catch signal {sig}: {e}")))?;
    }
    let images = images
        .iter()
        .map(|p| args.open.open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let set = DiskSet::from_images(images, &args.open.options())?;
    let what = if args.raw {
        Selection::Raw
    } else if args.all {
        Selection::All
    } else {
        Selection::Volume(super::select::choose_volume(&set, args.volume)?.index)
    };
    let options = MountOptions::new()
        .threads(args.threads)
        .allow_other(args.allow_other)
        .log_errors(true);
    let handle = set.mount_fuse(what, mountpoint, &options)?;
    eprintln!(
        "diskimage: mounted read-only at {}; Ctrl-C, SIGTERM or `fusermount3 -u {}` unmounts",
        mountpoint.display(),
        mountpoint.display()
    );
    while handle.is_mounted() && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    handle
        .unmount()
        .map_err(|e| CliError::Usage(format!("unmounting {}: {e}", mountpoint.display())))
}
