//! `diskimage dump`: the virtual disk as raw bytes, to a file (sparse) or stdout.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::BlockDevice;

use super::extents::{for_each_piece, Piece};
use super::{progress, CliError, OpenArgs};

/// Arguments of `dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The image.
    image: PathBuf,
    /// Output file; `-` or nothing writes to standard output. A file gets
    /// holes wherever the disk reads as zeros.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    open: OpenArgs,
}

/// Blocks of this size that are all zeros are left as holes in a file.
const HOLE_GRAIN: usize = 64 * 1024;

/// Whether every byte is zero; a branch-free fold the compiler vectorises
/// (an early-exit `any` runs byte by byte).
fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Runs `dump`.
pub fn run(args: &DumpArgs) -> Result<(), CliError> {
    let image = args.open.open(&args.image)?;
    let bar = progress::bytes(image.size(), "dump");
    let result = match args.output.as_deref() {
        None => stream(
            &image,
            std::io::stdout().lock(),
            Path::new("<stdout>"),
            &bar,
        ),
        Some(p) if p == Path::new("-") => stream(
            &image,
            std::io::stdout().lock(),
            Path::new("<stdout>"),
            &bar,
        ),
        Some(p) => {
            refuse_input_as_output(image.info(), p)?;
            let regular = std::fs::metadata(p).map_or(true, |m| m.is_file());
            if regular {
                to_file(&image, p, &bar)
            } else {
                // A device or FIFO: no holes to punch, no length to set.
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| CliError::output(p, e))?;
                stream(&image, out, p, &bar)
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// Never write onto a file the image is read from.
fn refuse_input_as_output(info: &diskimage::ImageInfo, out: &Path) -> Result<(), CliError> {
    let Ok(out) = std::fs::canonicalize(out) else {
        return Ok(()); // does not exist yet
    };
    for f in info.chain().flat_map(|i| i.files.iter()) {
        if std::fs::canonicalize(f).is_ok_and(|f| f == out) {
            return Err(CliError::Usage(format!(
                "refusing to write to {}: it is an input file of the image",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Writes every byte in order (zeros included) to a stream.
fn stream(
    image: &dyn BlockDevice,
    mut out: impl Write,
    name: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let zeros = vec![0u8; super::extents::READ_CHUNK];
    let err = |e| CliError::output(name, e);
    for_each_piece(image, |piece| {
        match piece {
            Piece::Data(_, bytes) => {
                out.write_all(bytes).map_err(err)?;
                bar.inc(bytes.len() as u64);
            }
            Piece::Zeros(mut len) => {
                while len > 0 {
                    let n = usize::try_from(len).unwrap_or(zeros.len()).min(zeros.len());
                    out.write_all(&zeros[..n]).map_err(err)?;
                    len -= n as u64;
                    bar.inc(n as u64);
                }
            }
        }
        Ok(())
    })?;
    out.flush().map_err(err)
}

fn to_file(
    image: &dyn BlockDevice,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let err = |e| CliError::output(path, e);
    let file = File::create(path).map_err(err)?;
    for_each_piece(image, |piece| {
        match piece {
            Piece::Data(offset, bytes) => {
                // Write runs of non-zero blocks in one call; leave zero blocks as holes.
                let mut run: Option<(usize, usize)> = None;
                for (i, block) in bytes.chunks(HOLE_GRAIN).enumerate() {
                    let start = i * HOLE_GRAIN;
                    if !is_zero(block) {
                        run = Some(run.map_or((start, start + block.len()), |(s, _)| {
                            (s, start + block.len())
                        }));
                    } else if let Some((s, e)) = run.take() {
                        file.write_all_at(&bytes[s..e], offset + s as u64)
                            .map_err(err)?;
                    }
                }
                if let Some((s, e)) = run {
                    file.write_all_at(&bytes[s..e], offset + s as u64)
                        .map_err(err)?;
                }
                bar.inc(bytes.len() as u64);
            }
            Piece::Zeros(len) => bar.inc(len),
        }
        Ok(())
    })?;
    file.set_len(image.size()).map_err(err)?;
    file.sync_all().map_err(err)
}
