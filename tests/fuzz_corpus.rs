//! Replays every fuzz seed and crash reproducer (`fuzz/corpus/*/*`,
//! `fuzz/artifacts/*/*` when present) and every bad-input fixture through
//! `open_in_memory`, then reads what opened in odd-sized chunks and walks
//! its map: an error or success, never a panic, a hang or an over-read.

use std::path::{Path, PathBuf};

use diskimage::formats::fuzzing::exercise;

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
fn fs_iso_seeds_walk_without_panic() {
    // The fs_iso target's seeds through the file-system walk it runs, whole
    // and cut short.
    let root = crate::common::repo();
    let seeds = files_under(&root.join("fuzz/corpus/fs_iso"));
    assert!(!seeds.is_empty(), "no fs_iso seeds");
    for p in seeds {
        let data = std::fs::read(&p).expect("read seed");
        diskimage::fs::fuzzing::exercise_fs(&data);
        diskimage::fs::fuzzing::exercise_fs(&data[..data.len() / 2]);
    }
}
