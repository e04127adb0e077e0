//! `diskimage hash`: digests of the whole virtual disk in one read pass.
//!
//! One reader walks the disk; each requested algorithm runs on its own
//! thread and receives the same chunks, so `--algo md5 --algo sha1 --algo
//! sha256` costs one read and the time of the slowest digest. Runs the map
//! reports as zeros are fed from a zero buffer without reading.
//!
//! `--verify` computes the digests an image stores (an EWF image's MD5
//! and SHA-1, its `md5`/`sha1` info properties) and compares them.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use diskimage::BlockDevice;
use sha2::Digest;

use super::extents::{for_each_piece, Piece, READ_CHUNK};
use super::{progress, CliError, OpenArgs};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algo {
    /// SHA-256 (the default).
    Sha256,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
}

/// Arguments of `hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// The image.
    image: PathBuf,
    /// Algorithm; repeat for several digests from one read pass.
    #[arg(long, value_enum, default_value = "sha256")]
    algo: Vec<Algo>,
    /// Compute the digests the image stores (EWF: MD5, SHA-1) and compare
    /// them; a mismatch, or an image storing none, is an error.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    open: OpenArgs,
}

enum Msg {
    Data(Arc<Vec<u8>>),
    Zeros(u64),
}

fn hasher(algo: Algo, rx: Receiver<Msg>) -> String {
    fn run<D: Digest>(mut d: D, rx: Receiver<Msg>) -> String {
        let zeros = vec![0u8; READ_CHUNK];
        for msg in rx {
            match msg {
                Msg::Data(b) => d.update(b.as_slice()),
                Msg::Zeros(mut len) => {
                    while len > 0 {
                        let n = usize::try_from(len).unwrap_or(zeros.len()).min(zeros.len());
                        d.update(&zeros[..n]);
                        len -= n as u64;
                    }
                }
            }
        }
        d.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
    match algo {
        Algo::Sha256 => run(sha2::Sha256::new(), rx),
        Algo::Sha1 => run(sha1::Sha1::new(), rx),
        Algo::Md5 => run(md5::Md5::new(), rx),
    }
}

/// Hex digests of the whole device, one per algorithm, in the order given.
pub fn digests(
    device: &dyn BlockDevice,
    algos: &[Algo],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<String>, CliError> {
    std::thread::scope(|s| {
        let mut senders: Vec<SyncSender<Msg>> = Vec::new();
        let mut handles = Vec::new();
        for &a in algos {
            let (tx, rx) = sync_channel::<Msg>(4);
            senders.push(tx);
            handles.push(s.spawn(move || hasher(a, rx)));
        }
        let fed = for_each_piece(device, |piece| {
            let msg = |tx: &SyncSender<Msg>, m: Msg| {
                tx.send(m)
                    .map_err(|_| CliError::Usage("hash thread stopped".into()))
            };
            match piece {
                Piece::Data(bytes) => {
                    let shared = Arc::new(bytes.to_vec());
                    for tx in &senders {
                        msg(tx, Msg::Data(Arc::clone(&shared)))?;
                    }
                    bar.inc(bytes.len() as u64);
                }
                Piece::Zeros(len) => {
                    for tx in &senders {
                        msg(tx, Msg::Zeros(len))?;
                    }
                    bar.inc(len);
                }
            }
            Ok(())
        });
        drop(senders);
        let out: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        fed.map(|()| out)
    })
}

/// Runs `hash`.
pub fn run(args: &HashArgs) -> Result<(), CliError> {
    let image = args.open.open(&args.image)?;
    if args.verify {
        return verify(args, &image);
    }
    let bar = progress::bytes(image.size(), "hash");
    let mut algos = args.algo.clone();
    algos.dedup();
    let hex = digests(&image, &algos, &bar)?;
    bar.finish_and_clear();
    for (a, h) in algos.iter().zip(hex) {
        if algos.len() > 1 {
            // Several digests: BSD tag lines, as `sha256sum --tag` prints them.
            let name = format!("{a:?}").to_uppercase();
            println!("{name} ({}) = {h}", args.image.display());
        } else {
            println!("{h}  {}", args.image.display());
        }
    }
    Ok(())
}

/// Runs `hash --verify`: every stored digest computed in one pass and compared.
fn verify(args: &HashArgs, image: &diskimage::DiskImage) -> Result<(), CliError> {
    let shown = args.image.display();
    let stored: Vec<(Algo, String)> = [(Algo::Md5, "md5"), (Algo::Sha1, "sha1")]
        .into_iter()
        .filter_map(|(a, key)| {
            image
                .info()
                .properties
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| (a, v.to_ascii_lowercase()))
        })
        .collect();
    if stored.is_empty() {
        return Err(CliError::Verify(format!(
            "{shown}: the image stores no digests to verify against ({} images carry none; \
             EWF images carry MD5 and SHA-1)",
            image.info().format
        )));
    }
    let algos: Vec<Algo> = stored.iter().map(|(a, _)| *a).collect();
    let bar = progress::bytes(image.size(), "verify");
    let hex = digests(image, &algos, &bar)?;
    bar.finish_and_clear();
    let mut bad = Vec::new();
    for ((a, want), got) in stored.iter().zip(&hex) {
        let name = format!("{a:?}").to_uppercase();
        if want == got {
            println!("{name} ({shown}) = {got}: matches the stored digest");
        } else {
            bad.push(format!("{name} stored {want}, computed {got}"));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(CliError::Verify(format!(
        "{shown}: digest mismatch: {}",
        bad.join("; ")
    )))
}
