//! The VHD and VHDX writers against outside readers.
//!
//! Every image created, made a child, or written here is read back by
//! `qemu-img` (`info` for the exact virtual size, `check`, `compare`
//! against the expected bytes as a raw file), by libvhdi (`pyvhdi`, through
//! `scripts/libyal_sha256.py`, parents set) and by our own reader, each to
//! the expected content; the expected content is built in memory from the
//! writes, independently of the writer. Without qemu-img or pyvhdi the
//! test says so and skips that reader, unless
//! `DISKIMAGE_REQUIRE_DIFF_TOOLS=1` (set by `.ci/run`).
//!
//! Crash consistency: `examples/write_loop.rs` writes into an image and is
//! killed (SIGKILL) at several points; the image must open in every
//! reader, every write before the last completed flush must read back,
//! and `qemu-img check` must find no corruption (leaks are accepted).

use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::formats::{
    create, open_writable, BlockDevice, CreateOptions, ErrorKind, Format, OpenOptions, Subformat,
};

use crate::common::{repo, sha256_bytes, sha256_device};

const MIB: u64 = 1 << 20;

/// Whether the outside readers must be there.
fn required() -> bool {
    std::env::var_os("DISKIMAGE_REQUIRE_DIFF_TOOLS").is_some_and(|v| v == "1")
}

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Which outside readers are installed (a missing one fails under
/// `DISKIMAGE_REQUIRE_DIFF_TOOLS=1`).
pub(crate) struct Tools {
    pub(crate) qemu: bool,
    pub(crate) vhdi: bool,
}

pub(crate) fn tools() -> Tools {
    let qemu = have("qemu-img", &["--version"]);
    let vhdi = have("python3", &["-c", "import pyvhdi"]);
    if required() {
        assert!(qemu, "qemu-img missing");
        assert!(vhdi, "pyvhdi missing (pip install libvhdi-python)");
    }
    if !qemu {
        eprintln!("write_vhd: qemu-img not installed, its checks skipped");
    }
    if !vhdi {
        eprintln!("write_vhd: pyvhdi not installed, libvhdi checks skipped");
    }
    Tools { qemu, vhdi }
}

/// qemu's driver name for a format.
fn qemu_driver(format: Format) -> &'static str {
    match format {
        Format::Vhd => "vpc",
        _ => "vhdx",
    }
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `qemu-img check`: no corruption (leaked clusters accepted; qemu's `vpc`
/// driver has no check and says so, exit 63).
fn qemu_check(img: &Path, format: Format) {
    let (code, out) = run(Command::new("qemu-img").args([
        "check",
        "-f",
        qemu_driver(format),
        img.to_str().unwrap(),
    ]));
    assert!(
        code == 0 || code == 3 || (code == 63 && out.contains("does not support checks")),
        "qemu-img check {}: exit {code}\n{out}",
        img.display()
    );
    assert!(
        !out.contains("corrupt"),
        "qemu-img check {}: {out}",
        img.display()
    );
}

/// Every reader sees `expected` in `img` (child first, then its parents).
pub(crate) fn check_readers(
    t: &Tools,
    format: Format,
    chain: &[&Path],
    expected: &[u8],
    qemu_reads: bool,
) {
    let img = chain[0];
    let want = sha256_bytes(expected);
    let ours = diskimage::formats::open(img, &OpenOptions::default().strict(true))
        .unwrap_or_else(|e| panic!("our reader: {e}"));
    assert_eq!(ours.size(), expected.len() as u64, "our size");
    assert_eq!(
        sha256_device(&ours, ours.size()).unwrap(),
        want,
        "our reader: {}",
        img.display()
    );
    if t.qemu && qemu_reads {
        let drv = qemu_driver(format);
        let (code, out) = run(Command::new("qemu-img").args([
            "info",
            "--output=json",
            "-f",
            drv,
            img.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "qemu-img info: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            v["virtual-size"].as_u64(),
            Some(expected.len() as u64),
            "qemu-img's virtual size of {}",
            img.display()
        );
        qemu_check(img, format);
        let raw = img.with_extension("expected.raw");
        std::fs::write(&raw, expected).unwrap();
        let (code, out) = run(Command::new("qemu-img").args([
            "compare",
            "-f",
            drv,
            "-F",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "qemu-img compare {}: {out}", img.display());
        std::fs::remove_file(&raw).unwrap();
    }
    if t.vhdi {
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("scripts/libyal_sha256.py")).arg("vhdi");
        cmd.args(chain);
        let (code, out) = run(&mut cmd);
        assert_eq!(code, 0, "libvhdi: {out}");
        assert_eq!(
            out.trim(),
            format!("{} {want}", expected.len()),
            "libvhdi reads {}",
            img.display()
        );
    }
}

/// SplitMix64 (the same as `examples/write_loop.rs`).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `examples/write_loop.rs`'s write `i`, drawn independently here.
fn write_of(seed: u64, i: u64, slot: u64) -> (u64, Vec<u8>) {
    let mut s = seed ^ i.wrapping_mul(0x1000_0000_01b3);
    let skew = splitmix(&mut s) % (slot / 4);
    let len = 1 + splitmix(&mut s) % (slot - skew);
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        data.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    data.truncate(len as usize);
    (i * slot + skew, data)
}

/// Writes a mix of ranges (unaligned, across blocks, the last byte, an
/// overwrite) into `img` and into `expected`.
pub(crate) fn write_mix(img: &Path, expected: &mut [u8], block: u64, seed: u64) {
    let dev = open_writable(img, &OpenOptions::default()).expect("open_writable");
    let size = expected.len() as u64;
    let mut s = seed;
    let mut ranges = vec![
        (0, 512),
        (block - 100, 300),
        (3 * block + 7, 5000),
        (size - 1, 1),
        (size - 4097, 4097),
        (block / 2, block + 513),
        (1000, 10),
    ];
    for _ in 0..20 {
        let off = splitmix(&mut s) % size;
        let len = 1 + splitmix(&mut s) % (size - off).min(3 * MIB);
        ranges.push((off, len));
    }
    for (off, len) in ranges {
        let data: Vec<u8> = (0..len).map(|_| splitmix(&mut s) as u8).collect();
        dev.write_at(&data, off).expect("write_at");
        expected[off as usize..(off + len) as usize].copy_from_slice(&data);
        let mut back = vec![0; len as usize];
        dev.read_at(&mut back, off).expect("read back");
        assert!(back == data, "read back at {off}+{len}");
    }
    // Past the end: refused, nothing written.
    let e = dev.write_at(&[1, 2], size - 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    dev.flush().expect("flush");
}

pub(crate) fn opts(format: Format, size: u64) -> CreateOptions {
    CreateOptions::new(format, size)
}

/// Created fixed and dynamic disks (default and small blocks, a size that
/// is no CHS geometry's), then written, read as expected everywhere.
fn create_and_write(format: Format, block: u64, sizes: &[u64]) {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    for (n, &size) in sizes.iter().enumerate() {
        for (sub, bs) in [
            (Subformat::Dynamic, None),
            (Subformat::Dynamic, Some(block)),
            (Subformat::Fixed, None),
        ] {
            let img = dir
                .path()
                .join(format!("d{n}-{sub}-{}.img", bs.unwrap_or(0)));
            create(
                &img,
                &opts(format, size).subformat(Some(sub)).block_size(bs),
            )
            .unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
            let mut expected = vec![0u8; size as usize];
            check_readers(&t, format, &[&img], &expected, true);
            write_mix(&img, &mut expected, bs.unwrap_or(block), n as u64 + 7);
            check_readers(&t, format, &[&img], &expected, true);
            // Opened again: the writes are there, and a second round of
            // writes lands on allocated blocks and new ones.
            write_mix(&img, &mut expected, bs.unwrap_or(block), n as u64 + 99);
            check_readers(&t, format, &[&img], &expected, true);
        }
    }
}

/// A child of a written parent reads as the parent, then as the parent
/// with the child's writes; the parent is never written. (qemu reads
/// neither VHD nor VHDX differencing disks: "Operation not supported".)
fn child_of(format: Format, block: u64) {
    let t = tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 9 * MIB + 3 * 512;
    let parent = dir.join("base.img");
    create(&parent, &opts(format, size).block_size(Some(block))).unwrap();
    let mut expected = vec![0u8; size as usize];
    write_mix(&parent, &mut expected, block, 3);
    let parent_sha = crate::common::sha256_file(&parent);
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    for child in [dir.join("child.img"), sub.join("child.img")] {
        let mut expected = expected.clone();
        create(
            &child,
            &opts(format, 0)
                .parent(Some(parent.clone()))
                .block_size(Some(block)),
        )
        .unwrap_or_else(|e| panic!("create child: {e}"));
        check_readers(&t, format, &[&child, &parent], &expected, false);
        write_mix(&child, &mut expected, block, 5);
        check_readers(&t, format, &[&child, &parent], &expected, false);
        assert_eq!(
            crate::common::sha256_file(&parent),
            parent_sha,
            "parent written"
        );
        let e = create(&child, &opts(format, 0).parent(Some(parent.clone()))).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }
}

/// Bad requests: each a clear error naming the file, nothing left behind.
fn refusals(format: Format) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    for o in [
        opts(format, 1000),
        opts(format, 0),
        opts(format, MIB).sector_size(1024),
        opts(format, MIB).subformat(Some(Subformat::StreamOptimized)),
        opts(format, MIB).block_size(Some(3 * MIB)),
    ] {
        let e = create(&img, &o).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_eq!(e.path(), Some(img.as_path()), "{e}");
        assert!(!img.exists());
    }
    std::fs::write(&img, b"keep").unwrap();
    let e = create(&img, &opts(format, MIB)).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&img).unwrap(), b"keep");
    create(&img, &opts(format, MIB).force(true)).unwrap();
    assert_eq!(
        diskimage::formats::open(&img, &OpenOptions::default())
            .unwrap()
            .size(),
        MIB
    );
}

/// Kills `write_loop` at several points; every flushed write reads back
/// and every reader opens the image.
fn crash(format: Format, subformat: Subformat, with_parent: bool) {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let slot = 96 * 1024;
    let count = 200u64;
    let size = count * slot + MIB;
    let example = example_binary();
    // Killed once the writer reports `target` flushed writes, `lag_ms`
    // later: before its first flush, between flushes, near the end.
    for (round, (target, lag_ms)) in [(0u64, 30u64), (7, 0), (49, 1), (105, 3), (161, 0)]
        .into_iter()
        .enumerate()
    {
        let img = dir.path().join(format!("crash{round}.img"));
        let mut chain: Vec<PathBuf> = vec![img.clone()];
        let mut base = vec![0u8; size as usize];
        if with_parent {
            let parent = dir.path().join(format!("crash{round}-base.img"));
            create(&parent, &opts(format, size)).unwrap();
            write_mix(&parent, &mut base, 2 * MIB, round as u64);
            create(&img, &opts(format, 0).parent(Some(parent.clone()))).unwrap();
            chain.push(parent);
        } else {
            create(&img, &opts(format, size).subformat(Some(subformat))).unwrap();
        }
        let seed = 1000 + round as u64;
        let mut child = Command::new(&example)
            .args([
                img.to_str().unwrap(),
                &seed.to_string(),
                &count.to_string(),
                "7",
                &slot.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn write_loop");
        let mut flushed = 0u64;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stdout.take().expect("stdout"),
        ));
        if target > 0 {
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("flushed ").and_then(|n| n.parse().ok()) {
                    flushed = n;
                }
                if flushed >= target {
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(lag_ms));
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("flushed ").and_then(|n| n.parse().ok()) {
                flushed = n;
            }
        }
        let _ = child.wait();
        eprintln!("write_vhd: crash round {round}: killed after {flushed} flushed writes");
        let dev = diskimage::formats::open(&img, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("open after kill: {e}"));
        let mut expected = base.clone();
        for i in 0..flushed {
            let (off, data) = write_of(seed, i, slot);
            let mut back = vec![0u8; data.len()];
            dev.read_at(&mut back, off).unwrap();
            assert!(back == data, "flushed write {i} lost (round {round})");
            expected[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        if t.qemu && !with_parent {
            if format == Format::Vhdx {
                // qemu opens a VHDX whose log needs replay only to replay
                // it (`check -r all`): on a copy, then checked again.
                let copy = img.with_extension("replayed");
                std::fs::copy(&img, &copy).unwrap();
                let (code, out) = run(Command::new("qemu-img").args([
                    "check",
                    "-r",
                    "all",
                    "-f",
                    "vhdx",
                    copy.to_str().unwrap(),
                ]));
                assert!(code == 0 || code == 3, "qemu-img check -r all: {out}");
                qemu_check(&copy, format);
                let mut expected_copy = vec![0u8; size as usize];
                for i in 0..flushed {
                    let (off, data) = write_of(seed, i, slot);
                    expected_copy[off as usize..off as usize + data.len()].copy_from_slice(&data);
                }
                // Writes after the last flush may or may not be there:
                // compare only up to the first slot not flushed.
                let n = (flushed * slot) as usize;
                let raw = copy.with_extension("raw");
                let (code, out) = run(Command::new("qemu-img").args([
                    "convert",
                    "-f",
                    "vhdx",
                    "-O",
                    "raw",
                    copy.to_str().unwrap(),
                    raw.to_str().unwrap(),
                ]));
                assert_eq!(code, 0, "qemu-img convert: {out}");
                let got = std::fs::read(&raw).unwrap();
                assert!(
                    got[..n] == expected_copy[..n],
                    "qemu reads the flushed writes"
                );
                std::fs::remove_file(&raw).unwrap();
                std::fs::remove_file(&copy).unwrap();
            } else {
                qemu_check(&img, format);
            }
        }
        if flushed == count {
            let refs: Vec<&Path> = chain.iter().map(PathBuf::as_path).collect();
            check_readers(&t, format, &refs, &expected, !with_parent);
        } else if t.vhdi {
            let mut cmd = Command::new("python3");
            cmd.arg(repo().join("scripts/libyal_sha256.py")).arg("vhdi");
            cmd.args(&chain);
            let (code, out) = run(&mut cmd);
            assert_eq!(code, 0, "libvhdi after kill: {out}");
        }
    }
}

/// The `write_loop` example, built once.
fn example_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(repo())
                .args(["build", "--quiet", "--example", "write_loop"])
                .status()
                .expect("cargo build --example write_loop");
            assert!(status.success());
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo().join("target"));
            target.join("debug/examples/write_loop")
        })
        .clone()
}

#[test]
fn vhd_create_and_write() {
    create_and_write(Format::Vhd, 512 * 1024, &[10 * MIB, 5 * MIB + 3 * 512]);
}

#[test]
fn vhd_child() {
    child_of(Format::Vhd, 512 * 1024);
}

#[test]
fn vhd_refusals() {
    refusals(Format::Vhd);
}

#[test]
fn vhd_crash_dynamic() {
    crash(Format::Vhd, Subformat::Dynamic, false);
}

#[test]
fn vhd_crash_differencing() {
    crash(Format::Vhd, Subformat::Dynamic, true);
}

#[test]
fn vhdx_create_and_write() {
    create_and_write(Format::Vhdx, MIB, &[40 * MIB, 5 * MIB + 3 * 512]);
}

#[test]
fn vhdx_child() {
    child_of(Format::Vhdx, MIB);
}

#[test]
fn vhdx_refusals() {
    refusals(Format::Vhdx);
}

#[test]
fn vhdx_crash_dynamic() {
    crash(Format::Vhdx, Subformat::Dynamic, false);
}

#[test]
fn vhdx_crash_differencing() {
    crash(Format::Vhdx, Subformat::Dynamic, true);
}

/// Damaged images are refused for writing with an error naming the file
/// and the offset, and are left as they were.
#[test]
fn damaged_images_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    // A VHD whose BAT entry points past the end of the file.
    let vhd = dir.path().join("bad-bat.vhd");
    create(&vhd, &opts(Format::Vhd, 4 * MIB)).unwrap();
    let mut bytes = std::fs::read(&vhd).unwrap();
    bytes[1536..1540].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    std::fs::write(&vhd, &bytes).unwrap();
    let Err(e) = open_writable(&vhd, &OpenOptions::default()) else {
        panic!("opened for writing")
    };
    assert!(
        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::OutOfBounds),
        "{e}"
    );
    assert_eq!(e.path(), Some(vhd.as_path()), "{e}");
    assert_eq!(e.offset(), Some(1536), "{e}");
    // A VHD whose footer at the end is damaged (the copy at 0 is sound:
    // readers open it, the writer does not write it).
    let vhd = dir.path().join("bad-footer.vhd");
    create(&vhd, &opts(Format::Vhd, 4 * MIB)).unwrap();
    let mut bytes = std::fs::read(&vhd).unwrap();
    let n = bytes.len();
    bytes[n - 512 + 100] ^= 1;
    std::fs::write(&vhd, &bytes).unwrap();
    let Err(e) = open_writable(&vhd, &OpenOptions::default()) else {
        panic!("opened for writing")
    };
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.offset(), Some(n as u64 - 512), "{e}");
    assert_eq!(std::fs::read(&vhd).unwrap(), bytes, "the file is unchanged");
    // A VHDX cut short inside its BAT.
    let vhdx = dir.path().join("short.vhdx");
    create(&vhdx, &opts(Format::Vhdx, 64 * MIB)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&vhdx).unwrap();
    f.set_len(3 * MIB + 4096).unwrap();
    drop(f);
    let Err(e) = open_writable(&vhdx, &OpenOptions::default()) else {
        panic!("opened for writing")
    };
    assert_eq!(e.path(), Some(vhdx.as_path()), "{e}");
    assert_eq!(std::fs::metadata(&vhdx).unwrap().len(), 3 * MIB + 4096);
}

/// The command line from end to end on VHD and VHDX: create a parent,
/// a child, write into the child, convert the child's view to VHDX,
/// commit the child into its parent. qemu-img reads the parent and the
/// converted copy as the same disk with the written bytes in place.
#[test]
fn cli_create_child_write_convert_commit() {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let ok = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskimage"));
        cmd.args(args).stdin(std::process::Stdio::piped());
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        if let Some(data) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (base, child, copy) = (p("base.vhd"), p("child.vhd"), p("copy.vhdx"));
    ok(&["create", &base, "--size", "8M"], None);
    let base_before = std::fs::read(&base).unwrap();
    ok(&["create", &child, "--parent", &base], None);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "the parent was written"
    );
    let blob = b"written through the command line";
    ok(&["write", &child, "--offset", "1048577", "-"], Some(blob));
    ok(&["convert", &child, &copy], None);
    ok(&["commit", &child], None);
    let mut expected = vec![0u8; 8 << 20];
    expected[1_048_577..1_048_577 + blob.len()].copy_from_slice(blob);
    let want = sha256_bytes(&expected);
    for (img, format) in [(&base, Format::Vhd), (&copy, Format::Vhdx)] {
        let dev = diskimage::open(Path::new(img), &diskimage::OpenOptions::new()).unwrap();
        assert_eq!(sha256_device(&dev, dev.size()).unwrap(), want, "{img}");
        if t.qemu {
            qemu_check(Path::new(img), format);
            let raw = dir.path().join("q.raw");
            let (code, out) = run(Command::new("qemu-img").args([
                "convert",
                "-f",
                qemu_driver(format),
                "-O",
                "raw",
                img,
                raw.to_str().unwrap(),
            ]));
            assert_eq!(code, 0, "{out}");
            assert_eq!(
                sha256_bytes(&std::fs::read(&raw).unwrap()),
                want,
                "qemu-img reads {img}"
            );
        }
    }
}
