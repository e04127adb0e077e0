//! `diskimage hash`: digests of the whole virtual disk in one read pass.
//!
//! One reader thread walks the disk. One algorithm digests its buffers as
//! they come; several run on a thread each and receive the same chunks, so
//! `--algo md5 --algo sha1 --algo sha256` costs one read and the time of
//! the slowest digest. Runs the map reports as zeros are fed from a zero
//! buffer without reading.
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

/// One digest being computed.
enum Running {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
}

impl Running {
    fn new(algo: Algo) -> Self {
        match algo {
            Algo::Sha256 => Running::Sha256(sha2::Sha256::new()),
            Algo::Sha1 => Running::Sha1(sha1::Sha1::new()),
            Algo::Md5 => Running::Md5(md5::Md5::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Running::Sha256(d) => d.update(bytes),
            Running::Sha1(d) => d.update(bytes),
            Running::Md5(d) => d.update(bytes),
        }
    }

    /// Feeds `len` zero bytes from `zeros` (a block of zeros).
    fn update_zeros(&mut self, mut len: u64, zeros: &[u8]) {
        while len > 0 && !zeros.is_empty() {
            let n = usize::try_from(len).unwrap_or(zeros.len()).min(zeros.len());
            self.update(zeros.get(..n).unwrap_or_default());
            len -= n as u64;
        }
    }

    fn hex(self) -> String {
        let bytes = match self {
            Running::Sha256(d) => d.finalize().to_vec(),
            Running::Sha1(d) => d.finalize().to_vec(),
            Running::Md5(d) => d.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn hasher(algo: Algo, rx: Receiver<Msg>) -> String {
    let zeros = vec![0u8; READ_CHUNK];
    let mut d = Running::new(algo);
    for msg in rx {
        match msg {
            Msg::Data(b) => d.update(b.as_slice()),
            Msg::Zeros(len) => d.update_zeros(len, &zeros),
        }
    }
    d.hex()
}

/// Hex digests of the whole device, one per algorithm, in the order given.
/// One algorithm runs on the calling thread, straight from the read
/// buffers (the reader thread reads the next chunk meanwhile); several run
/// on a thread each, fed copies of each chunk from a few reused buffers.
pub fn digests(
    device: &dyn BlockDevice,
    algos: &[Algo],
    bar: &indicatif::ProgressBar,
) -> Result<Vec<String>, CliError> {
    if let [algo] = algos {
        let zeros = vec![0u8; READ_CHUNK];
        let mut d = Running::new(*algo);
        for_each_piece(device, false, |piece| {
            let n = piece_len(&piece);
            match piece {
                Piece::Data(bytes) => d.update(bytes),
                Piece::Zeros(len) => d.update_zeros(len, &zeros),
                Piece::Stored { .. } => {
                    return Err(CliError::Usage("stored run handed to hash".into()))
                }
            }
            bar.inc(n);
            Ok(())
        })?;
        return Ok(vec![d.hex()]);
    }
    std::thread::scope(|s| {
        let mut senders: Vec<SyncSender<Msg>> = Vec::new();
        let mut handles = Vec::new();
        for &a in algos {
            let (tx, rx) = sync_channel::<Msg>(4);
            senders.push(tx);
            handles.push(s.spawn(move || hasher(a, rx)));
        }
        // Buffers handed to the hashers; one is refilled once every hasher
        // has dropped it.
        let mut pool: Vec<Arc<Vec<u8>>> = Vec::new();
        let fed = for_each_piece(device, false, |piece| {
            let n = piece_len(&piece);
            let msg = |tx: &SyncSender<Msg>, m: Msg| {
                tx.send(m)
                    .map_err(|_| CliError::Usage("hash thread stopped".into()))
            };
            match piece {
                Piece::Data(bytes) => {
                    let shared = refill(&mut pool, bytes);
                    for tx in &senders {
                        msg(tx, Msg::Data(Arc::clone(&shared)))?;
                    }
                    pool.push(shared);
                }
                Piece::Zeros(len) => {
                    for tx in &senders {
                        msg(tx, Msg::Zeros(len))?;
                    }
                }
                Piece::Stored { .. } => {
                    return Err(CliError::Usage("stored run handed to hash".into()))
                }
            }
            bar.inc(n);
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

/// How many disk bytes `piece` covers.
fn piece_len(piece: &Piece<'_>) -> u64 {
    match piece {
        Piece::Data(b) => b.len() as u64,
        Piece::Zeros(n) | Piece::Stored { len: n, .. } => *n,
    }
}

/// A copy of `bytes` in a buffer from `pool` that no hasher holds any more,
/// or in a new one.
fn refill(pool: &mut Vec<Arc<Vec<u8>>>, bytes: &[u8]) -> Arc<Vec<u8>> {
    while let Some(i) = pool.iter().position(|b| Arc::strong_count(b) == 1) {
        let mut b = pool.swap_remove(i);
        if let Some(v) = Arc::get_mut(&mut b) {
            v.clear();
            v.extend_from_slice(bytes);
            return b;
        }
    }
    Arc::new(bytes.to_vec())
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
