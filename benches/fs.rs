//! File-system throughput: list a 10,000-file tree (read_dir + metadata of
//! every entry by path: `list`; `visit_dir` as `extract` walks:
//! `visit_list`) and read every file's bytes (`read_all`, `visit_read_all`),
//! on ext4, FAT32 and NTFS
//! images made by the real tools (benches/make-fs-images.sh, run here if
//! the images are missing; they live in target/fs-bench/, not committed).
//!
//! `cargo bench --bench fs` (criterion options after `--`).

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diskimage::fs::{open_fs, FileSystem, FileType};
use diskimage::{open, BlockDevice, OpenOptions};

fn images() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/fs-bench");
    if !["ext4.img", "fat32.img", "ntfs.img"]
        .iter()
        .all(|i| dir.join(i).is_file())
    {
        let ok = std::process::Command::new("bash")
            .arg(root.join("benches/make-fs-images.sh"))
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "benches/make-fs-images.sh failed (needs e2fsprogs, dosfstools, mtools, ntfs-3g)"
        );
    }
    dir
}

/// Walks the tree: (entries, files, bytes read when `read` is set).
fn walk(fs: &dyn FileSystem, dir: &str, read: bool, buf: &mut [u8]) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    for e in fs.read_dir(dir).expect("read_dir") {
        let path = diskimage::fs::file_system::join(dir, &e.name);
        let m = fs.metadata(&path).expect("metadata");
        totals.0 += 1;
        match m.file_type {
            FileType::Directory => {
                let sub = walk(fs, &path, read, buf);
                totals = (totals.0 + sub.0, totals.1 + sub.1, totals.2 + sub.2);
            }
            FileType::File => {
                totals.1 += 1;
                if read {
                    let mut f = fs.open(&path).expect("open");
                    loop {
                        let n = f.read(buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        totals.2 += n as u64;
                    }
                }
            }
            _ => {}
        }
    }
    totals
}

/// The same walk through `visit_dir` (what `extract` does): each
/// directory read once, entries opened from their directory entries.
fn visit(fs: &dyn FileSystem, dir: &str, read: bool, buf: &mut [u8]) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    let mut subdirs = Vec::new();
    fs.visit_dir(dir, &mut |v| {
        let v = v.expect("entry");
        let m = v.metadata().expect("metadata");
        totals.0 += 1;
        match m.file_type {
            FileType::Directory => {
                subdirs.push(diskimage::fs::file_system::join(dir, v.name()));
            }
            FileType::File => {
                totals.1 += 1;
                if read {
                    let mut f = v.open("").expect("open");
                    loop {
                        let n = f.read(buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        totals.2 += n as u64;
                    }
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    })
    .expect("visit_dir");
    for sub in subdirs {
        let t = visit(fs, &sub, read, buf);
        totals = (totals.0 + t.0, totals.1 + t.1, totals.2 + t.2);
    }
    totals
}

fn bench(c: &mut Criterion) {
    let dir = images();
    let mut buf = vec![0u8; 1 << 20];
    for name in ["ext4", "fat32", "ntfs"] {
        let img = open(&dir.join(format!("{name}.img")), &OpenOptions::default()).expect("open");
        let device: Arc<dyn BlockDevice> = img.device();
        let fs = open_fs(Arc::clone(&device)).expect("open_fs");
        let (entries, files, bytes) = walk(fs.as_ref(), "/", true, &mut buf);
        assert!(files >= 10_000, "{name}: {files} files");
        assert_eq!(
            visit(fs.as_ref(), "/", true, &mut buf),
            (entries, files, bytes),
            "{name}: visit_dir and the path walk disagree"
        );
        let mut g = c.benchmark_group(format!("fs/{name}"));
        g.sample_size(10);
        // The path methods and visit_dir, listing only and reading every byte.
        type Walker = fn(&dyn FileSystem, &str, bool, &mut [u8]) -> (u64, u64, u64);
        for (id, f, read) in [
            ("list", walk as Walker, false),
            ("read_all", walk, true),
            ("visit_list", visit, false),
            ("visit_read_all", visit, true),
        ] {
            g.throughput(if read {
                Throughput::Bytes(bytes)
            } else {
                Throughput::Elements(entries)
            });
            g.bench_function(id, |b| {
                b.iter(|| {
                    let fs = open_fs(Arc::clone(&device)).expect("open_fs");
                    f(fs.as_ref(), "/", read, &mut buf)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
