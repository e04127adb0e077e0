//! LVM2: physical volumes found on any disk of a set, volume groups
//! assembled from them by PV UUID (the metadata with the highest `seqno`
//! wins), and logical volumes whose linear and striped segments are mapped
//! as a [`BlockDevice`] ([`LvDevice`]) across disks.
//!
//! Thin pools and volumes, snapshots, mirrors, raid and cache LVs are
//! listed with their segment type; reading them is an `Unsupported` error.
//! A VG with a PV that is not in the set is listed with the missing PV's
//! UUID, and its LVs that touch that PV fail to read with `MissingFile`.

use std::collections::BTreeMap;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, Result, Scheme};

pub mod device;
pub mod label;
pub mod metadata;

pub use device::LvDevice;
use device::{Mapped, Problem, Target};
use label::{read_label, read_metadata_text, PvLabel, LVM_SECTOR};
use metadata::{parse, volume_group, VgMeta};

/// A physical volume found on a disk of the set.
#[derive(Clone)]
pub struct PhysicalVolume {
    /// The disk (index in the set) holding it.
    pub disk: usize,
    /// Where the PV starts on that disk, bytes (0 for a whole-disk PV).
    pub offset: u64,
    /// The PV's label and header.
    pub label: PvLabel,
    /// The newest metadata among its metadata areas, if any parsed.
    pub metadata: Option<VgMeta>,
    /// Metadata areas that could not be read, as text.
    pub problems: Vec<String>,
    device: Arc<dyn BlockDevice>,
}

impl std::fmt::Debug for PhysicalVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalVolume")
            .field("disk", &self.disk)
            .field("offset", &self.offset)
            .field("uuid", &self.label.pv_uuid)
            .finish()
    }
}

/// Looks for a PV on `device` (a whole disk or a partition).
pub fn scan(
    device: Arc<dyn BlockDevice>,
    disk: usize,
    offset: u64,
) -> Result<Option<PhysicalVolume>> {
    let Some(label) = read_label(device.as_ref())? else {
        return Ok(None);
    };
    let mut best: Option<VgMeta> = None;
    let mut problems = Vec::new();
    for mda in &label.metadata_areas {
        let vg = read_metadata_text(device.as_ref(), *mda).and_then(|t| {
            t.map(|t| parse(&t).and_then(|top| volume_group(&top)))
                .transpose()
        });
        match vg {
            Ok(Some(vg)) => {
                if best.as_ref().is_none_or(|b| vg.seqno > b.seqno) {
                    best = Some(vg);
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if best.is_none() {
        if let Some(p) = problems.first() {
            return Err(Error::invalid(
                Scheme::Lvm2,
                format!("PV {} has no usable metadata: {p}", dashed(&label.pv_uuid)),
            )
            .on_disk(disk)
            .at(offset));
        }
    }
    Ok(Some(PhysicalVolume {
        disk,
        offset,
        label,
        metadata: best,
        problems,
        device,
    }))
}

/// A 32-character LVM UUID with dashes as LVM prints it (6-4-4-4-4-4-6).
pub fn dashed(uuid: &str) -> String {
    let plain: String = uuid.chars().filter(|c| *c != '-').collect();
    if plain.len() != 32 || !plain.is_ascii() {
        return uuid.to_owned();
    }
    let mut out = String::with_capacity(38);
    for (i, (a, b)) in [
        (0, 6),
        (6, 10),
        (10, 14),
        (14, 18),
        (18, 22),
        (22, 26),
        (26, 32),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push('-');
        }
        out.push_str(plain.get(a..b).unwrap_or_default());
    }
    out
}

fn plain(uuid: &str) -> String {
    uuid.chars().filter(|c| *c != '-').collect()
}

/// A PV of a volume group, found in the set or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgPv {
    /// The name inside the metadata (`pv0`).
    pub name: String,
    /// The PV UUID with dashes.
    pub uuid: String,
    /// The device path the metadata recorded (a hint only).
    pub device_hint: Option<String>,
    /// The disk holding it, `None` when it is missing from the set.
    pub disk: Option<usize>,
    /// Where the PV starts on that disk, bytes.
    pub offset: Option<u64>,
}

/// One stripe of a segment: which PV, from which physical extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvStripe {
    /// The PV's name in the metadata.
    pub pv: String,
    /// The PV UUID with dashes.
    pub pv_uuid: Option<String>,
    /// The disk holding the PV, when present.
    pub disk: Option<usize>,
    /// The first physical extent on the PV.
    pub start_extent: u64,
    /// Where that extent is on the disk, bytes (when the PV is present).
    pub disk_offset: Option<u64>,
}

/// A segment of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvSegment {
    /// Start in the LV, bytes.
    pub offset: u64,
    /// Length, bytes.
    pub size: u64,
    /// The segment type (`striped`, `thin`, `raid1` ...).
    pub segment_type: String,
    /// Stripe size in bytes, for more than one stripe.
    pub stripe_size: Option<u64>,
    /// The stripes.
    pub stripes: Vec<LvStripe>,
}

/// A logical volume of a volume group.
#[derive(Clone)]
pub struct LogicalVolume {
    /// The VG name.
    pub vg: String,
    /// The LV name.
    pub name: String,
    /// The LV UUID with dashes.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// `linear`, `striped`, or the first unsupported segment's type.
    pub lv_type: String,
    /// The segments (the LV map).
    pub segments: Vec<LvSegment>,
    /// Why it cannot be read, when it cannot.
    pub unreadable: Option<String>,
    /// The device reading it.
    pub device: Arc<LvDevice>,
}

impl std::fmt::Debug for LogicalVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalVolume")
            .field("vg", &self.vg)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("segments", &self.segments)
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

/// A volume group assembled from the PVs of the set.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// The VG name.
    pub name: String,
    /// The VG UUID with dashes.
    pub uuid: String,
    /// The metadata sequence number used.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Every PV the metadata names.
    pub pvs: Vec<VgPv>,
    /// UUIDs of the PVs not found in the set (empty when complete).
    pub missing: Vec<String>,
    /// The visible LVs (what `lvs` lists).
    pub lvs: Vec<LogicalVolume>,
}

impl VolumeGroup {
    /// Whether every PV was found.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Assembles the volume groups of `pvs`: grouped by VG UUID, the metadata
/// with the highest seqno describes the group.
pub fn assemble(pvs: &[PhysicalVolume]) -> Result<Vec<VolumeGroup>> {
    let mut newest: BTreeMap<String, &VgMeta> = BTreeMap::new();
    for pv in pvs {
        if let Some(m) = &pv.metadata {
            let key = plain(&m.id);
            if newest.get(&key).is_none_or(|b| m.seqno > b.seqno) {
                newest.insert(key, m);
            }
        }
    }
    let by_uuid: BTreeMap<String, &PhysicalVolume> =
        pvs.iter().map(|p| (plain(&p.label.pv_uuid), p)).collect();
    newest.values().map(|m| build(m, &by_uuid)).collect()
}

fn bad(vg: &str, what: String) -> Error {
    Error::invalid(Scheme::Lvm2, format!("volume group {vg}: {what}"))
}

fn build(m: &VgMeta, by_uuid: &BTreeMap<String, &PhysicalVolume>) -> Result<VolumeGroup> {
    let extent_bytes = m
        .extent_size
        .checked_mul(LVM_SECTOR)
        .ok_or_else(|| bad(&m.name, format!("extent_size {} overflows", m.extent_size)))?;
    let mut pvs = Vec::new();
    let mut missing = Vec::new();
    for p in &m.pvs {
        let found = by_uuid.get(&plain(&p.id));
        if found.is_none() {
            missing.push(dashed(&p.id));
        }
        pvs.push(VgPv {
            name: p.name.clone(),
            uuid: dashed(&p.id),
            device_hint: p.device.clone(),
            disk: found.map(|f| f.disk),
            offset: found.map(|f| f.offset),
        });
    }
    let mut lvs = Vec::new();
    for lv in m.lvs.iter().filter(|l| l.visible) {
        lvs.push(build_lv(m, lv, extent_bytes, by_uuid)?);
    }
    Ok(VolumeGroup {
        name: m.name.clone(),
        uuid: dashed(&m.id),
        seqno: m.seqno,
        extent_size: extent_bytes,
        pvs,
        missing,
        lvs,
    })
}

fn build_lv(
    m: &VgMeta,
    lv: &metadata::LvMeta,
    extent_bytes: u64,
    by_uuid: &BTreeMap<String, &PhysicalVolume>,
) -> Result<LogicalVolume> {
    let ctx = |what: String| bad(&m.name, format!("LV {}: {what}", lv.name));
    let mut segments = Vec::new();
    let mut mapped = Vec::new();
    let mut problem = None;
    let mut next_extent = 0u64;
    let mut lv_type: Option<String> = None;
    for s in &lv.segments {
        if s.start_extent != next_extent {
            return Err(ctx(format!(
                "segment starts at extent {}, expected {next_extent}",
                s.start_extent
            )));
        }
        next_extent = s
            .start_extent
            .checked_add(s.extent_count)
            .ok_or_else(|| ctx("extent count overflows".into()))?;
        let offset = s
            .start_extent
            .checked_mul(extent_bytes)
            .ok_or_else(|| ctx("offset overflows".into()))?;
        let size = s
            .extent_count
            .checked_mul(extent_bytes)
            .ok_or_else(|| ctx("size overflows".into()))?;
        let n = s.stripes.len() as u64;
        let striped = s.segment_type == "striped" && n > 0;
        let this_type = if !striped {
            s.segment_type.clone()
        } else if n == 1 {
            "linear".to_owned()
        } else {
            "striped".to_owned()
        };
        match &lv_type {
            None => lv_type = Some(this_type.clone()),
            Some(t) if *t != this_type && striped && (t == "linear" || t == "striped") => {
                lv_type = Some("striped".into())
            }
            _ => {}
        }
        let stripe_bytes = s
            .stripe_size
            .checked_mul(LVM_SECTOR)
            .ok_or_else(|| ctx("stripe_size overflows".into()))?;
        let mut stripes = Vec::new();
        let mut targets = Vec::new();
        for (pv_name, pe) in &s.stripes {
            let meta = m.pvs.iter().find(|p| p.name == *pv_name);
            let found = meta.and_then(|p| by_uuid.get(&plain(&p.id)).copied());
            let mut disk_offset = None;
            if let (Some(meta), Some(pv)) = (meta, found) {
                let per_stripe = s.extent_count / n.max(1);
                if pe
                    .checked_add(per_stripe)
                    .is_none_or(|end| end > meta.pe_count)
                {
                    return Err(ctx(format!(
                        "stripe on {pv_name} reaches past its {} extents",
                        meta.pe_count
                    )));
                }
                let start = meta
                    .pe_start
                    .checked_mul(LVM_SECTOR)
                    .and_then(|b| b.checked_add(pe.checked_mul(extent_bytes)?))
                    .ok_or_else(|| ctx("stripe offset overflows".into()))?;
                let len = per_stripe.saturating_mul(extent_bytes);
                if start.checked_add(len).is_none_or(|e| e > pv.device.size()) {
                    return Err(ctx(format!(
                        "stripe on {pv_name} reaches past the end of its device"
                    )));
                }
                disk_offset = Some(pv.offset + start);
                targets.push(Target {
                    device: Arc::clone(&pv.device),
                    offset: start,
                });
            } else if striped && problem.is_none() {
                problem = Some(Problem::Missing(format!(
                    "PV {} ({}) of LVM2 volume group {} holding LV {}",
                    pv_name,
                    meta.map_or_else(|| "not in the metadata".to_owned(), |p| dashed(&p.id)),
                    m.name,
                    lv.name
                )));
            }
            stripes.push(LvStripe {
                pv: pv_name.clone(),
                pv_uuid: meta.map(|p| dashed(&p.id)),
                disk: found.map(|p| p.disk),
                start_extent: *pe,
                disk_offset,
            });
        }
        if !striped {
            if problem.is_none() {
                problem = Some(Problem::Unsupported(format!(
                    "LVM2 segment type {:?} of LV {}/{} is not supported (only linear and striped LVs are read)",
                    s.segment_type, m.name, lv.name
                )));
            }
        } else {
            if s.extent_count % n != 0 {
                return Err(ctx(format!(
                    "{} extents do not divide over {n} stripes",
                    s.extent_count
                )));
            }
            let per_stripe_bytes = (s.extent_count / n).saturating_mul(extent_bytes);
            if n > 1 && (stripe_bytes == 0 || per_stripe_bytes % stripe_bytes != 0) {
                return Err(ctx(format!("stripe size {stripe_bytes} bytes does not divide a stripe of {per_stripe_bytes} bytes")));
            }
            if targets.len() as u64 == n {
                mapped.push(Mapped {
                    start: offset,
                    len: size,
                    stripe_bytes: if n == 1 { size } else { stripe_bytes },
                    targets,
                });
            }
        }
        segments.push(LvSegment {
            offset,
            size,
            segment_type: s.segment_type.clone(),
            stripe_size: (n > 1).then_some(stripe_bytes),
            stripes,
        });
    }
    let size = next_extent
        .checked_mul(extent_bytes)
        .ok_or_else(|| ctx("size overflows".into()))?;
    let unreadable = problem.as_ref().map(|p| match p {
        Problem::Unsupported(s) => s.clone(),
        Problem::Missing(s) => format!("missing {s}"),
    });
    Ok(LogicalVolume {
        vg: m.name.clone(),
        name: lv.name.clone(),
        uuid: dashed(&lv.id),
        size,
        lv_type: lv_type.unwrap_or_else(|| "empty".into()),
        segments,
        unreadable,
        device: Arc::new(LvDevice::new(size, mapped, problem)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_uuid_is_6_4_4_4_4_4_6() {
        assert_eq!(
            dashed("abcdefABCDEF0123456789abcdefABCD"),
            "abcdef-ABCD-EF01-2345-6789-abcd-efABCD"
        );
        assert_eq!(dashed("short"), "short");
    }
}
