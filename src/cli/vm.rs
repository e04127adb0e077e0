//! `diskimage vm CONFIG|DIR`: a VM's facts, disks, chains and snapshot
//! tree, and the flags that open a VM wherever the CLI takes IMAGE
//! (`--snapshot`, `--fallback`, `--allow-outside`, `--disk`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use diskimage::vm::{OpenedVm, StateFiles, Vm, VmOptions};
use diskimage::{BlockDevice, DiskImage, OpenOptions};
use serde_json::{json, Value};

use super::{CliError, OpenArgs};

/// How a VM given as IMAGE is opened.
#[derive(Debug, Args, Clone, Default)]
pub struct VmOpenArgs {
    /// For a VM: open the disks as of this snapshot (name or uid); for a
    /// QCOW2 image: its internal snapshot (ID or name).
    #[arg(long, value_name = "NAME|UID")]
    snapshot: Option<String>,
    /// For a VM: when the wanted state has missing files, open the newest
    /// complete state instead (with a warning).
    #[arg(long)]
    fallback: bool,
    /// For a VM: allow files outside the configuration's folder.
    #[arg(long)]
    allow_outside: bool,
    /// For a VM with several disks: the disk sector-level commands read
    /// (0-based, as `diskimage vm` numbers them).
    #[arg(long, value_name = "N")]
    disk: Option<usize>,
}

impl VmOpenArgs {
    /// `--snapshot`, for an image that is not a VM (a QCOW2 internal snapshot).
    pub fn image_snapshot(&self) -> Option<String> {
        self.snapshot.clone()
    }

    fn options(&self, open: OpenOptions) -> VmOptions {
        VmOptions::new()
            .open(open)
            .snapshot(self.snapshot.clone())
            .fallback(self.fallback)
            .allow_outside(self.allow_outside)
    }

    /// Opens the VM at `path` (warnings to stderr).
    fn open(&self, path: &Path, open: OpenOptions) -> Result<OpenedVm, CliError> {
        let vm = Vm::load(path)?;
        let opened = vm.open(&self.options(open))?;
        for w in &opened.warnings {
            eprintln!("diskimage: warning: {w}");
        }
        Ok(opened)
    }

    /// Every disk of the VM's state.
    pub fn all_disks(&self, path: &Path, open: OpenOptions) -> Result<Vec<DiskImage>, CliError> {
        let opened = self.open(path, open)?;
        Ok(opened.set.disks().iter().map(|d| d.image.clone()).collect())
    }

    /// The VM's only disk, or the one `--disk` names.
    pub fn one_disk(&self, path: &Path, open: OpenOptions) -> Result<DiskImage, CliError> {
        let mut disks = self.all_disks(path, open)?;
        let n = disks.len();
        match (self.disk, n) {
            (Some(i), _) if i < n => Ok(disks.swap_remove(i)),
            (Some(i), _) => Err(CliError::Usage(format!(
                "--disk {i}: the VM has {n} disks (0 to {})",
                n.saturating_sub(1)
            ))),
            (None, 1) => Ok(disks.swap_remove(0)),
            (None, _) => Err(CliError::Usage(format!(
                "the VM has {n} disks: choose one with --disk N (see `diskimage vm {}`)",
                path.display()
            ))),
        }
    }
}

/// Arguments of `vm`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// The VM: a .vmx/.vmtx, a .vbox, or a folder (Hyper-V, or holding one config).
    config: PathBuf,
    /// Print the documented JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

fn state_json(st: &StateFiles) -> Value {
    json!({
        "name": st.name,
        "uid": st.uid,
        "complete": st.complete(),
        "disks": st.disks.iter().map(|d| json!({
            "slot": d.slot,
            "top": d.top,
            "files": d.files,
            "problem": d.problem,
        })).collect::<Vec<_>>(),
    })
}

/// Runs `vm`.
pub fn run(args: &VmArgs) -> Result<(), CliError> {
    let vm = Vm::load(&args.config)?;
    let opts = args.open.vm.options(args.open.options());
    let states = vm.states(&opts)?;
    let (files, problems) = vm.dependencies(&opts)?;
    let wants_open = opts.snapshot.is_some() || opts.fallback;
    let opened = if wants_open {
        Some(args.open.vm.open(&args.config, args.open.options())?)
    } else {
        None
    };
    let f = &vm.facts;
    if args.json {
        let snapshot_json = |s: &diskimage::vm::Snapshot, st: Option<&StateFiles>| {
            json!({
                "uid": s.uid,
                "parent": s.parent,
                "name": s.name,
                "description": s.description,
                "created": s.created,
                "current": vm.current_snapshot.as_deref() == Some(s.uid.as_str()),
                "disks": s.disks.iter().map(|d| json!({"slot": d.slot, "file": d.file})).collect::<Vec<_>>(),
                "state": st.map(state_json),
            })
        };
        let v = json!({
            "config": vm.config,
            "kind": vm.kind.as_str(),
            "name": f.name,
            "guest_os": f.guest_os,
            "memory_mib": f.memory_mib,
            "cpus": f.cpus,
            "firmware": f.firmware,
            "uuid": f.uuid,
            "hardware_version": f.hardware_version,
            "encrypted": !f.encryption_keys.is_empty(),
            "disks": vm.disks.iter().enumerate().map(|(i, d)| json!({
                "index": i, "slot": d.slot, "file": d.file, "mode": d.mode,
            })).collect::<Vec<_>>(),
            "current": states.first().map(state_json),
            "current_snapshot": vm.current_snapshot,
            "snapshots": vm.snapshots.iter().zip(states.iter().skip(1))
                .map(|(s, st)| snapshot_json(s, Some(st))).collect::<Vec<_>>(),
            "files": files.iter().map(|f| json!({"path": f.path, "role": f.role})).collect::<Vec<_>>(),
            "problems": problems,
            "opened": opened.as_ref().map(|o| json!({
                "state": o.state.name,
                "uid": o.state.uid,
                "disk_sizes": o.set.disks().iter().map(|d| d.image.size()).collect::<Vec<_>>(),
                "warnings": o.warnings,
            })),
        });
        return write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    let mut o = String::new();
    let _ = writeln!(o, "{} ({})", vm.config.display(), vm.kind.as_str());
    fact(&mut o, "name", f.name.clone());
    fact(&mut o, "guest OS", f.guest_os.clone());
    fact(&mut o, "memory", f.memory_mib.map(|m| format!("{m} MiB")));
    fact(&mut o, "CPUs", f.cpus.map(|c| c.to_string()));
    fact(&mut o, "firmware", f.firmware.clone());
    fact(&mut o, "uuid", f.uuid.clone());
    fact(&mut o, "hardware version", f.hardware_version.clone());
    if !f.encryption_keys.is_empty() {
        let _ = writeln!(
            o,
            "  encrypted        yes: reading its disks is unsupported"
        );
    }
    let _ = writeln!(o, "disks:");
    for (i, d) in vm.disks.iter().enumerate() {
        let mode = d
            .mode
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let _ = writeln!(o, "  {i}  {:<10} {}{mode}", d.slot, d.file);
    }
    if let Some(cur) = states.first() {
        let mark = if cur.complete() { "" } else { " [incomplete]" };
        let _ = writeln!(o, "current state{mark}:");
        print_state(&mut o, cur, 0);
    }
    if !vm.snapshots.is_empty() {
        let _ = writeln!(o, "snapshots:");
        let roots: Vec<usize> = (0..vm.snapshots.len())
            .filter(|&i| {
                let s = &vm.snapshots[i];
                s.parent
                    .as_deref()
                    .is_none_or(|p| !vm.snapshots.iter().any(|o| o.uid == p))
            })
            .collect();
        let mut todo: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 1)).collect();
        let mut shown = 0;
        while let Some((i, depth)) = todo.pop() {
            shown += 1;
            if shown > vm.snapshots.len() {
                break;
            }
            let s = &vm.snapshots[i];
            let st = &states[i + 1];
            let pad = "  ".repeat(depth);
            let cur = if vm.current_snapshot.as_deref() == Some(s.uid.as_str()) {
                " (current)"
            } else {
                ""
            };
            let mark = if st.complete() { "" } else { " [incomplete]" };
            let _ = writeln!(
                o,
                "{pad}{} (uid {}){cur}{mark}  {}",
                s.name,
                s.uid,
                s.created.as_deref().unwrap_or("")
            );
            print_state(&mut o, st, depth * 2);
            for (j, c) in vm.snapshots.iter().enumerate().rev() {
                if c.parent.as_deref() == Some(s.uid.as_str()) {
                    todo.push((j, depth + 1));
                }
            }
        }
    }
    let _ = writeln!(o, "files:");
    for f in &files {
        let _ = writeln!(o, "  {:<26} {}", f.role, f.path.display());
    }
    for p in &problems {
        let _ = writeln!(o, "problem: {p}");
    }
    if let Some(op) = &opened {
        let _ = writeln!(o, "opened state: {}", op.state.name);
        for d in op.set.disks() {
            let _ = writeln!(o, "  disk {}: {} bytes", d.index, d.image.size());
        }
    }
    write_stdout(&o)
}

fn fact(o: &mut String, k: &str, v: Option<String>) {
    if let Some(v) = v {
        let _ = writeln!(o, "  {k:<17}{v}");
    }
}

fn print_state(o: &mut String, st: &StateFiles, indent: usize) {
    let pad = " ".repeat(indent);
    for d in &st.disks {
        let _ = match &d.problem {
            None => {
                let chain: Vec<String> = d.files.iter().map(|p| name_of(p)).collect();
                writeln!(o, "{pad}  {:<10} {}", d.slot, chain.join(" <- "))
            }
            Some(p) => writeln!(o, "{pad}  {:<10} INCOMPLETE: {p}", d.slot),
        };
    }
}

fn name_of(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `info --deps` for a VM: every file to copy, with its role.
pub fn print_dependencies(path: &Path, open: &OpenArgs, json: bool) -> Result<(), CliError> {
    let vm = Vm::load(path)?;
    let (files, problems) = vm.dependencies(&open.vm.options(open.options()))?;
    if json {
        let v = json!({
            "path": path,
            "dependencies": files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            "roles": files.iter().map(|f| json!({"path": f.path, "role": f.role})).collect::<Vec<_>>(),
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for f in &files {
            println!("{}\t{}", f.path.display(), f.role);
        }
        for p in &problems {
            eprintln!("diskimage: warning: {p}");
        }
    }
    Ok(())
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| CliError::output("<stdout>", e))
}
