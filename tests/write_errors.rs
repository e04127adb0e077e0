//! The write side's bad input against the kernel and outside readers: a
//! real full file system (ENOSPC) and a read-only one (a small ext4 image
//! loop-mounted; root only, skipped with a reason elsewhere), a parent
//! that changed under its child (VHD parent time stamp, VHDX
//! `parent_linkage`) and the relink a commit makes instead, a child that
//! would replace a file of its own chain, an existing destination without
//! `--force`, and writes into extents that are read only (COWD, seSparse).
//! Each is a clear error naming the file, with the source unchanged and
//! nothing left that looks finished.

use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::formats::write::{self, CreateOptions};
use diskimage::{BlockDevice, ErrorKind, Format, OpenOptions};

use crate::common::{repo, sha256_file};
use crate::write::{fails, ok, s, Rng};

/// A small ext4 file system loop-mounted at `dir`, unmounted on drop.
struct Mounted {
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Makes a `mib` MiB ext4 image at `image` holding the files of
/// `populate` (if any) and mounts it at `dir` (`ro` read-only). `None`,
/// with the reason printed, where loop mounts are not allowed.
fn mount_ext4(
    image: &Path,
    mib: u64,
    populate: Option<&Path>,
    dir: &Path,
    ro: bool,
) -> Option<Mounted> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("write_errors: not root, the loop-mounted file system checks are skipped");
        return None;
    }
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-m", "0", "-b", "1024"]);
    if let Some(p) = populate {
        mkfs.arg("-d").arg(p);
    }
    mkfs.arg(image).arg(format!("{mib}M"));
    match mkfs.output() {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("write_errors: mkfs.ext4 not usable ({other:?}), checks skipped");
            return None;
        }
    }
    std::fs::create_dir_all(dir).expect("mount point");
    let opts = if ro { "loop,ro" } else { "loop" };
    let out = Command::new("mount")
        .args(["-o", opts])
        .arg(image)
        .arg(dir)
        .output()
        .expect("mount");
    if !out.status.success() {
        eprintln!(
            "write_errors: loop mount not permitted here ({}), checks skipped",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(Mounted {
        dir: dir.to_path_buf(),
    })
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Converts and creates onto a 4 MiB file system that fills up: each a
/// "No space left on device" error naming the destination, nothing left
/// on the file system, the source unchanged; a write into an image on a
/// full file system fails the same way and leaves an image every reader
/// opens (qemu-img check finds no corruption).
#[test]
fn a_full_file_system_fails_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    let Some(_m) = mount_ext4(&tmp.path().join("fs.img"), 4, None, &mnt, false) else {
        return;
    };
    let before = names_in(&mnt);
    let src = tmp.path().join("src.img");
    std::fs::write(&src, Rng(9).bytes(8 << 20)).expect("src");
    let sum = sha256_file(&src);
    for (name, extra) in [
        ("d.vmdk", vec![]),
        ("d-stream.vmdk", vec!["--subformat", "streamOptimized"]),
        ("d-split.vmdk", vec!["--subformat", "twoGbMaxExtentSparse"]),
        ("d.vhd", vec![]),
        ("d.vhdx", vec![]),
        ("d.img", vec![]),
    ] {
        let dst = mnt.join(name);
        let mut args = vec!["convert".to_owned(), s(&src), s(&dst)];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(
            err.contains("No space left on device") && err.contains(name),
            "{name}: {err}"
        );
        assert!(!dst.exists(), "{name} left behind");
        assert_eq!(names_in(&mnt), before, "{name}: staging left behind");
        assert_eq!(sha256_file(&src), sum);
    }
    // A fixed raw image allocates every byte at creation.
    let err = fails(&[
        "create",
        &s(&mnt.join("fixed.img")),
        "--size",
        "8M",
        "--subformat",
        "fixed",
    ]);
    assert!(
        err.contains("No space left on device") && err.contains("fixed.img"),
        "{err}"
    );
    assert_eq!(names_in(&mnt), before);

    // A write into an image on a file system filled by another file.
    let img = mnt.join("w.vmdk");
    ok(&["create", &s(&img), "--size", "64M"]);
    let fill = mnt.join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", s(&fill)))
        .status();
    let data = tmp.path().join("data.bin");
    std::fs::write(&data, Rng(3).bytes(1 << 20)).expect("data");
    let err = fails(&["write", &s(&img), "--offset", "4096", &s(&data)]);
    assert!(
        err.contains("No space left on device") && err.contains("w.vmdk"),
        "{err}"
    );
    let opened = diskimage::open(&img, &OpenOptions::new()).expect("opens after ENOSPC");
    assert_eq!(opened.size(), 64 << 20);
    if crate::write::qemu() {
        crate::write::qemu_check(&img);
    }
}

/// An output on a read-only file system (a loop mount `-o ro`; root
/// ignores permission bits, a read-only mount does not): create, convert
/// and write each fail naming the file, and the images there are
/// unchanged; a child of a parent there is made elsewhere (the parent is
/// only read).
#[test]
fn a_read_only_file_system_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let content = tmp.path().join("content");
    std::fs::create_dir(&content).expect("content");
    let base = content.join("base.vmdk");
    ok(&["create", &s(&base), "--size", "1M"]);
    let base_vhdx = content.join("base.vhdx");
    ok(&["create", &s(&base_vhdx), "--size", "4M"]);
    let mnt = tmp.path().join("mnt");
    let Some(_m) = mount_ext4(&tmp.path().join("fs.img"), 8, Some(&content), &mnt, true) else {
        return;
    };
    let before = names_in(&mnt);
    let sums: Vec<String> = ["base.vmdk", "base.vhdx"]
        .iter()
        .map(|n| sha256_file(&mnt.join(n)))
        .collect();
    let err = fails(&["create", &s(&mnt.join("new.vhd")), "--size", "1M"]);
    assert!(
        err.contains("Read-only file system") && err.contains("new.vhd"),
        "{err}"
    );
    let src = tmp.path().join("src.img");
    std::fs::write(&src, Rng(4).bytes(1 << 20)).expect("src");
    let err = fails(&["convert", &s(&src), &s(&mnt.join("c.vmdk"))]);
    assert!(
        err.contains("Read-only file system") && err.contains("c.vmdk"),
        "{err}"
    );
    let data = tmp.path().join("data.bin");
    std::fs::write(&data, b"data").expect("data");
    for n in ["base.vmdk", "base.vhdx"] {
        let err = fails(&["write", &s(&mnt.join(n)), "--offset", "0", &s(&data)]);
        assert!(
            err.contains("Read-only file system") && err.contains(n),
            "{n}: {err}"
        );
    }
    assert_eq!(names_in(&mnt), before);
    let after: Vec<String> = ["base.vmdk", "base.vhdx"]
        .iter()
        .map(|n| sha256_file(&mnt.join(n)))
        .collect();
    assert_eq!(after, sums);
    // The parent is only read: a child of it is made on a writable folder.
    for (p, c) in [("base.vmdk", "child.vmdk"), ("base.vhdx", "child.vhdx")] {
        let child = tmp.path().join(c);
        ok(&["create", &s(&child), "--parent", &s(&mnt.join(p))]);
        ok(&["write", &s(&child), "--offset", "512", &s(&data)]);
        let img = diskimage::open(&child, &OpenOptions::new().strict(true)).expect("child");
        let mut b = [0u8; 4];
        img.device().read_at(&mut b, 512).expect("read");
        assert_eq!(&b, b"data");
    }
}

/// A VHD or VHDX parent written after a child was made: opening the child
/// for writing says the parent changed, names the child, and leaves it
/// unchanged. (The VMDK parentCID check is in `write`.)
#[test]
fn a_changed_vhd_or_vhdx_parent_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut chains = Vec::new();
    for (format, ext) in [(Format::Vhd, "vhd"), (Format::Vhdx, "vhdx")] {
        let base = tmp.path().join(format!("base.{ext}"));
        let child = tmp.path().join(format!("child.{ext}"));
        write::create(&base, &CreateOptions::new(format, 4 << 20)).expect("base");
        write::create(
            &child,
            &CreateOptions::new(format, 0).parent(Some(base.clone())),
        )
        .expect("child");
        chains.push((base, child));
    }
    // The VHD parent time stamp has a one-second resolution (and file
    // systems with a two-second one are allowed for): the parent is
    // written later than that.
    std::thread::sleep(std::time::Duration::from_secs(3));
    for (base, child) in &chains {
        let dev = write::open_writable(base, &OpenOptions::new()).expect("parent");
        dev.write_at(b"changed", 0).expect("write parent");
        dev.flush().expect("flush");
        drop(dev);
        let before = sha256_file(child);
        let Err(e) = write::open_writable(child, &OpenOptions::new()) else {
            panic!(
                "{}: a child of a changed parent opened for writing",
                child.display()
            );
        };
        assert_eq!(e.path(), Some(child.as_path()), "{e}");
        assert!(e.to_string().contains("parent changed"), "{e}");
        let data = tmp.path().join("x.bin");
        std::fs::write(&data, b"x").expect("data");
        let err = fails(&["write", &s(child), "--offset", "0", &s(&data)]);
        assert!(
            err.contains("parent changed") && err.contains(&s(child)),
            "{err}"
        );
        assert_eq!(sha256_file(child), before);
    }
}

/// A commit writes the parent and relinks the child to it (VHD parent
/// time stamp, VHDX parent_linkage): the child then opens strictly (no
/// mismatch tolerated), reads as the parent in our reader and libvhdi,
/// and takes writes again.
#[test]
fn a_committed_vhd_or_vhdx_child_is_relinked() {
    let t = crate::write_vhd::tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (format, ext) in [(Format::Vhd, "vhd"), (Format::Vhdx, "vhdx")] {
        let size = 6 << 20;
        let base = tmp.path().join(format!("base.{ext}"));
        let child = tmp.path().join(format!("child.{ext}"));
        write::create(
            &base,
            &CreateOptions::new(format, size).block_size(Some(1 << 20)),
        )
        .expect("base");
        let mut expected = vec![0u8; size as usize];
        crate::write_vhd::write_mix(&base, &mut expected, 1 << 20, 11);
        std::thread::sleep(std::time::Duration::from_secs(3));
        write::create(
            &child,
            &CreateOptions::new(format, 0)
                .parent(Some(base.clone()))
                .block_size(Some(1 << 20)),
        )
        .expect("child");
        crate::write_vhd::write_mix(&child, &mut expected, 1 << 20, 12);
        std::thread::sleep(std::time::Duration::from_secs(3));
        ok(&["commit", &s(&child)]);
        crate::write_vhd::check_readers(&t, format, &[&base], &expected, format == Format::Vhdx);
        crate::write_vhd::check_readers(&t, format, &[&child, &base], &expected, false);
        crate::write_vhd::write_mix(&child, &mut expected, 1 << 20, 13);
        crate::write_vhd::check_readers(&t, format, &[&child, &base], &expected, false);
    }
}

/// A VHD child relinked to its grandparent after its parent was merged
/// into it (`write::relink`, as a VirtualBox snapshot delete does): the
/// header names the grandparent (unique ID, time stamp, name, locators),
/// the old parent is not needed any more, the chain opens strictly in our
/// reader and reads the same in libvhdi, and the child takes writes. A
/// dynamic disk, a parent of another size and a damaged header are
/// refused with the file and offset, nothing written.
#[test]
fn a_vhd_child_is_relinked_to_another_parent() {
    let t = crate::write_vhd::tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let size = 6 << 20;
    let block = 1 << 20;
    let base = tmp.path().join("base.vhd");
    let mid = tmp.path().join("mid.vhd");
    let child = tmp.path().join("sub").join("child.vhd");
    std::fs::create_dir(tmp.path().join("sub")).expect("mkdir");
    let opts = |parent: Option<&Path>| {
        CreateOptions::new(Format::Vhd, if parent.is_some() { 0 } else { size })
            .parent(parent.map(Path::to_path_buf))
            .block_size(Some(block))
    };
    write::create(&base, &opts(None)).expect("base");
    let mut expected = vec![0u8; size as usize];
    crate::write_vhd::write_mix(&base, &mut expected, block, 21);
    write::create(&mid, &opts(Some(&base))).expect("mid");
    crate::write_vhd::write_mix(&mid, &mut expected, block, 22);
    write::create(&child, &opts(Some(&mid))).expect("child");
    crate::write_vhd::write_mix(&child, &mut expected, block, 23);
    write::commit::commit(&mid, &OpenOptions::new(), false, &mut |_, _| {}).expect("commit");
    let before = std::fs::metadata(&child).expect("child").len();
    write::relink(&child, &base).expect("relink");
    std::fs::remove_file(&mid).expect("remove mid");
    // The locators went past the old end; the file still ends in a footer.
    assert!(std::fs::metadata(&child).expect("child").len() > before);
    crate::write_vhd::check_readers(&t, Format::Vhd, &[&child, &base], &expected, false);
    let img = diskimage::formats::open(&child, &OpenOptions::new()).expect("open");
    let props: std::collections::BTreeMap<String, String> =
        img.info().properties.iter().cloned().collect();
    assert_eq!(props["parent_name"], "base.vhd", "{props:?}");
    let base_props: std::collections::BTreeMap<String, String> =
        diskimage::formats::open(&base, &OpenOptions::new())
            .expect("base")
            .info()
            .properties
            .iter()
            .cloned()
            .collect();
    assert_eq!(props["parent_unique_id"], base_props["unique_id"]);
    assert!(
        props
            .values()
            .any(|v| v.contains("W2ru") && v.contains("..\\base.vhd")),
        "{props:?}"
    );
    drop(img);
    crate::write_vhd::write_mix(&child, &mut expected, block, 24);
    crate::write_vhd::check_readers(&t, Format::Vhd, &[&child, &base], &expected, false);

    // Refusals name the file and the offset; nothing is written.
    let other = tmp.path().join("other.vhd");
    write::create(&other, &CreateOptions::new(Format::Vhd, 2 << 20)).expect("other");
    let sums = [sha256_file(&child), sha256_file(&base)];
    let e = write::relink(&base, &other).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(e.path(), Some(base.as_path()), "{e}");
    assert!(e.to_string().contains("dynamic"), "{e}");
    let e = write::relink(&child, &other).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(e.path(), Some(child.as_path()), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
    assert_eq!([sha256_file(&child), sha256_file(&base)], sums);
    let mut bytes = std::fs::read(&child).expect("child");
    bytes[512 + 100] ^= 1; // in the parent name: the checksum no longer matches
    std::fs::write(&child, &bytes).expect("damage");
    let e = write::relink(&child, &base).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.offset(), Some(512 + 36), "{e}");
    assert_eq!(std::fs::read(&child).expect("child"), bytes);
}

/// A child that would replace a file of its own chain (its parent, a
/// parent's extent) is refused even with `--force`; the parent is
/// unchanged. An existing convert destination needs `--force`.
#[test]
fn a_child_never_replaces_its_chain_and_convert_needs_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| tmp.path().join(n);
    for (parent, extra) in [
        ("p.vhd", vec![]),
        ("p.vhdx", vec![]),
        ("p.vmdk", vec![]),
        ("split.vmdk", vec!["--subformat", "twoGbMaxExtentSparse"]),
    ] {
        let mut args = vec!["create", "--size", "1M"];
        let p = s(&d(parent));
        args.push(&p);
        args.extend(extra.iter().copied());
        ok(&args);
        let files = diskimage::formats::dependencies(&d(parent), &OpenOptions::new())
            .expect("dependencies");
        for f in &files {
            let before = sha256_file(f);
            let err = fails(&["create", &s(f), "--parent", &p, "--force"]);
            assert!(
                err.contains("one of the source's files") && err.contains(&s(f)),
                "{}: {err}",
                f.display()
            );
            assert_eq!(sha256_file(f), before, "{} changed", f.display());
        }
    }
    let src = d("src.img");
    std::fs::write(&src, Rng(7).bytes(1 << 20)).expect("src");
    for dst in ["exists.vhd", "exists.vhdx", "exists.vmdk", "exists.img"] {
        std::fs::write(d(dst), b"keep").expect("dst");
        let err = fails(&["convert", &s(&src), &s(&d(dst))]);
        assert!(err.contains(dst) && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(d(dst)).expect("dst"), b"keep");
        ok(&["convert", &s(&src), &s(&d(dst)), "--force"]);
    }
}

/// Writes into read-only VMDK extent types are a clear Unsupported error
/// naming the file: a COWD (vmfsSparse) delta from the fixtures and the
/// seSparse disk of the corpus.
#[test]
fn cowd_and_sesparse_are_not_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gunzip = |from: &Path, to: &Path| {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(from)
            .output()
            .expect("gzip");
        assert!(out.status.success(), "gzip -dc {}", from.display());
        std::fs::write(to, out.stdout).expect("write");
    };
    let fixtures = repo().join("fixtures/vmdk");
    for n in ["cowd.vmdk", "cowd-delta.vmdk", "cowd-base.vmdk"] {
        gunzip(&fixtures.join(format!("{n}.gz")), &tmp.path().join(n));
    }
    let mut targets = vec![tmp.path().join("cowd.vmdk")];
    let se = crate::corpus::corpus_dir().map(|c| c.join("dissect/vmdk/sesparse.vmdk.gz"));
    if let Some(se) = se.filter(|p| p.exists()) {
        gunzip(&se, &tmp.path().join("sesparse.vmdk"));
        targets.push(tmp.path().join("sesparse.vmdk"));
    } else {
        eprintln!("write_errors: the corpus seSparse disk is not here, its check skipped");
    }
    for t in targets {
        let before = sha256_file(&t);
        let Err(e) = write::open_writable(&t, &OpenOptions::new()) else {
            panic!("{} opened for writing", t.display());
        };
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.path().is_some(), "{e}");
        assert!(
            e.to_string().contains("COWD")
                || e.to_string().contains("seSparse")
                || e.to_string().contains("VMFSSPARSE"),
            "{e}"
        );
        assert_eq!(sha256_file(&t), before);
    }
}
