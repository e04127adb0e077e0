//! `diskimage convert`: any readable disk, VM disk or volume into a new
//! image of any writable format.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use diskimage::formats::write::{self, convert, CreateOptions, Subformat};
use diskimage::{BlockDevice, DiskImage, Format, OpenOptions};

use super::create::{output_format, parse_size};
use super::{progress, select, vm, CliError};

/// Arguments of `convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Source images (or one VM), then the destination.
    #[arg(required = true, value_name = "SRC... DST")]
    paths: Vec<PathBuf>,
    /// Destination format: vmdk, vhd, vhdx or raw (default: from DST's extension).
    #[arg(long)]
    format: Option<Format>,
    /// Destination layout (see `create --help`).
    #[arg(long)]
    subformat: Option<Subformat>,
    /// Destination allocation unit in bytes or with a suffix.
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Convert this volume of the source disk set (as `diskimage volumes`
    /// numbers them) instead of a whole disk.
    #[arg(short = 'V', long = "volume", value_name = "N")]
    volume: Option<usize>,
    /// Replace an existing destination.
    #[arg(long)]
    force: bool,
    /// Refuse recoverable damage in the source instead of warning.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    vm: vm::VmOpenArgs,
}

/// Runs `convert`.
pub fn run(args: &ConvertArgs) -> Result<(), CliError> {
    let (dst, sources) = args
        .paths
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
        .ok_or_else(|| CliError::Usage("convert needs SRC... DST".into()))?;
    let options = OpenOptions::new().strict(args.strict);
    let images: Vec<DiskImage> = match sources {
        [one] if diskimage::vm::is_vm_path(one) => {
            if args.volume.is_some() {
                args.vm.all_disks(one, options.clone())?
            } else {
                vec![args.vm.one_disk(one, options.clone())?]
            }
        }
        _ => sources
            .iter()
            .map(|p| diskimage::open(p, &options))
            .collect::<Result<_, _>>()?,
    };
    let files: Vec<PathBuf> = images
        .iter()
        .flat_map(|i| {
            i.info()
                .chain()
                .flat_map(|c| c.files.iter().chain([&c.path]))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    write::convert::refuse_source_as_destination(dst, &files)?;
    let device: Arc<dyn BlockDevice> = match (args.volume, images.len()) {
        (Some(n), _) => select::volume_device(images, Some(n), &options)?,
        (None, 1) => images
            .into_iter()
            .next()
            .map(|i| i.device())
            .ok_or_else(|| CliError::Usage("no source image".into()))?,
        (None, n) => {
            return Err(CliError::Usage(format!(
                "{n} source disks: choose a volume with -V N (see `diskimage volumes`)"
            )))
        }
    };
    let format = output_format(args.format, dst, None)?;
    let create = CreateOptions::new(format, device.size())
        .subformat(args.subformat)
        .block_size(args.block_size)
        .force(args.force);
    let bar = progress::bytes(device.size(), "convert");
    let result = convert::convert(device.as_ref(), dst, &create, &mut |done, _| {
        bar.set_position(done);
    });
    bar.finish_and_clear();
    result?;
    Ok(())
}
