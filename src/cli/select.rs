//! Choosing the device a file-system command reads, and the arguments those
//! commands share (`IMAGE... [-V N] [PATH]`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use diskimage::diskset::{DiskSet, Volume};
use diskimage::fs::{FileSystem, FsKind, FsOptions};
use diskimage::{BlockDevice, DiskImage, OpenOptions};

use super::{CliError, OpenArgs};

/// The other devices of a file system spread over several.
type Devices = Vec<Arc<dyn BlockDevice>>;

/// The device holding the file system to read: volume `volume` of the set
/// (numbered as `diskimage volumes` prints them), or, when none is given,
/// the one volume whose file system can be read
/// ([`DiskSet::default_volume`]).
pub fn volume_device(
    images: Vec<DiskImage>,
    volume: Option<usize>,
    options: &OpenOptions,
) -> Result<Arc<dyn BlockDevice>, CliError> {
    let set = DiskSet::from_images(images, options)?;
    Ok(choose_volume(&set, volume)?.device())
}

/// Volume `-V volume` of `set`, or its default volume
/// ([`DiskSet::default_volume`]); a number past the end is named as the
/// flag the user typed.
pub fn choose_volume(set: &DiskSet, volume: Option<usize>) -> Result<&Volume, CliError> {
    if let Some(n) = volume.filter(|n| set.volume(*n).is_none()) {
        return Err(CliError::Usage(format!(
            "-V {n}: the disk set has {} volumes (see `diskimage volumes`)",
            set.volumes().len()
        )));
    }
    Ok(set.default_volume(volume)?)
}

/// Images, volume and open options of the file-system commands.
#[derive(Debug, Args)]
pub struct FsArgs {
    /// The image(s), then optionally a path inside the file system (the
    /// last argument is taken as the path when it is not a regular
    /// file on this host).
    #[arg(required = true, value_name = "IMAGE... [PATH]")]
    args: Vec<String>,
    /// The volume to read, as `diskimage volumes` numbers it; by default the
    /// one volume whose file system can be read.
    #[arg(short = 'V', long = "volume", value_name = "N")]
    volume: Option<usize>,
    /// Read the volume as this file system instead of the detected one
    /// (`udf`: the UDF side of a bridge ISO 9660 + UDF disc, read through
    /// ISO 9660 otherwise).
    #[arg(long = "fs", value_name = "TYPE", value_parser = parse_fs_kind)]
    fs: Option<FsKind>,
    #[command(flatten)]
    open: OpenArgs,
}

/// A `--fs` value: the name of a file system this library reads.
fn parse_fs_kind(s: &str) -> Result<FsKind, String> {
    const READ: [FsKind; 10] = [
        FsKind::Ntfs,
        FsKind::Ext2,
        FsKind::Ext3,
        FsKind::Ext4,
        FsKind::Fat12,
        FsKind::Fat16,
        FsKind::Fat32,
        FsKind::ExFat,
        FsKind::Iso9660,
        FsKind::Udf,
    ];
    READ.into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = READ.iter().map(|k| k.as_str()).collect();
            format!("unknown file system {s:?} (one of: {})", names.join(", "))
        })
}

impl FsArgs {
    /// The image paths and the path inside the file system (`/` if none).
    /// With `path_required`, the last argument is always the path.
    pub fn split(&self, path_required: bool) -> Result<(Vec<PathBuf>, String), CliError> {
        let mut args = self.args.clone();
        let last_is_path = match args.last() {
            Some(last) if args.len() >= 2 => path_required || !std::path::Path::new(last).is_file(),
            _ => false,
        };
        if path_required && !last_is_path {
            return Err(CliError::Usage("expected IMAGE... PATH".into()));
        }
        let path = if last_is_path {
            args.pop().unwrap_or_default()
        } else {
            "/".to_string()
        };
        Ok((args.into_iter().map(PathBuf::from).collect(), path))
    }

    /// Opens the images and the file system of the selected volume (of
    /// the kind the volume listing detected: detected once).
    pub fn open_fs(&self, path_required: bool) -> Result<(Box<dyn FileSystem>, String), CliError> {
        let (images, path) = self.split(path_required)?;
        let images = self.open.open_all(&images)?;
        let set = DiskSet::from_images(images, &self.open.options())?;
        let volume = choose_volume(&set, self.volume)?;
        let fs = match self.fs {
            Some(kind) => {
                let (device, others) = set.fs_devices(volume);
                diskimage::fs::open_fs_as_with(
                    device,
                    kind,
                    &FsOptions::default()
                        .with_strict(self.open.strict)
                        .with_kind(Some(kind))
                        .with_devices(others),
                )?
            }
            None => set.mount(volume)?,
        };
        print_fs_warnings(fs.as_ref());
        Ok((fs, path))
    }

    /// The file system `--fs` asks for, if any.
    pub fn fs_kind(&self) -> Option<FsKind> {
        self.fs
    }

    /// Whether `--strict` was given (file systems refuse what they would
    /// warn about).
    pub fn strict(&self) -> bool {
        self.open.strict
    }

    /// Opens the images; the device of the selected volume (to open its
    /// file system once per thread), the other devices of its file system
    /// ([`DiskSet::fs_devices`]: a multi-device Btrfs) and the path inside it.
    pub fn open_device(
        &self,
        path_required: bool,
    ) -> Result<(Arc<dyn BlockDevice>, Devices, String), CliError> {
        let (images, path) = self.split(path_required)?;
        let images = self.open.open_all(&images)?;
        let set = DiskSet::from_images(images, &self.open.options())?;
        let (device, others) = set.fs_devices(choose_volume(&set, self.volume)?);
        Ok((device, others, path))
    }
}

/// Prints the file system's warnings (e.g. an ext journal replayed in
/// memory) to stderr, one line each.
pub fn print_fs_warnings(fs: &dyn FileSystem) {
    print_fs_warnings_after(fs, 0);
}

/// Prints the file system's warnings past the first `seen` (those met
/// while reading, after the ones printed at open), one line each.
pub fn print_fs_warnings_after(fs: &dyn FileSystem, seen: usize) {
    for w in fs.warnings().into_iter().skip(seen) {
        eprintln!("diskimage: warning: {w}");
    }
}
