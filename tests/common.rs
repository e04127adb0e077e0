//! Helpers shared by the integration tests.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use diskimage::{BlockDevice, ExtentKind, OpenOptions};
use sha2::{Digest, Sha256};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Decompresses every `*.gz` in `src` into `dst` under its name without `.gz`.
pub fn gunzip_dir(src: &Path, dst: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().expect("gz file name");
        let target = dst.join(name);
        gunzip(&p, &target);
        out.push(target);
    }
    out
}

/// Decompresses one gzip file.
pub fn gunzip(src: &Path, dst: &Path) {
    let f = File::open(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut dec = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
    let mut out = File::create(dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = dec
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).expect("write decompressed file");
    }
}

/// A gzip file's decompressed bytes, read in place (nothing written).
pub fn gunzip_bytes(src: &Path) -> Vec<u8> {
    let f = File::open(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(f))
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    out
}

/// sha256 of a byte slice, lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of the first `len` bytes of a device, reading only what the map
/// says is not zero (zero runs are hashed from a zero buffer). Checks the
/// map contract on the way: sorted, contiguous, non-empty, inside the device.
pub fn sha256_device(dev: &dyn BlockDevice, len: u64) -> Result<String, diskimage::formats::Error> {
    const CHUNK: u64 = 4 << 20;
    let mut h = Sha256::new();
    let zeros = vec![0u8; CHUNK as usize];
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0u64;
    while offset < len {
        let span = (1u64 << 30).min(len - offset);
        let map = dev.map(offset, span)?;
        let mut expect = offset;
        for e in map {
            assert_eq!(e.offset, expect, "map is not contiguous at {expect:#x}");
            assert!(e.len > 0, "empty extent at {:#x}", e.offset);
            let end = e.offset + e.len;
            assert!(end <= offset + span, "extent past the requested range");
            let mut pos = e.offset;
            while pos < end {
                let n = CHUNK.min(end - pos) as usize;
                if e.kind.reads_as_zero() {
                    h.update(&zeros[..n]);
                } else {
                    dev.read_at(&mut buf[..n], pos)?;
                    h.update(&buf[..n]);
                }
                pos += n as u64;
            }
            expect = end;
        }
        assert_eq!(
            expect,
            offset + span,
            "map does not cover the requested range"
        );
        offset += span;
    }
    Ok(hex(&h.finalize()))
}

/// Reads a few sectors of every zero extent and checks they really are zeros.
pub fn check_zero_extents(dev: &dyn BlockDevice) -> Result<(), diskimage::formats::Error> {
    let mut buf = vec![0u8; 4096];
    for e in dev.map(0, dev.size())? {
        if matches!(e.kind, ExtentKind::Zero | ExtentKind::Unallocated) {
            for pos in [
                e.offset,
                e.offset + e.len / 2,
                e.end().saturating_sub(4096).max(e.offset),
            ] {
                let n = 4096.min(e.end() - pos) as usize;
                dev.read_at(&mut buf[..n], pos)?;
                assert!(
                    buf[..n].iter().all(|&b| b == 0),
                    "extent {e:?} does not read as zeros at {pos:#x}"
                );
            }
        }
    }
    Ok(())
}

/// Parses an options column: `-` or a comma list of `no_parents`,
/// `strict`, `mmap`, `format=NAME`, `snapshot=ID|NAME`.
pub fn parse_options(s: &str) -> OpenOptions {
    let mut o = OpenOptions::default();
    for word in s
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty() && *w != "-")
    {
        match word {
            "no_parents" => o.no_parents = true,
            "strict" => o.strict = true,
            "mmap" => o.mmap = true,
            f if f.starts_with("format=") => {
                o.format = Some(f[7..].parse().expect("format in options column"))
            }
            f if f.starts_with("snapshot=") => o.snapshot = Some(f[9..].to_owned()),
            other => panic!("unknown option {other:?} in options column"),
        }
    }
    o
}

/// Rows of a tab-separated file, comments and blank lines skipped.
pub fn tsv_rows(path: &Path) -> Vec<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Runs the built `diskimage` binary.
pub fn diskimage(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_diskimage"))
        .args(args)
        .output()
        .expect("run diskimage")
}

/// One row of a `*.listing.tsv` made from a source tree by a fixture
/// script: `path  type  size  sha256  mtime  link-target`.
pub struct ListingRow {
    /// `file`, `dir` or `symlink`.
    pub ty: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of a file's bytes.
    pub sha256: String,
    /// Modification time in seconds, where the row has one.
    pub mtime: Option<i64>,
    /// A symlink's target.
    pub target: String,
}

/// A listing file by path (see [`ListingRow`]).
pub fn listing_tsv(path: &Path) -> std::collections::BTreeMap<String, ListingRow> {
    tsv_rows(path)
        .into_iter()
        .map(|r| {
            assert_eq!(
                r.len(),
                6,
                "malformed listing row {r:?} in {}",
                path.display()
            );
            (
                r[0].clone(),
                ListingRow {
                    ty: r[1].clone(),
                    size: r[2].parse().expect("size"),
                    sha256: r[3].clone(),
                    mtime: r[4].parse().ok(),
                    target: r[5].clone(),
                },
            )
        })
        .collect()
}

/// The names `read_dir` gives for `dir` of `fs`, in its order (panics on
/// an error: for tests of volumes that must list).
pub fn dir_names<C: FromIterator<String>>(fs: &dyn diskimage::fs::FileSystem, dir: &str) -> C {
    fs.read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        .map(|e| e.name)
        .collect()
}

/// A topic's fixtures gunzipped into a temporary folder; dropping it
/// checks that reading them changed none of their bytes.
pub struct Unpacked {
    dir: tempfile::TempDir,
    before: std::collections::BTreeMap<PathBuf, String>,
}

impl Unpacked {
    /// Every `*.gz` of `topic`, unpacked.
    pub fn new(topic: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = gunzip_dir(topic, dir.path());
        let before = files.iter().map(|f| (f.clone(), sha256_file(f))).collect();
        Unpacked { dir, before }
    }

    /// The folder they are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The unpacked file `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Unpacked::path`] as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        for (f, sha) in &self.before {
            assert_eq!(&sha256_file(f), sha, "{} changed while read", f.display());
        }
    }
}

/// Everything read through a stream (test helper: the error is kept).
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

/// A file system's tree through its path methods (`read_dir`, `metadata`,
/// `open`, `read_link`), each entry made a row by `row` from its metadata,
/// its data's sha256 (files; else `-`) and its link target (symlinks;
/// else `-`). An entry whose `read_dir` type disagrees with its metadata
/// is an error.
pub fn walk_rows<R>(
    fs: &dyn diskimage::fs::FileSystem,
    row: impl Fn(&diskimage::fs::Metadata, String, String) -> R,
) -> Result<std::collections::BTreeMap<String, R>, String> {
    use diskimage::fs::FileType;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        for e in fs.read_dir(&d).map_err(|e| format!("read_dir {d}: {e}"))? {
            let p = format!("{}/{}", d.trim_end_matches('/'), e.name);
            let m = fs.metadata(&p).map_err(|e| format!("metadata {p}: {e}"))?;
            if m.file_type != e.file_type {
                return Err(format!(
                    "{p}: read_dir type {:?}, metadata {:?}",
                    e.file_type, m.file_type
                ));
            }
            let mut sha = "-".to_string();
            let mut target = "-".to_string();
            match m.file_type {
                FileType::Directory => stack.push(p.clone()),
                FileType::File => {
                    let r = fs.open(&p).map_err(|e| format!("open {p}: {e}"))?;
                    sha = sha256_bytes(&read_all(r).map_err(|e| format!("read {p}: {e}"))?);
                }
                FileType::Symlink => {
                    target = fs
                        .read_link(&p)
                        .map_err(|e| format!("read_link {p}: {e}"))?
                }
                FileType::Special => {}
            }
            let r = row(&m, sha, target);
            out.insert(p, r);
        }
    }
    Ok(out)
}

/// A file system's tree through [`visit_dir`](diskimage::fs::FileSystem::visit_dir),
/// each entry read from the visited entry itself and made a row by `row`
/// as in [`walk_rows`].
pub fn visit_rows<R>(
    fs: &dyn diskimage::fs::FileSystem,
    row: impl Fn(&diskimage::fs::Metadata, String, String) -> R,
) -> Result<std::collections::BTreeMap<String, R>, String> {
    use diskimage::fs::FileType;
    use std::ops::ControlFlow;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        let mut err = None;
        fs.visit_dir(&d, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, e)) => {
                    err = Some(format!("{d}/{name}: {e}"));
                    return ControlFlow::Break(());
                }
            };
            let p = format!("{}/{}", d.trim_end_matches('/'), v.name());
            let r = (|| -> Result<R, String> {
                let m = v.metadata().map_err(|e| e.to_string())?;
                let (mut sha, mut target) = ("-".to_string(), "-".to_string());
                match m.file_type {
                    FileType::Directory => stack.push(p.clone()),
                    FileType::File => {
                        let r = v.open("").map_err(|e| e.to_string())?;
                        sha = sha256_bytes(&read_all(r).map_err(|e| e.to_string())?);
                    }
                    FileType::Symlink => target = v.read_link().map_err(|e| e.to_string())?,
                    FileType::Special => {}
                }
                Ok(row(&m, sha, target))
            })();
            match r {
                Ok(row) => {
                    out.insert(p, row);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    err = Some(format!("{p}: {e}"));
                    ControlFlow::Break(())
                }
            }
        })
        .map_err(|e| format!("visit_dir {d}: {e}"))?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(out)
}

/// Runs an outside tool and returns its standard output; panics with its
/// standard error when it fails.
pub fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
