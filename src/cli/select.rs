//! Choosing the device a file-system command reads, and the arguments those
//! commands share (`IMAGE... [-V N] [PATH]`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use diskimage::fs::{detect, open_fs, FileSystem};
use diskimage::{BlockDevice, DiskImage};

use super::{CliError, OpenArgs};

/// The device holding the file system to read: for now the whole disk
/// when it holds a file system. Partitioned disks, LVM and several images
/// need the volume layer, which will replace this one function.
pub fn volume_device(
    images: &[DiskImage],
    volume: Option<usize>,
) -> Result<Arc<dyn BlockDevice>, CliError> {
    let [image] = images else {
        return Err(CliError::Usage(
            "several images (a RAID or LVM set) need the volume layer, which is not built in yet"
                .into(),
        ));
    };
    if let Some(n) = volume {
        if n != 0 {
            return Err(CliError::Usage(format!(
                "-V {n}: selecting a volume of a partitioned disk needs the volume layer, which is not built in yet (only -V 0, the whole disk)"
            )));
        }
    }
    let device: Arc<dyn BlockDevice> = Arc::new(image.clone());
    match detect(device.as_ref())? {
        Some(_) => Ok(device),
        None => Err(CliError::Usage(
            "the whole disk holds no file system; partitioned disks need the volume layer, which is not built in yet".into(),
        )),
    }
}

/// Images, volume and open options of the file-system commands.
#[derive(Debug, Args)]
pub struct FsArgs {
    /// The image(s), then optionally a path inside the file system (the
    /// last argument is taken as the path when it is not a regular
    /// file on this host).
    #[arg(required = true, value_name = "IMAGE... [PATH]")]
    args: Vec<String>,
    /// The volume to read (0 = the whole disk).
    #[arg(short = 'V', long = "volume", value_name = "N")]
    volume: Option<usize>,
    #[command(flatten)]
    open: OpenArgs,
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

    /// Opens the images and the file system of the selected volume.
    pub fn open_fs(&self, path_required: bool) -> Result<(Box<dyn FileSystem>, String), CliError> {
        let (images, path) = self.split(path_required)?;
        let images = images
            .iter()
            .map(|p| self.open.open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let device = volume_device(&images, self.volume)?;
        Ok((open_fs(device)?, path))
    }
}
