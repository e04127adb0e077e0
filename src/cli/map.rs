//! `diskimage map`: the allocation map, coalesced.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use diskimage::{BlockDevice, Extent, ExtentKind};
use serde_json::json;

use super::extents::for_each_extent;
use super::{CliError, OpenArgs};

/// Arguments of `map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// The image.
    image: PathBuf,
    /// Print the documented JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

fn depth(kind: ExtentKind) -> Option<u32> {
    match kind {
        ExtentKind::Parent { depth } => Some(depth),
        _ => None,
    }
}

/// Runs `map`.
pub fn run(args: &MapArgs) -> Result<(), CliError> {
    let image = args.open.open(&args.image)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let write = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|e| CliError::output("<stdout>", e))
    };
    if args.json {
        let mut extents = Vec::new();
        for_each_extent(&image, |e: Extent| {
            let mut v = json!({ "offset": e.offset, "length": e.len, "kind": e.kind.as_str() });
            if let Some(d) = depth(e.kind) {
                v["depth"] = json!(d);
            }
            extents.push(v);
            Ok(())
        })?;
        let doc = json!({ "path": args.image, "size": image.size(), "extents": extents });
        write(
            &mut out,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )?;
    } else {
        write(&mut out, format!("{:>18} {:>18}  kind", "offset", "length"))?;
        for_each_extent(&image, |e| {
            let kind = match depth(e.kind) {
                Some(d) => format!("parent (depth {d})"),
                None => e.kind.as_str().to_owned(),
            };
            write(
                &mut out,
                format!("{:#18x} {:#18x}  {kind}", e.offset, e.len),
            )
        })?;
    }
    out.flush().map_err(|e| CliError::output("<stdout>", e))
}
