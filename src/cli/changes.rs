//! `diskimage changes VM --from STATE [--to STATE] [--json] [--files]`:
//! the byte runs of each disk that may differ between two states of a VM
//! (from the deltas' allocation maps) and, with `--files`, the files
//! added, removed and changed on each volume.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use diskimage::changes::{self, ChangeOptions, DiskChanges, FileChange, FileFacts, VolumeChanges};
use diskimage::vm::Vm;
use diskimage::OpenOptions;
use serde_json::{json, Value};

use super::ls::time_str;
use super::CliError;

/// Arguments of `changes`.
#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// The VM: a .vmx/.vmtx, a .vbox, or a folder (Hyper-V, or holding one config).
    config: PathBuf,
    /// The older state: a snapshot's name or uid, or `current`.
    #[arg(long, value_name = "STATE")]
    from: String,
    /// The newer state (default: `current`).
    #[arg(long, value_name = "STATE")]
    to: Option<String>,
    /// Also list the files added, removed and changed on each volume.
    #[arg(long)]
    files: bool,
    /// With --files: do not read files whose size is the same on both sides
    /// (they count as changed only when their mtime differs).
    #[arg(long)]
    no_content: bool,
    /// Print the documented JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Allow files outside the configuration's folder.
    #[arg(long)]
    allow_outside: bool,
    /// Refuse recoverable damage (bad checksums ...) instead of warning.
    #[arg(long)]
    strict: bool,
    /// Read through a read-only memory map instead of pread.
    #[arg(long)]
    mmap: bool,
}

fn state_json(vm: &Vm, name: &str) -> Value {
    if name.trim().eq_ignore_ascii_case("current") {
        return json!({ "name": "current", "uid": null });
    }
    match vm.find_snapshot(name) {
        Ok(s) => json!({ "name": s.name, "uid": s.uid }),
        Err(_) => json!({ "name": name, "uid": null }),
    }
}

fn disk_json(d: &DiskChanges) -> Value {
    json!({
        "slot": d.slot,
        "from_top": d.from_top,
        "to_top": d.to_top,
        "from_size": d.from_size,
        "to_size": d.to_size,
        "shared": d.shared,
        "from_layers": d.from_layers,
        "to_layers": d.to_layers,
        "whole_disk": d.whole_disk,
        "note": d.note,
        "changed_bytes": d.changed_bytes(),
        "runs": d.runs.iter().map(|r| json!({ "offset": r.offset, "length": r.length })).collect::<Vec<_>>(),
    })
}

fn facts_json(f: &FileFacts) -> Value {
    json!({
        "type": f.file_type.as_str(),
        "size": f.size,
        "modified": time_str(f.modified),
        "sha256": f.sha256,
        "target": f.target,
    })
}

fn change_json(c: &FileChange) -> Value {
    json!({
        "change": c.change.as_str(),
        "path": c.path,
        "what": c.what,
        "from": c.from.as_ref().map(facts_json),
        "to": c.to.as_ref().map(facts_json),
    })
}

fn volume_json(v: &VolumeChanges) -> Value {
    json!({
        "slot": v.slot,
        "offset": v.offset,
        "guid": v.guid,
        "from_volume": v.from_volume,
        "to_volume": v.to_volume,
        "fs": v.fs,
        "walked": v.walked,
        "note": v.note,
        "problems": v.problems,
        "changes": v.changes.iter().map(change_json).collect::<Vec<_>>(),
    })
}

fn volume_title(v: &VolumeChanges) -> String {
    let number = match (v.from_volume, v.to_volume) {
        (Some(a), Some(b)) if a == b => format!("volume {a}"),
        (Some(a), Some(b)) => format!("volume {a} -> {b}"),
        (Some(a), None) => format!("volume {a} (from)"),
        (None, Some(b)) => format!("volume {b} (to)"),
        (None, None) => "volume".into(),
    };
    let place = match (&v.slot, v.offset, &v.guid) {
        (Some(s), _, Some(g)) => format!("{s} {g}"),
        (Some(s), Some(o), None) => format!("{s} offset {o}"),
        (None, _, Some(g)) => format!("LV {g}"),
        _ => "-".into(),
    };
    format!(
        "{number}: {place}, {}",
        v.fs.as_deref().unwrap_or("no file system")
    )
}

fn change_line(c: &FileChange) -> String {
    let f = c.facts();
    let t = f
        .and_then(|f| f.modified)
        .map_or("-".to_string(), |t| format!("{}.{:09}", t.secs, t.nanos));
    let what = if c.what.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.what.join(", "))
    };
    format!(
        "  {:<8} {:<7} {:>12} {:>20} {}{what}",
        c.change.as_str(),
        f.map_or("-", |f| f.file_type.as_str()),
        f.map_or(0, |f| f.size),
        t,
        c.path
    )
}

/// Runs `changes`.
pub fn run(args: &ChangesArgs) -> Result<(), CliError> {
    let vm = Vm::load(&args.config)?;
    let opts = ChangeOptions::new()
        .open(OpenOptions::new().strict(args.strict).mmap(args.mmap))
        .allow_outside(args.allow_outside)
        .compare_content(!args.no_content);
    let to = args.to.as_deref().unwrap_or("current");
    let disks = changes::areas_of(&vm, &args.from, to, &opts)?;
    let volumes = if args.files {
        Some(changes::files_of(&vm, &args.from, to, &opts)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write = |s: String| writeln!(out, "{s}").map_err(|e| CliError::output("<stdout>", e));
    if args.json {
        let mut doc = json!({
            "vm": args.config,
            "from": state_json(&vm, &args.from),
            "to": state_json(&vm, to),
            "disks": disks.iter().map(disk_json).collect::<Vec<_>>(),
        });
        if let Some(v) = &volumes {
            doc["volumes"] = v.iter().map(volume_json).collect();
        }
        write(serde_json::to_string_pretty(&doc).unwrap_or_default())?;
    } else {
        for d in &disks {
            let top = |p: &Option<PathBuf>| {
                p.as_ref()
                    .map_or("(absent)".to_string(), |p| p.display().to_string())
            };
            write(format!(
                "disk {}: {} -> {}: {} run(s), {} bytes",
                d.slot,
                top(&d.from_top),
                top(&d.to_top),
                d.runs.len(),
                d.changed_bytes()
            ))?;
            if let Some(n) = &d.note {
                write(format!("  note: {n}"))?;
            }
            if !d.runs.is_empty() {
                write(format!("  {:>18} {:>18}", "offset", "length"))?;
            }
            for r in &d.runs {
                write(format!("  {:#18x} {:#18x}", r.offset, r.length))?;
            }
        }
        for v in volumes.iter().flatten() {
            write(volume_title(v))?;
            if let Some(n) = &v.note {
                write(format!("  note: {n}"))?;
            }
            for c in &v.changes {
                write(change_line(c))?;
            }
            for p in &v.problems {
                write(format!("  problem: {p}"))?;
            }
        }
    }
    out.flush().map_err(|e| CliError::output("<stdout>", e))
}
