//! Opening what is parsed from fixed-layout headers: a dynamic and a fixed
//! VHD (footer, dynamic header, BAT), an MBR disk with an extended
//! partition of eight logical drives (MBR and every EBR) and an exFAT
//! volume (main and backup boot regions with their checksums). The images
//! are made in the setup by `qemu-img`, `sfdisk` and `mkfs.exfat`; a group
//! whose tool is missing is skipped with a message.
//!
//! `cargo bench --bench headers` (criterion options after `--`).

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use diskimage::fs::open_fs;
use diskimage::volume::read_table;
use diskimage::{open, BlockDevice, OpenOptions};

/// Runs `cmd`, feeding `input` on standard input; false when it fails or is missing.
fn run(cmd: &mut Command, input: &str) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

fn sparse_file(path: &Path, bytes: u64) {
    File::create(path)
        .and_then(|f| f.set_len(bytes))
        .expect("create image");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("headers");

    for (name, subformat) in [("vhd-open-dynamic", "dynamic"), ("vhd-open-fixed", "fixed")] {
        let vhd = dir.path().join(format!("{subformat}.vhd"));
        let made = run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "vpc", "-o"])
                .arg(format!("subformat={subformat},force_size=on"))
                .arg(&vhd)
                .arg("64M"),
            "",
        );
        if !made {
            eprintln!("{name} skipped: qemu-img could not make the VHD");
            continue;
        }
        g.bench_function(name, |b| {
            b.iter(|| black_box(open(&vhd, &OpenOptions::default()).expect("open vhd")))
        });
    }

    let mbr = dir.path().join("mbr.img");
    sparse_file(&mbr, 64 << 20);
    let layout = "label: dos\n,8M,83\n,,5\n".to_owned() + &",4M,83\n".repeat(8);
    if run(Command::new("sfdisk").arg("-q").arg(&mbr), &layout) {
        let device: Arc<dyn BlockDevice> = open(&mbr, &OpenOptions::default())
            .expect("open mbr")
            .device();
        let table = read_table(device.as_ref()).expect("read the table");
        assert_eq!(
            table.partitions.len(),
            10,
            "primary, extended and 8 logical"
        );
        g.bench_function("mbr-read_table", |b| {
            b.iter(|| black_box(read_table(device.as_ref()).expect("read the table")))
        });
    } else {
        eprintln!("mbr-read_table skipped: sfdisk could not partition the image");
    }

    let exfat = dir.path().join("exfat.img");
    sparse_file(&exfat, 64 << 20);
    if run(Command::new("mkfs.exfat").arg(&exfat), "") {
        let device: Arc<dyn BlockDevice> = open(&exfat, &OpenOptions::default())
            .expect("open exfat")
            .device();
        g.bench_function("exfat-open_fs", |b| {
            b.iter(|| black_box(open_fs(Arc::clone(&device)).expect("open_fs")))
        });
    } else {
        eprintln!("exfat-open_fs skipped: mkfs.exfat could not format the image");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
