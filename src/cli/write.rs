//! `diskimage write`: bytes from a file or standard input into a writable
//! image at a byte offset.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::formats::write;

use super::create::parse_size;
use super::CliError;

/// Arguments of `write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The image to write into (the top of its chain; parents are only read).
    image: PathBuf,
    /// Virtual byte offset of the first byte (any alignment; K, M, G, T suffixes).
    #[arg(long, value_parser = parse_size)]
    offset: u64,
    /// The bytes to write; `-` or nothing reads standard input.
    input: Option<PathBuf>,
}

/// Bytes read from the input at once.
const CHUNK: usize = 1 << 20;

/// Runs `write`.
pub fn run(args: &WriteArgs) -> Result<(), CliError> {
    let device = write::open_writable(&args.image, &diskimage::OpenOptions::new())?;
    let (mut input, name): (Box<dyn Read>, PathBuf) = match args.input.as_deref() {
        None => (Box::new(std::io::stdin().lock()), PathBuf::from("<stdin>")),
        Some(p) if p == Path::new("-") => {
            (Box::new(std::io::stdin().lock()), PathBuf::from("<stdin>"))
        }
        Some(p) => (
            Box::new(std::fs::File::open(p).map_err(|e| CliError::output(p, e))?),
            p.to_path_buf(),
        ),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut at = args.offset;
    loop {
        let mut filled = 0usize;
        while filled < CHUNK {
            let n = input
                .read(buf.get_mut(filled..).unwrap_or_default())
                .map_err(|e| CliError::output(&name, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        device.write_at(buf.get(..filled).unwrap_or_default(), at)?;
        at += filled as u64;
        if filled < CHUNK {
            break;
        }
    }
    device.flush()?;
    Ok(())
}
