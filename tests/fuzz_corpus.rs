//! Replays every fuzz seed and crash reproducer (`fuzz/corpus/*/*`,
//! `fuzz/artifacts/*/*` when present) and every bad-input fixture through
//! `open_in_memory`, then reads what opened in odd-sized chunks and walks
//! its map: an error or success, never a panic, a hang or an over-read.

use std::path::{Path, PathBuf};

use diskimage::formats::fuzzing::exercise;
use diskimage::formats::fuzzing::write::{vhd_target, vmdk_target};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn fuzz_seeds_and_bad_fixtures_never_panic() {
    let root = crate::common::repo();
    let mut n = 0;
    for dir in ["fuzz/corpus", "fuzz/artifacts"] {
        for p in files_under(&root.join(dir)) {
            let data = std::fs::read(&p).expect("read seed");
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            exercise(&name, &data);
            n += 1;
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for topic in files_under(&root.join("fixtures"))
        .iter()
        .filter(|p| p.ends_with("errors.tsv"))
    {
        let dir = topic.parent().expect("topic");
        for row in crate::common::tsv_rows(topic) {
            let gz = dir.join(format!("{}.gz", row[0]));
            if gz.exists() {
                let out = tmp.path().join(&row[0]);
                crate::common::gunzip(&gz, &out);
                exercise(&row[0], &std::fs::read(&out).expect("read"));
                n += 1;
            }
        }
    }
    assert!(n > 0, "nothing replayed");
    eprintln!("replayed {n} inputs");
}

#[test]
fn regf_seeds_and_reproducers_never_panic() {
    let root = crate::common::repo();
    let mut n = 0;
    for dir in ["fuzz/corpus/regf", "fuzz/artifacts/regf"] {
        for p in files_under(&root.join(dir)) {
            diskimage::fuzzing::exercise_regf(&std::fs::read(&p).expect("read seed"));
            n += 1;
        }
    }
    assert!(n > 0, "no regf seed replayed");
}

#[test]
fn vm_config_seeds_never_panic() {
    let root = crate::common::repo();
    let mut n = 0;
    for target in ["vmx", "vmsd", "vbox"] {
        for dir in ["fuzz/corpus", "fuzz/artifacts"] {
            for p in files_under(&root.join(dir).join(target)) {
                let data = std::fs::read(&p).expect("read seed");
                diskimage::fuzzing::exercise_vm_config(target, &data);
                n += 1;
            }
        }
    }
    assert!(n >= 3, "too few VM configuration seeds replayed: {n}");
}

#[test]
fn vmdk_structured_seeds_are_vmdks_that_qemu_img_reads_as_their_recipe() {
    // The structure-aware target's recipes build files our own code wrote,
    // so the files must first be shown to be VMDKs by another reader: every
    // well-formed seed, converted to raw by qemu-img, is the disk its recipe
    // describes. Then every seed goes through the target's body.
    use diskimage::formats::fuzzing::vmdk_input::{
        check_fuzz_input, expand_fuzz_input, DAMAGED_GD, DESCRIPTOR, STREAM,
    };
    let root = crate::common::repo();
    let seeds = files_under(&root.join("fuzz/corpus/vmdk_structured"));
    let qemu = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let require = std::env::var("DISKIMAGE_REQUIRE_DIFF_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        qemu || !require,
        "qemu-img missing (apt install qemu-utils)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut compared, mut stream) = (0, 0);
    for p in &seeds {
        let recipe = std::fs::read(p).expect("read seed");
        check_fuzz_input(&recipe);
        let made = expand_fuzz_input(&recipe);
        // qemu-img opens a sparse file only with its embedded descriptor,
        // and reads only the primary grain directory: a recipe without the
        // one or damaging the other has no second reader here.
        let flags = recipe.first().copied().unwrap_or(0);
        let qemu_reads = flags & DESCRIPTOR != 0 && flags & DAMAGED_GD == 0;
        let (Some(disk), true, true) = (made.expected, qemu, qemu_reads) else {
            continue;
        };
        let image = tmp.path().join("disk.vmdk");
        let raw = tmp.path().join("disk.raw");
        std::fs::write(&image, &made.file).expect("write");
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&image)
            .arg(&raw)
            .output()
            .expect("qemu-img");
        assert!(
            out.status.success(),
            "{}: qemu-img: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(&raw).expect("read raw");
        assert!(got == disk, "{}: qemu-img reads another disk", p.display());
        compared += 1;
        stream += usize::from(flags & STREAM != 0);
    }
    if qemu {
        assert!(
            compared >= 5 && stream >= 2,
            "{compared} seeds compared ({stream} stream)"
        );
    }
}

/// The writers' seeds and reproducers (`vmdk_write`, `write_vhd`) through
/// the targets' own open, write and read-back: no panic, and every write
/// that completes reads back.
#[test]
fn writer_seeds_read_back_what_was_written() {
    let root = crate::common::repo();
    let mut n = 0;
    for (target, run) in [
        ("vmdk_write", vmdk_target as fn(&[u8]) -> Option<String>),
        ("write_vhd", vhd_target),
    ] {
        for dir in ["fuzz/corpus", "fuzz/artifacts"] {
            for p in files_under(&root.join(dir).join(target)) {
                let data = std::fs::read(&p).expect("read seed");
                assert_eq!(run(&data), None, "{}", p.display());
                n += 1;
            }
        }
    }
    assert!(n >= 8, "only {n} writer seeds replayed");
}
