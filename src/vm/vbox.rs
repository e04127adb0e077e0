//! VirtualBox `.vbox` machine settings (XML).
//!
//! Read: the `Machine` element (name, `OSType`, uuid, `currentSnapshot`),
//! its `Hardware` (CPU count, RAM, firmware), the media registry
//! (`MediaRegistry/HardDisks/HardDisk`, differencing images nested in
//! their parent), the attached hard disks of the current state
//! (`StorageControllers/StorageController/AttachedDevice[@type=HardDisk]/Image`,
//! under `Machine` or its `Hardware`) and the snapshot tree (`Snapshot`,
//! children under `Snapshots`, each with its own storage controllers).
//! As with VMware, a snapshot's attachments name the image that became
//! read-only when it was taken: the top of that disk's chain at the snapshot.
//!
//! The XML is read with `quick-xml`, which expands no entities of its own:
//! a document type declaration (where entity definitions and so
//! "billion laughs" bombs live) is refused, as is any entity reference other
//! than the five XML predefines and character references; nesting deeper
//! than [`MAX_DEPTH`] and elements beyond [`MAX_ELEMENTS`] are refused too.

use std::collections::HashMap;

use super::xml::{self, bad, El};
use super::{check_tree, Snapshot, SnapshotDisk, VmFacts};
use crate::error::Result;

/// Deepest element nesting read (a snapshot adds two levels).
pub const MAX_DEPTH: usize = 256;
/// Most elements in one document.
pub const MAX_ELEMENTS: usize = 200_000;

/// A medium of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    /// `location` as written (relative to the `.vbox` or absolute).
    pub location: String,
    /// `format` (`VDI`, `VMDK`, `VHD`, ...).
    pub format: String,
    /// The parent medium's uuid, for a differencing image.
    pub parent: Option<String>,
}

/// An attached hard disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `controller:port:device`.
    pub slot: String,
    /// The medium's uuid.
    pub uuid: String,
}

/// What a `.vbox` says about a machine.
#[derive(Debug, Clone, Default)]
pub struct Vbox {
    /// `Machine/@name`, `@OSType`, `@uuid`, `Hardware/Memory/@RAMSize`
    /// (MiB), `Hardware/CPU/@count`, `Hardware/Firmware/@type`, and the
    /// `@version` of the `VirtualBox` root as the hardware version.
    pub facts: VmFacts,
    /// Hard-disk media by uuid (braces removed, lower case).
    pub media: HashMap<String, Medium>,
    /// Hard disks attached in the current state.
    pub disks: Vec<Attachment>,
    /// The snapshot tree (disks name media by uuid).
    pub snapshots: Vec<Snapshot>,
    /// `Machine/@currentSnapshot`.
    pub current: Option<String>,
}

/// A uuid without braces, lower case.
fn norm_uuid(u: &str) -> String {
    u.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

fn registry(el: &El, parent: Option<&str>, out: &mut HashMap<String, Medium>) {
    for d in el.children("HardDisk") {
        let Some(uuid) = d.attr("uuid").map(norm_uuid) else {
            continue;
        };
        out.insert(
            uuid.clone(),
            Medium {
                location: d.attr("location").unwrap_or_default().to_owned(),
                format: d.attr("format").unwrap_or_default().to_owned(),
                parent: parent.map(str::to_owned),
            },
        );
        registry(d, Some(&uuid), out);
    }
}

fn attachments(holder: &El) -> Vec<Attachment> {
    let ctrls = holder.child("StorageControllers").or_else(|| {
        holder
            .child("Hardware")
            .and_then(|h| h.child("StorageControllers"))
    });
    let mut out = Vec::new();
    for c in ctrls
        .into_iter()
        .flat_map(|s| s.children("StorageController"))
    {
        let name = c.attr("name").unwrap_or("controller");
        for a in c.children("AttachedDevice") {
            if !a
                .attr("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("HardDisk"))
            {
                continue;
            }
            let Some(uuid) = a.child("Image").and_then(|i| i.attr("uuid")) else {
                continue;
            };
            out.push(Attachment {
                slot: format!(
                    "{name}:{}:{}",
                    a.attr("port").unwrap_or("0"),
                    a.attr("device").unwrap_or("0")
                ),
                uuid: norm_uuid(uuid),
            });
        }
    }
    out
}

fn snapshots(el: &El, parent: Option<&str>, out: &mut Vec<Snapshot>) {
    for s in el.children("Snapshot") {
        let Some(uid) = s.attr("uuid").map(norm_uuid) else {
            continue;
        };
        out.push(Snapshot {
            uid: uid.clone(),
            parent: parent.map(str::to_owned),
            name: s.attr("name").unwrap_or(&uid).to_owned(),
            description: s
                .child("Description")
                .map(|d| d.text().trim().to_owned())
                .filter(|t| !t.is_empty()),
            created: s.attr("timeStamp").map(str::to_owned),
            state_file: s.attr("stateFile").map(str::to_owned),
            disks: attachments(s)
                .into_iter()
                .map(|a| SnapshotDisk {
                    slot: a.slot,
                    file: a.uuid,
                })
                .collect(),
        });
        if let Some(children) = s.child("Snapshots") {
            snapshots(children, Some(&uid), out);
        }
    }
}

impl Vbox {
    /// Parses `.vbox` XML.
    pub fn parse(text: &[u8]) -> Result<Vbox> {
        let doc = xml::parse(text)?;
        let vb =
            xml::root(&doc, "VirtualBox").ok_or_else(|| bad("no VirtualBox root element", 0))?;
        let m = vb
            .child("Machine")
            .ok_or_else(|| bad("no Machine element", 0))?;
        let hw = m.child("Hardware");
        let num = |el: Option<&El>, a: &str| {
            el.and_then(|e| e.attr(a))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let mut vbox = Vbox {
            facts: VmFacts {
                name: m.attr("name").map(str::to_owned),
                guest_os: m.attr("OSType").map(str::to_owned),
                uuid: m.attr("uuid").map(norm_uuid),
                memory_mib: num(hw.and_then(|h| h.child("Memory")), "RAMSize"),
                cpus: num(hw.and_then(|h| h.child("CPU")), "count"),
                firmware: hw
                    .and_then(|h| h.child("Firmware"))
                    .and_then(|f| f.attr("type"))
                    .map(str::to_owned),
                hardware_version: vb.attr("version").map(str::to_owned),
                encryption_keys: Vec::new(),
            },
            current: m.attr("currentSnapshot").map(norm_uuid),
            ..Vbox::default()
        };
        for reg in [
            m.child("MediaRegistry"),
            vb.child("Global").and_then(|g| g.child("MediaRegistry")),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(hd) = reg.child("HardDisks") {
                registry(hd, None, &mut vbox.media);
            }
        }
        vbox.disks = attachments(m);
        snapshots(m, None, &mut vbox.snapshots);
        check_tree(&vbox.snapshots)?;
        Ok(vbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bomb_is_refused() {
        let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<VirtualBox><Machine name="&lol2;"/></VirtualBox>"#;
        let e = Vbox::parse(bomb).unwrap_err();
        assert!(e.to_string().contains("document type"), "{e}");
        let e = Vbox::parse(b"<VirtualBox><Machine name=\"&lol2;\"/></VirtualBox>").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        let e = Vbox::parse(b"<VirtualBox><Machine><Snapshot uuid=\"a\"><Description>&x;</Description></Snapshot></Machine></VirtualBox>").unwrap_err();
        assert!(e.to_string().contains("not predefined"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut x = String::new();
        for _ in 0..(MAX_DEPTH + 5) {
            x.push_str("<a>");
        }
        let e = Vbox::parse(x.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::LimitExceeded, "{e}");
    }

    #[test]
    fn media_attachments_and_snapshots() {
        let v = Vbox::parse(br#"<VirtualBox version="1.16"><Machine name="m" currentSnapshot="{B}">
<MediaRegistry><HardDisks><HardDisk uuid="{A}" location="a.vdi" format="VDI"><HardDisk uuid="{A2}" location="s/x.vdi" format="VDI"/></HardDisk></HardDisks></MediaRegistry>
<Snapshot uuid="{B}" name="one &amp; two"><Description>d&#33;</Description><StorageControllers><StorageController name="SATA"><AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{A}"/></AttachedDevice></StorageController></StorageControllers></Snapshot>
<Hardware><StorageControllers><StorageController name="SATA"><AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{A2}"/></AttachedDevice><AttachedDevice type="DVD" port="1" device="0"/></StorageController></StorageControllers></Hardware>
</Machine></VirtualBox>"#).unwrap();
        assert_eq!(v.media["a2"].parent.as_deref(), Some("a"));
        assert_eq!(
            v.disks,
            [Attachment {
                slot: "SATA:0:0".into(),
                uuid: "a2".into()
            }]
        );
        assert_eq!(v.snapshots[0].name, "one & two");
        assert_eq!(v.snapshots[0].description.as_deref(), Some("d!"));
        assert_eq!(v.snapshots[0].disks[0].file, "a");
    }
}
