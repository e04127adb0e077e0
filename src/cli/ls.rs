//! `diskimage ls`: list a directory (or a whole tree) of a file system.

use clap::Args;
use diskimage::fs::{FileSystem, FileType, Timestamp};
use diskimage::walk::{Entry, Walk, WalkError};
use serde_json::{json, Value};

use super::select::FsArgs;
use super::CliError;

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// List the whole tree below PATH.
    #[arg(short, long)]
    recursive: bool,
    /// Long listing: type, mode, size, modification time.
    #[arg(short, long)]
    long: bool,
    /// One JSON array of entries with all metadata.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    fs: FsArgs,
}

/// Lists `dir` (or, with `recursive`, its whole tree) with the library's
/// [`Walk`]: each entry goes to `f`, each path that cannot be read to
/// `on_err`, and the walk goes on.
pub fn walk(
    fs: &dyn FileSystem,
    dir: &str,
    recursive: bool,
    f: &mut dyn FnMut(Entry) -> Result<(), CliError>,
    on_err: &mut dyn FnMut(WalkError),
) -> Result<(), CliError> {
    let walk = if recursive {
        Walk::new(fs, dir)?
    } else {
        Walk::list(fs, dir)?
    };
    for item in walk {
        match item {
            Ok(entry) => f(entry)?,
            Err(e) => on_err(e),
        }
    }
    Ok(())
}

/// A time as `SECONDS.NANOSECONDS` (full precision, sortable as text per sign).
pub fn time_str(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(format!("{}.{:09}", t.secs, t.nanos))
    })
}

/// The JSON object of one entry.
pub fn entry_json(e: &Entry) -> Value {
    let m = &e.meta;
    json!({
        "path": e.path,
        "type": m.file_type.as_str(),
        "size": m.size,
        "allocated": m.allocated,
        "mode": m.mode.map(|x| format!("{x:o}")),
        "uid": m.uid,
        "gid": m.gid,
        "nlink": m.nlink,
        "inode": m.inode,
        "created": time_str(m.created),
        "modified": time_str(m.modified),
        "accessed": time_str(m.accessed),
        "changed": time_str(m.changed),
        "target": e.target,
        "streams": e.streams,
    })
}

/// Runs `ls`.
pub fn run(args: &LsArgs) -> Result<(), CliError> {
    let (fs, path) = args.fs.open_fs(false)?;
    let seen = fs.warnings().len();
    let mut out: Vec<Value> = Vec::new();
    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    let meta = fs.metadata(&path)?;
    let mut print = |e: Entry| -> Result<(), CliError> {
        use std::io::Write;
        if args.json {
            out.push(entry_json(&e));
            return Ok(());
        }
        let name = if args.recursive {
            e.path.clone()
        } else {
            e.path.rsplit('/').next().unwrap_or_default().to_string()
        };
        let line = if args.long {
            let m = &e.meta;
            let t = m
                .modified
                .map_or("-".to_string(), |t| format!("{}.{:09}", t.secs, t.nanos));
            let link = e
                .target
                .as_ref()
                .map_or(String::new(), |t| format!(" -> {t}"));
            format!(
                "{:<7} {:>7} {:>12} {:>20} {name}{link}",
                m.file_type.as_str(),
                m.mode.map_or("-".into(), |x| format!("{x:o}")),
                m.size,
                t
            )
        } else {
            name
        };
        writeln!(stdout, "{line}").map_err(|e| CliError::output("stdout", e))
    };
    let mut on_err = |e: WalkError| {
        failed += 1;
        eprintln!("diskimage: {e}");
    };
    if meta.file_type == FileType::Directory {
        walk(fs.as_ref(), &path, args.recursive, &mut print, &mut on_err)?;
    } else {
        let target = fs.read_link(&path).ok();
        let streams = fs.streams(&path).unwrap_or_default();
        print(Entry {
            path: path.clone(),
            meta,
            target,
            streams,
        })?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    super::select::print_fs_warnings_after(fs.as_ref(), seen);
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} entries could not be read"
        )));
    }
    Ok(())
}
