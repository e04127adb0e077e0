//! VMware's `key = "value"` configuration text (`.vmx`, `.vmtx`, `.vmsd`)
//! and the facts and disks of a `.vmx`.
//!
//! The text is read tolerantly, as VMware products write and read it: one
//! `key = "value"` per line (LF or CRLF), `#` comments and blank lines,
//! keys compared without regard to case, the last of duplicate keys wins,
//! unquoted values taken as they are, and `|XX` in a value standing for the
//! byte with hex code XX (`|22` is `"`, `|7C` is `|`). A line without `=`
//! is skipped. Input longer than [`MAX_CONFIG_BYTES`] is refused.

use std::collections::HashMap;
use std::path::Path;

use super::{VmDisk, VmFacts};
use crate::error::{Error, Result, Scheme};

/// The largest configuration file read (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The entries of a `key = "value"` file: keys lower-cased, last one wins.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    /// Keys (lower case) in order of first appearance.
    order: Vec<String>,
    /// Lower-case key -> (value, 1-based line of the winning entry).
    map: HashMap<String, (String, usize)>,
}

impl Dict {
    /// Parses configuration text (invalid UTF-8 is replaced, not refused).
    pub fn parse(text: &[u8]) -> Result<Dict> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::limit(
                Scheme::Vm,
                "configuration bytes",
                text.len() as u64,
                MAX_CONFIG_BYTES,
            ));
        }
        let text = String::from_utf8_lossy(text);
        let mut dict = Dict::default();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim_end_matches('\r').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                continue;
            }
            let value = unquote(value.trim());
            if !dict.map.contains_key(&key) {
                dict.order.push(key.clone());
            }
            dict.map.insert(key, (value, i + 1));
        }
        Ok(dict)
    }

    /// The value of `key` (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(&key.to_ascii_lowercase())
            .map(|(v, _)| v.as_str())
    }

    /// The line `key` was last set on.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.map.get(&key.to_ascii_lowercase()).map(|(_, l)| *l)
    }

    /// Whether `key` holds a true value (`TRUE`, `yes`, `1`, any case).
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on"))
    }

    /// Every key (lower case), in order of first appearance.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }
}

/// A value without its quotes, `|XX` escapes decoded.
fn unquote(v: &str) -> String {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.split('"').next().unwrap_or_default(),
        None => v,
    };
    let mut out = Vec::with_capacity(inner.len());
    let b = inner.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'|' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(x) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bus of a virtual disk slot.
const BUSES: [&str; 4] = ["scsi", "sata", "nvme", "ide"];

/// What a `.vmx` says about a VM.
#[derive(Debug, Clone, Default)]
pub struct Vmx {
    /// `displayName`, `guestOS`, `memsize` (MiB), `numvcpus`, `firmware`,
    /// `uuid.bios`, `virtualHW.version` and the `encryption.*` keys present
    /// (the VM is encrypted when there are any).
    pub facts: VmFacts,
    /// Present hard disks, in the order their slots first appear: the slot
    /// lower case (`scsi0:0`, `sata0:1`, `nvme0:0`, `ide1:0`), `fileName` and
    /// `mode` as written.
    pub disks: Vec<VmDisk>,
}

/// Splits `scsi0:1.filename` into (`scsi0:1`, `filename`) for a disk slot key.
fn slot_key(key: &str) -> Option<(&str, &str)> {
    let (slot, field) = key.split_once('.')?;
    let bus = BUSES.iter().find(|b| slot.starts_with(**b))?;
    let (ctrl, unit) = slot.get(bus.len()..)?.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|c| c.is_ascii_digit());
    (digits(ctrl) && digits(unit)).then_some((slot, field))
}

impl Vmx {
    /// Reads the facts and present hard disks of `.vmx` text.
    pub fn parse(text: &[u8]) -> Result<Vmx> {
        let d = Dict::parse(text)?;
        let num = |k: &str| d.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let text = |k: &str| d.get(k).map(str::to_owned);
        let mut vmx = Vmx {
            facts: VmFacts {
                name: text("displayName"),
                guest_os: text("guestOS"),
                memory_mib: num("memsize"),
                cpus: num("numvcpus"),
                firmware: text("firmware"),
                uuid: text("uuid.bios"),
                hardware_version: text("virtualHW.version"),
                encryption_keys: Vec::new(),
            },
            disks: Vec::new(),
        };
        let mut slots: Vec<&str> = Vec::new();
        for key in d.keys() {
            if key.starts_with("encryption.") {
                vmx.facts.encryption_keys.push(key.to_owned());
            }
            if let Some((slot, _)) = slot_key(key) {
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
        for slot in slots {
            let get = |f: &str| d.get(&format!("{slot}.{f}"));
            let controller = slot.split(':').next().unwrap_or_default();
            if d.flag(&format!("{controller}.present")) == Some(false)
                || d.flag(&format!("{slot}.present")) != Some(true)
            {
                continue;
            }
            let Some(file) = get("filename").filter(|f| !f.trim().is_empty()) else {
                continue;
            };
            let device = get("devicetype").unwrap_or_default().to_ascii_lowercase();
            let is_disk = if device.is_empty() {
                file.to_ascii_lowercase().ends_with(".vmdk")
            } else {
                device.contains("disk") && !device.contains("cdrom")
            };
            if is_disk {
                vmx.disks.push(VmDisk {
                    slot: slot.to_owned(),
                    file: file.to_owned(),
                    mode: get("mode").map(str::to_owned),
                });
            }
        }
        Ok(vmx)
    }

    /// Reads a `.vmx` file, refusing one over [`MAX_CONFIG_BYTES`].
    pub fn read(path: &Path) -> Result<Vmx> {
        Vmx::parse(&read_config(path)?).map_err(|e| e.in_file(path))
    }
}

/// Reads a configuration file whole, refusing one over [`MAX_CONFIG_BYTES`]
/// before reading it.
pub fn read_config(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |e: std::io::Error| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            crate::ErrorKind::MissingFile
        } else {
            crate::ErrorKind::Io
        };
        Error::new(kind, Scheme::Vm, crate::error::Detail::Io(e)).in_file(path)
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(
            Error::limit(Scheme::Vm, "configuration bytes", len, MAX_CONFIG_BYTES).in_file(path),
        );
    }
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_key_value_text() {
        let d =
            Dict::parse(b"# c\r\nA.b = \"x|22y|7Cz\"\r\na.B = \"last\"\nplain = 12\nnoequals\n\n")
                .unwrap();
        assert_eq!(d.get("a.b"), Some("last"));
        assert_eq!(d.line("A.B"), Some(3));
        assert_eq!(d.get("plain"), Some("12"));
        let d = Dict::parse(b"k = \"x|22y|7Cz|zz\"").unwrap();
        assert_eq!(d.get("k"), Some("x\"y|z|zz"));
    }

    #[test]
    fn disks_only_present_hard_disks() {
        let v = Vmx::parse(
            b"scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\n\
              scsi0:1.present = \"FALSE\"\nscsi0:1.fileName = \"b.vmdk\"\n\
              ide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-image\"\nide1:0.fileName = \"x.iso\"\n\
              nvme0:0.present = \"TRUE\"\nnvme0:0.fileName = \"c.vmdk\"\nnvme0:0.mode = \"independent-nonpersistent\"\n\
              encryption.keySafe = \"vmware:key/list/...\"\n",
        )
        .unwrap();
        let slots: Vec<_> = v.disks.iter().map(|d| d.slot.as_str()).collect();
        assert_eq!(slots, ["scsi0:0", "nvme0:0"]);
        assert!(v.disks[1].independent());
        assert_eq!(v.facts.encryption_keys, ["encryption.keysafe"]);
    }

    #[test]
    fn too_big_is_refused() {
        let big = vec![b'#'; MAX_CONFIG_BYTES as usize + 1];
        let e = Dict::parse(&big).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::LimitExceeded);
    }
}
