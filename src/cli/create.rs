//! `diskimage create`: a new, empty image, or a child (delta) of a parent.

use std::path::PathBuf;

use clap::Args;
use diskimage::formats::write::{self, CreateOptions, Subformat};
use diskimage::Format;

use super::CliError;

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The image to create.
    file: PathBuf,
    /// Virtual size in bytes, or with a K, M, G or T suffix (binary units);
    /// a child takes its parent's size.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Container format: vmdk, vhd, vhdx or raw (default: from FILE's
    /// extension, or the parent's format).
    #[arg(long)]
    format: Option<Format>,
    /// Layout, by qemu-img's names: monolithicSparse (default),
    /// monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat,
    /// streamOptimized; dynamic (default) or fixed for VHD, VHDX and raw.
    #[arg(long)]
    subformat: Option<Subformat>,
    /// Allocation unit (VMDK grain, VHD/VHDX block) in bytes or with a suffix.
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Logical sector size: 512 or 4096.
    #[arg(long, default_value_t = 512)]
    sector_size: u32,
    /// Make a child (delta, differencing disk) of this image; it is only read.
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of
/// 1024; `KiB`, `KB` and `k` spellings too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number with an optional K, M, G or T)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The output format: `--format`, else the file's extension, else `fallback`.
pub fn output_format(
    format: Option<Format>,
    file: &std::path::Path,
    fallback: Option<Format>,
) -> Result<Format, CliError> {
    format
        .or_else(|| write::format_from_extension(file))
        .or(fallback)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: name the format with --format (vmdk, vhd, vhdx, raw) or an extension",
                file.display()
            ))
        })
}

/// Runs `create`.
pub fn run(args: &CreateArgs) -> Result<(), CliError> {
    // The parent is opened here only when neither --format nor the
    // child's extension names the format (the writer opens it anyway).
    let named = args
        .format
        .or_else(|| write::format_from_extension(&args.file));
    let parent_format = match (&args.parent, named) {
        (Some(p), None) => {
            Some(diskimage::open(p, &diskimage::OpenOptions::new().no_parents(true))?.format())
        }
        _ => None,
    };
    let format = output_format(named, &args.file, parent_format)?;
    let size = match (args.size, &args.parent) {
        (Some(s), _) => s,
        (None, Some(_)) => 0,
        (None, None) => {
            return Err(CliError::Usage(
                "--size is needed (a child takes its parent's)".into(),
            ))
        }
    };
    let options = CreateOptions::new(format, size)
        .subformat(args.subformat)
        .block_size(args.block_size)
        .sector_size(args.sector_size)
        .parent(args.parent.clone())
        .force(args.force);
    write::create(&args.file, &options)?;
    Ok(())
}
