//! `diskimage volumes`: every volume across a disk set, with its type,
//! position, name, GUID and file system (see README's JSON schema).

use std::path::PathBuf;

use clap::Args;
use diskimage::diskset::{DiskSet, Volume};
use diskimage::volume::lvm2::VolumeGroup;
use serde_json::{json, Value};

use super::{CliError, OpenArgs};

/// Arguments of `volumes`.
#[derive(Debug, Args)]
pub struct VolumesArgs {
    /// The disk images of the set (an LVM volume group may span several).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print the documented JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// Runs `volumes`.
pub fn run(args: &VolumesArgs) -> Result<(), CliError> {
    let images = args.open.open_all(&args.images)?;
    let set = DiskSet::from_images(images, &args.open.options())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&set)).unwrap_or_default()
        );
    } else {
        print_text(&set);
    }
    Ok(())
}

fn volume_json(v: &Volume) -> Value {
    let lv = v.lv.as_ref().map_or(Value::Null, |lv| {
        json!({
            "vg": lv.vg,
            "name": lv.name,
            "uuid": lv.uuid,
            "type": lv.lv_type,
            "segments": lv.segments.iter().map(|s| json!({
                "offset": s.offset,
                "size": s.size,
                "type": s.segment_type,
                "stripe_size": s.stripe_size,
                "stripes": s.stripes.iter().map(|st| json!({
                    "pv": st.pv,
                    "pv_uuid": st.pv_uuid,
                    "disk": st.disk,
                    "start_extent": st.start_extent,
                    "disk_offset": st.disk_offset,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "index": v.index,
        "disk": v.disk,
        "offset": v.offset,
        "size": v.size,
        "scheme": v.scheme.as_str(),
        "number": v.number,
        "partition_kind": v.partition_kind.map(|k| k.as_str()),
        "type": v.type_code,
        "type_name": v.type_name,
        "name": v.name,
        "guid": v.guid,
        "attributes": v.attributes,
        "bootable": v.bootable,
        "fs": v.fs.as_ref().map_or(Value::Null, |f| json!({
            "kind": f.kind.as_str(), "label": f.label, "uuid": f.uuid,
        })),
        "mountable": v.mountable,
        "lv": lv,
        "problem": v.problem,
        "member": v.member.as_ref().map_or(Value::Null, |m| json!({
            "devid": m.devid,
            "devices": m.devices,
            "members": m.members.iter().map(|(d, i)| json!({"devid": d, "volume": i}))
                .collect::<Vec<_>>(),
        })),
    })
}

fn vg_json(vg: &VolumeGroup) -> Value {
    json!({
        "name": vg.name,
        "uuid": vg.uuid,
        "seqno": vg.seqno,
        "extent_size": vg.extent_size,
        "complete": vg.complete(),
        "pvs": vg.pvs.iter().map(|p| json!({
            "name": p.name, "uuid": p.uuid, "device_hint": p.device_hint,
            "disk": p.disk, "offset": p.offset,
        })).collect::<Vec<_>>(),
        "missing_pvs": vg.missing,
        "lvs": vg.lvs.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
    })
}

/// The `volumes --json` object of a set.
pub fn to_json(set: &DiskSet) -> Value {
    json!({
        "disks": set.disks().iter().map(|d| json!({
            "index": d.index,
            "path": d.path,
            "size": d.image.info().size,
            "sector_size": d.image.info().sector_size,
            "scheme": d.table.scheme.map(|s| s.as_str()),
            "disk_id": d.table.disk_id,
        })).collect::<Vec<_>>(),
        "volumes": set.volumes().iter().map(volume_json).collect::<Vec<_>>(),
        "volume_groups": set.volume_groups().iter().map(vg_json).collect::<Vec<_>>(),
        "warnings": set.warnings().iter().map(|w| json!({
            "kind": w.kind.as_str(), "disk": w.disk, "message": w.message,
        })).collect::<Vec<_>>(),
    })
}

fn print_text(set: &DiskSet) {
    for d in set.disks() {
        println!(
            "disk {}: {} ({} bytes, {}{})",
            d.index,
            d.path.display(),
            d.image.info().size,
            d.table.scheme.map_or("no partition table", |s| s.as_str()),
            d.table
                .disk_id
                .as_ref()
                .map(|i| format!(" {i}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{:>3} {:>4} {:>14} {:>14}  {:<10} {:<24} {:<10} {:<16} name",
        "vol", "disk", "offset", "size", "scheme", "type", "fs", "label"
    );
    for v in set.volumes() {
        let fs = v.fs.as_ref();
        println!(
            "{:>3} {:>4} {:>14} {:>14}  {:<10} {:<24} {:<10} {:<16} {}{}",
            v.index,
            v.disk.map_or("-".into(), |d| d.to_string()),
            v.offset.map_or("-".into(), |o| o.to_string()),
            v.size,
            v.scheme.as_str(),
            v.type_name.as_deref().unwrap_or("-"),
            fs.map_or("-", |f| f.kind.as_str()),
            fs.and_then(|f| f.label.as_deref()).unwrap_or("-"),
            v.name.as_deref().unwrap_or(""),
            v.problem
                .as_ref()
                .map(|p| format!("  ({p})"))
                .or_else(|| v.member.as_ref().map(|m| format!(
                    "  (device {} of {}, read through volume {})",
                    m.devid,
                    m.devices,
                    m.members.first().map_or(v.index, |f| f.1)
                )))
                .unwrap_or_default(),
        );
    }
    for vg in set.volume_groups() {
        if !vg.complete() {
            println!(
                "volume group {} incomplete: missing PV {}",
                vg.name,
                vg.missing.join(", ")
            );
        }
    }
    for w in set.warnings() {
        println!("warning: [{}] {}", w.kind.as_str(), w.message);
    }
}
