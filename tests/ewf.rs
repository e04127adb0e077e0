//! EWF (`.E01`) segment sets made by ewfacquire and ewfacquirestream
//! (`fixtures/ewf/make.sh`): media bytes against `ewfexport`, case
//! metadata and digests against `ewfinfo`, a flipped chunk byte against
//! `ewfverify`'s refusal, one-field changes of the tools' files (damaged
//! table, stored digest, hostile counts) and every command on a set.

use std::path::{Path, PathBuf};

use diskimage::formats::WarningKind;
use diskimage::{open, BlockDevice, ErrorKind, OpenOptions};

use crate::common::{diskimage, sha256_bytes, sha256_device, sha256_file, tsv_rows, Unpacked};

fn topic() -> PathBuf {
    crate::common::repo().join("fixtures/ewf")
}

/// Adler-32, to keep a one-field change consistent with its checksum
/// (the tests change what libewf wrote, then re-sum it as libewf would).
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// The sections of a segment file as (type, descriptor offset, size).
fn sections(d: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 13usize;
    loop {
        let kind = String::from_utf8_lossy(&d[pos..pos + 16])
            .trim_end_matches('\0')
            .to_owned();
        let next = u64::from_le_bytes(d[pos + 16..pos + 24].try_into().unwrap()) as usize;
        let size = u64::from_le_bytes(d[pos + 24..pos + 32].try_into().unwrap()) as usize;
        out.push((kind.clone(), pos, size));
        if kind == "done" || kind == "next" || next <= pos {
            return out;
        }
        pos = next;
    }
}

fn section(d: &[u8], kind: &str) -> (usize, usize) {
    sections(d)
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, o, s)| (o, s))
        .unwrap_or_else(|| panic!("no {kind} section"))
}

/// Re-sums `len` bytes at `start` into the 4 bytes after them.
fn resum(d: &mut [u8], start: usize, len: usize) {
    let c = adler32(&d[start..start + len]);
    d[start + len..start + len + 4].copy_from_slice(&c.to_le_bytes());
}

/// `ewfinfo`'s "Key:\tvalue" lines of one fixture.
fn ewfinfo(image: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(topic().join(format!("{image}.ewfinfo.txt")))
        .expect("ewfinfo output");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let v = v.trim();
            (!v.is_empty()).then(|| (k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// ewfinfo's `ctime` date ("Mon Dec  7 03:35:25 2026", TZ=UTC) as ISO 8601.
fn ctime_to_iso(s: &str) -> String {
    let p: Vec<&str> = s.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == p[1]).expect("month") + 1;
    let d: u32 = p[2].parse().expect("day");
    format!("{}-{m:02}-{d:02}T{}Z", p[4], p[3])
}

fn property<'a>(img: &'a diskimage::DiskImage, key: &str) -> Option<&'a str> {
    img.info()
        .properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn media_reads_match_ewfexport() {
    let u = Unpacked::new(&topic());
    let rows = tsv_rows(&topic().join("expected.tsv"));
    // 4 sets of the 6 MiB disk, 12 file formats of its first 64 KiB.
    assert_eq!(rows.len(), 16);
    for row in rows {
        let [image, _, size, sha, source] = row.as_slice() else {
            panic!("malformed row {row:?}")
        };
        let segments = source
            .split('(')
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .expect("segment count in the source column");
        let img = open(&u.path(image), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(img.format(), diskimage::formats::Format::Ewf);
        assert_eq!(img.size().to_string(), *size, "{image}");
        assert_eq!(property(&img, "segments"), Some(segments));
        assert!(
            img.info().warnings.is_empty(),
            "{image}: {:?}",
            img.info().warnings
        );
        let got = sha256_device(&img, img.size()).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(&got, sha, "{image} reads differently from ewfexport");
        // Small reads across chunk edges (the cache path) agree with one big read.
        let mut big = vec![0u8; 3 * 8192];
        img.read_at(&mut big, 30000).unwrap();
        let mut small = vec![0u8; big.len()];
        for (i, piece) in small.chunks_mut(1000).enumerate() {
            img.read_at(piece, 30000 + i as u64 * 1000).unwrap();
        }
        assert!(big == small, "{image}: small reads differ from a large one");
    }
}

#[test]
fn info_metadata_matches_ewfinfo() {
    let u = Unpacked::new(&topic());
    for image in ["none.E01", "fast.E01", "best.E01", "stream.E01"] {
        let img = open(&u.path(image), &OpenOptions::default()).unwrap();
        let truth = ewfinfo(image);
        let mut checked = 0;
        for (key, value) in &truth {
            let (ours, want) = match key.as_str() {
                "Case number" => ("case_number", value.clone()),
                "Description" => ("description", value.clone()),
                "Examiner name" => ("examiner", value.clone()),
                "Evidence number" => ("evidence_number", value.clone()),
                "Notes" => ("notes", value.clone()),
                "Operating system used" => ("acquisition_os", value.clone()),
                "Software version used" => ("acquisition_software_version", value.clone()),
                "Acquisition date" => ("acquisition_date", ctime_to_iso(value)),
                "System date" => ("system_date", ctime_to_iso(value)),
                "Sectors per chunk" => ("sectors_per_chunk", value.clone()),
                "Bytes per sector" => ("bytes_per_sector", value.clone()),
                "Number of sectors" => ("sectors", value.clone()),
                "Error granularity" => ("error_granularity", value.clone()),
                "MD5" => ("md5", value.clone()),
                "SHA1" => ("sha1", value.clone()),
                "Media type" => ("media_type", value.trim_end_matches(" disk").to_owned()),
                "Is physical" => ("physical", (value == "yes").to_string()),
                "Compression level" => (
                    "compression_level",
                    match value.as_str() {
                        "no compression" => "none",
                        "good (fast) compression" => "fast",
                        "best compression" => "best",
                        other => panic!("unknown level {other}"),
                    }
                    .to_owned(),
                ),
                _ => continue,
            };
            let got = property(&img, ours).unwrap_or_else(|| panic!("{image}: no {ours}"));
            // header (not header2) dates are the acquiring machine's local
            // time without a zone: compare their digits.
            let norm = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            assert!(norm(got) == norm(&want), "{image} {ours}: {got} vs {want}");
            if !ours.ends_with("date") {
                assert_eq!(got, want, "{image} {ours}");
            }
            checked += 1;
        }
        assert!(
            checked >= 15,
            "{image}: only {checked} ewfinfo fields compared"
        );
    }
}

#[test]
fn hash_verify_passes_on_every_set_and_says_when_nothing_is_stored() {
    let u = Unpacked::new(&topic());
    for image in ["none.E01", "fast.E01", "best.E01", "stream.E01"] {
        let out = diskimage(&["hash", "--verify", &u.arg(image)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let md5 = &ewfinfo(image)
            .into_iter()
            .find(|(k, _)| k == "MD5")
            .unwrap()
            .1;
        assert!(
            stdout.contains(&format!("MD5 ({}) = {md5}: matches", u.arg(image))),
            "{stdout}"
        );
        if image == "fast.E01" {
            assert!(stdout.contains("SHA1"), "{stdout}");
        }
    }
    let raw = u.path("plain.raw");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    let out = diskimage(&["hash", "--verify", raw.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stores no digests"));
}

/// The damaged copies make.sh made before ewfverify refused them: each
/// row of `corrupt.tsv` (a set, every segment copied as `corrupt-NAME`,
/// one byte of the first segment flipped) with the sectors ewfverify named.
fn corrupt_copies(u: &Unpacked) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    for row in tsv_rows(&topic().join("corrupt.tsv")) {
        let (image, at): (&str, usize) = (&row[0], row[1].parse().unwrap());
        let stem = image.trim_end_matches(".E01");
        for entry in std::fs::read_dir(u.dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{stem}.E")) {
                std::fs::copy(entry.path(), u.path(&format!("corrupt-{name}"))).unwrap();
            }
        }
        let p = u.path(&format!("corrupt-{image}"));
        let mut d = std::fs::read(&p).unwrap();
        d[at] ^= 0xff;
        std::fs::write(&p, d).unwrap();
        let verify =
            std::fs::read_to_string(topic().join(format!("corrupt-{image}.ewfverify.txt")))
                .unwrap();
        // "at sector(s): 6528 - 6591 (number: 64)"
        let range = verify
            .split("at sector(s): ")
            .nth(1)
            .and_then(|r| r.split(" (").next())
            .expect("ewfverify names the damaged sectors");
        let (first, last) = range.split_once(" - ").unwrap();
        out.push((p, first.parse().unwrap(), last.parse().unwrap()));
    }
    assert_eq!(out.len(), 2);
    out
}

#[test]
fn a_flipped_chunk_byte_fails_where_ewfverify_says() {
    let u = Unpacked::new(&topic());
    for (p, first, last) in corrupt_copies(&u) {
        for strict in [false, true] {
            let img = open(&p, &OpenOptions::default().strict(strict)).unwrap();
            let e = sha256_device(&img, img.size()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            assert!(
                e.to_string().contains(&format!("sectors {first}-{last}")),
                "{e} does not name ewfverify's sectors {first}-{last}"
            );
            assert_eq!(e.path(), Some(p.as_path()));
            // Only that chunk fails: the sectors around it read.
            let mut s = vec![0u8; 512];
            if first > 0 {
                img.read_at(&mut s, (first - 1) * 512).unwrap();
            }
            img.read_at(&mut s, (last + 1) * 512).unwrap();
            assert!(img.read_at(&mut s, first * 512).is_err());
        }
        let out = diskimage(&["hash", "--verify", p.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("sectors {first}-{last}")), "{err}");
    }
}

#[test]
fn a_changed_stored_digest_is_a_mismatch_naming_both() {
    let u = Unpacked::new(&topic());
    let mut d = std::fs::read(u.path("fast.E01")).unwrap();
    let (h, _) = section(&d, "hash");
    let (g, _) = section(&d, "digest");
    let stored: String = d[h + 76..h + 92]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (at, len) in [(h + 76, 32), (g + 76, 76)] {
        d[at] ^= 0x01;
        resum(&mut d, at, len);
    }
    let changed: String = d[h + 76..h + 92]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let p = u.path("changed.E01");
    std::fs::write(&p, d).unwrap();
    let out = diskimage(&["hash", "--verify", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("MD5 stored {changed}, computed {stored}")),
        "{err}"
    );
}

#[test]
fn a_missing_segment_is_named_and_a_later_segment_is_refused() {
    let u = Unpacked::new(&topic());
    let dir = u.path("part");
    std::fs::create_dir(&dir).unwrap();
    for n in 1..=3 {
        let name = format!("none.E0{n}");
        std::fs::copy(u.path(&name), dir.join(&name)).unwrap();
    }
    let e = open(&dir.join("none.E01"), &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingFile);
    assert!(e.to_string().contains("none.E04"), "{e}");
    let e = open(&u.path("none.E02"), &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("segment 2"), "{e}");
}

#[test]
fn a_damaged_table_is_read_from_table2_with_a_warning() {
    let u = Unpacked::new(&topic());
    let good = open(&u.path("fast.E01"), &OpenOptions::default()).unwrap();
    let want = sha256_device(&good, good.size()).unwrap();
    let mut d = std::fs::read(u.path("fast.E01")).unwrap();
    let (t, _) = section(&d, "table");
    d[t + 76 + 24 + 8] ^= 0x40; // the third entry, not re-summed
    let p = u.path("table.E01");
    std::fs::write(&p, &d).unwrap();
    let img = open(&p, &OpenOptions::default()).unwrap();
    let w = &img.info().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].kind, WarningKind::RedundantCopyUsed);
    assert!(w[0].message.contains("table entries Adler-32"), "{w:?}");
    assert_eq!(sha256_device(&img, img.size()).unwrap(), want);
    let e = open(&p, &OpenOptions::default().strict(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    // Both copies damaged: no guess.
    let (t2, _) = section(&d, "table2");
    d[t2 + 76 + 24 + 8] ^= 0x40;
    std::fs::write(&p, &d).unwrap();
    let e = open(&p, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.offset(), Some((t2 + 76 + 24 + 4 * 192) as u64));
}

#[test]
fn hostile_counts_and_offsets_are_typed_errors() {
    let u = Unpacked::new(&topic());
    let base = std::fs::read(u.path("fast.E01")).unwrap();
    let (v, _) = section(&base, "volume");
    let data = v + 76;
    let write = |name: &str, d: &[u8]| {
        let p = u.path(name);
        std::fs::write(&p, d).unwrap();
        open(&p, &OpenOptions::default())
    };
    // Billions of chunks: more than the file could list.
    let mut d = base.clone();
    d[data + 4..data + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    resum(&mut d, data, 1048);
    let e = write("chunks.E01", &d).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(
        e.to_string().contains("number of chunks is 4294967295"),
        "{e}"
    );
    // A 2^60-byte media in 192 chunks.
    let mut d = base.clone();
    d[data + 16..data + 24].copy_from_slice(&(1u64 << 51).to_le_bytes());
    resum(&mut d, data, 1048);
    let e = write("huge.E01", &d).unwrap_err();
    assert!(e.to_string().contains("number of sectors"), "{e}");
    // A table whose entries point past the file (both copies, re-summed):
    // opens, and the reads of those chunks fail with OutOfBounds.
    let mut d = base.clone();
    for kind in ["table", "table2"] {
        let (t, _) = section(&d, kind);
        let head = t + 76;
        d[head + 8..head + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        resum(&mut d, head, 20);
        resum(&mut d, head + 24, 4 * 192);
    }
    let img = write("past.E01", &d).unwrap();
    let mut s = vec![0u8; 512];
    let e = img.read_at(&mut s, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    // A section chain pointing back at itself.
    let mut d = base;
    let (h, _) = section(&d, "header");
    d[h + 16..h + 24].copy_from_slice(&13u64.to_le_bytes());
    resum(&mut d, h, 72);
    let e = write("loop.E01", &d).unwrap_err();
    assert!(e.to_string().contains("next section offset"), "{e}");
}

#[test]
fn every_command_reads_a_segment_set() {
    let u = Unpacked::new(&topic());
    let img = u.arg("none.E01");
    let run = |args: &[&str]| {
        let out = diskimage(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let volumes = String::from_utf8_lossy(&run(&["volumes", &img])).into_owned();
    for want in ["fat12", "EWFFAT", "ext2", "ewfext"] {
        assert!(volumes.contains(want), "{volumes}");
    }
    for row in tsv_rows(&topic().join("listing.tsv")) {
        let [vol, path, size, sha] = row.as_slice() else {
            panic!("malformed row {row:?}")
        };
        let bytes = run(&["cat", &img, "-V", vol, path]);
        assert_eq!(bytes.len().to_string(), *size, "{path}");
        assert_eq!(&sha256_bytes(&bytes), sha, "{path}");
        let name = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parent = Path::new(path)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ls = String::from_utf8_lossy(&run(&["ls", &img, "-V", vol, &parent])).into_owned();
        assert!(ls.lines().any(|l| l.trim() == name), "{name} not in {ls}");
    }
    let out = u.path("extracted");
    run(&["extract", "-o", out.to_str().unwrap(), &img, "-V", "2"]);
    let table = std::fs::read(out.join("data/table.csv")).unwrap();
    let row = tsv_rows(&topic().join("listing.tsv"))
        .into_iter()
        .find(|r| r[1] == "/data/table.csv")
        .unwrap();
    assert_eq!(sha256_bytes(&table), row[3]);
    let body = String::from_utf8_lossy(&run(&["timeline", &img, "-V", "2"])).into_owned();
    assert!(body.contains("/hello.txt|"), "{body}");
    let dump = u.path("dump.raw");
    run(&["dump", &img, "-o", dump.to_str().unwrap()]);
    let want = &tsv_rows(&topic().join("expected.tsv"))[0][3];
    assert_eq!(&sha256_file(&dump), want);
    let map = String::from_utf8_lossy(&run(&["map", &u.arg("fast.E01")])).into_owned();
    assert!(map.contains("compressed"), "{map}");
    let map = String::from_utf8_lossy(&run(&["map", &img])).into_owned();
    assert!(map.contains("data"), "{map}");
    let json = String::from_utf8_lossy(&run(&["info", "--json", &img])).into_owned();
    assert!(json.contains("\"case_number\": \"CASE-2026-17\""), "{json}");
    assert!(json.contains("none.E07\""), "{json}");
}
