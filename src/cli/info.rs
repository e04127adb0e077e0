//! `diskimage info`: what an image is, what it is made of, what was tolerated.

use std::path::PathBuf;

use clap::Args;
use diskimage::fs::{detect, FsInfo};
use diskimage::ImageInfo;
use serde_json::{json, Value};

use super::{CliError, OpenArgs};

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The image (disk image, VMDK descriptor, split raw first part ...).
    image: PathBuf,
    /// Print the documented JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// List every file the image needs (extents, parents), one per line
    /// (`{"dependencies": [...]}` with --json), without reading data where
    /// the format allows: what to copy off a datastore.
    #[arg(long)]
    deps: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// Runs `info`.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    if args.deps && diskimage::vm::is_vm_path(&args.image) {
        return super::vm::print_dependencies(&args.image, &args.open, args.json);
    }
    if args.deps {
        let files = diskimage::formats::dependencies(&args.image, &args.open.options())?;
        if args.json {
            let v = json!({ "path": args.image, "dependencies": files });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            for f in files {
                println!("{}", f.display());
            }
        }
        return Ok(());
    }
    let image = args.open.open(&args.image)?;
    let content = detect(&image)?;
    if args.json {
        let mut v = to_json(image.info());
        v["content"] = content.as_ref().map_or(Value::Null, content_json);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_text(image.info(), content.as_ref(), 0);
    }
    Ok(())
}

fn content_json(c: &FsInfo) -> Value {
    json!({ "kind": c.kind.as_str(), "label": c.label, "uuid": c.uuid })
}

/// The `info --json` object of one image (its parent nested under `parent`).
pub fn to_json(info: &ImageInfo) -> Value {
    let properties: serde_json::Map<String, Value> = info
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "path": info.path,
        "format": info.format.as_str(),
        "subformat": info.subformat,
        "size": info.size,
        "sector_size": info.sector_size,
        "files": info.files,
        "properties": properties,
        "warnings": info.warnings.iter().map(|w| json!({
            "kind": w.kind.as_str(),
            "path": w.path,
            "offset": w.offset,
            "message": w.message,
        })).collect::<Vec<_>>(),
        "parent": info.parent.as_deref().map_or(Value::Null, to_json),
    })
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_text(info: &ImageInfo, content: Option<&FsInfo>, depth: usize) {
    let pad = "  ".repeat(depth);
    println!("{pad}path:         {}", info.path.display());
    match &info.subformat {
        Some(s) => println!("{pad}format:       {} ({s})", info.format),
        None => println!("{pad}format:       {}", info.format),
    }
    println!(
        "{pad}virtual size: {} bytes ({})",
        info.size,
        human_size(info.size)
    );
    println!("{pad}sector size:  {}", info.sector_size);
    for (i, f) in info.files.iter().enumerate() {
        let label = if i == 0 { "files:" } else { "" };
        println!("{pad}{label:<14}{}", f.display());
    }
    if let Some(c) = content {
        let mut line = c.kind.as_str().to_owned();
        if let Some(l) = &c.label {
            line.push_str(&format!(" label {l:?}"));
        }
        if let Some(u) = &c.uuid {
            line.push_str(&format!(" uuid {u}"));
        }
        println!("{pad}content:      {line} (whole disk)");
    }
    for (k, v) in &info.properties {
        println!("{pad}{:<13} {v}", format!("{k}:"));
    }
    for w in &info.warnings {
        println!("{pad}warning:      [{}] {w}", w.kind.as_str());
    }
    if let Some(parent) = &info.parent {
        println!("{pad}parent:");
        print_text(parent, None, depth + 1);
    }
}
