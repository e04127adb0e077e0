//! `diskimage ls`: list a directory (or a whole tree) of a file system.

use clap::Args;
use diskimage::fs::{FileSystem, FileType, Metadata, Timestamp};
use serde_json::{json, Value};

use super::select::FsArgs;
use super::CliError;

/// Deepest directory nesting walked; deeper means a directory loop.
pub const MAX_DEPTH: usize = 256;

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

/// One listed entry.
pub struct Entry {
    /// The path inside the file system, from `/`.
    pub path: String,
    /// Its metadata.
    pub meta: Metadata,
    /// The link target of a symlink.
    pub target: Option<String>,
    /// Named streams (NTFS ADS).
    pub streams: Vec<String>,
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Calls `f` for each entry below `dir` (depth-first, sorted by name),
/// recursing when `recursive`. Errors of one entry are passed to `on_err`
/// and the walk goes on. A subdirectory whose inode is one of its own
/// ancestors (a directory loop in a damaged or hostile file system) is
/// listed but not entered, and reported to `on_err`.
pub fn walk(
    fs: &dyn FileSystem,
    dir: &str,
    recursive: bool,
    f: &mut dyn FnMut(Entry) -> Result<(), CliError>,
    on_err: &mut dyn FnMut(String, diskimage::fs::Error),
) -> Result<(), CliError> {
    let mut ancestors = root_ancestors(fs, dir);
    walk_dir(fs, dir, recursive, &mut ancestors, f, on_err)
}

fn walk_dir(
    fs: &dyn FileSystem,
    dir: &str,
    recursive: bool,
    ancestors: &mut Vec<u64>,
    f: &mut dyn FnMut(Entry) -> Result<(), CliError>,
    on_err: &mut dyn FnMut(String, diskimage::fs::Error),
) -> Result<(), CliError> {
    if let Some(e) = depth_error(fs, dir, ancestors) {
        on_err(dir.to_string(), e);
        return Ok(());
    }
    // One visit of the directory gives every entry's metadata, link target
    // and streams from the entry at hand (no lookup from the root per path).
    let mut entries: Vec<(String, Result<Entry, diskimage::fs::Error>, Option<_>)> = Vec::new();
    let visited = fs.visit_dir(dir, &mut |v| {
        match v {
            Err((name, err)) => entries.push((name.clone(), Err(err), None)),
            Ok(v) => {
                let path = join(dir, v.name());
                match v.metadata() {
                    Err(err) => entries.push((v.name().to_string(), Err(err), None)),
                    Ok(meta) => {
                        let (target, link_err) = if meta.file_type == FileType::Symlink {
                            match v.read_link() {
                                Ok(t) => (Some(t), None),
                                Err(err) => (None, Some(err)),
                            }
                        } else {
                            (None, None)
                        };
                        let streams = v.streams().unwrap_or_default();
                        let entry = Entry {
                            path,
                            meta,
                            target,
                            streams,
                        };
                        entries.push((v.name().to_string(), Ok(entry), link_err));
                    }
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if let Err(e) = visited {
        on_err(dir.to_string(), e);
        return Ok(());
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry, link_err) in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                on_err(join(dir, &name), err);
                continue;
            }
        };
        if let Some(err) = link_err {
            on_err(entry.path.clone(), err);
        }
        let is_dir = entry.meta.file_type == FileType::Directory;
        let inode = entry.meta.inode;
        let path = entry.path.clone();
        f(entry)?;
        if !(recursive && is_dir) {
            continue;
        }
        if let Some(e) = loop_error(fs, &path, inode, ancestors) {
            on_err(path.clone(), e);
            continue;
        }
        ancestors.push(ancestor_key(inode));
        let walked = walk_dir(fs, &path, true, ancestors, f, on_err);
        ancestors.pop();
        walked?;
    }
    Ok(())
}

/// The ancestors a walk from `dir` starts with: `dir` itself (its
/// [`ancestor_key`]), so a walk's depth is one less than its ancestors.
pub fn root_ancestors(fs: &dyn FileSystem, dir: &str) -> Vec<u64> {
    vec![ancestor_key(fs.metadata(dir).ok().and_then(|m| m.inode))]
}

/// The error for the directory `dir` when its `ancestors` (itself
/// included) put it deeper than [`MAX_DEPTH`] below the walk's start.
pub fn depth_error(
    fs: &dyn FileSystem,
    dir: &str,
    ancestors: &[u64],
) -> Option<diskimage::fs::Error> {
    (ancestors.len() > MAX_DEPTH + 1).then(|| {
        diskimage::fs::Error::limit(
            fs_name(fs),
            Some(dir),
            format!("nesting deeper than {MAX_DEPTH} directories (a directory loop?)"),
        )
    })
}

/// What a directory adds to the ancestors of its subdirectories: its
/// inode, or a key no inode has (without an inode number, the depth bound
/// stops a loop).
pub fn ancestor_key(inode: Option<u64>) -> u64 {
    inode.unwrap_or(u64::MAX)
}

/// The error for the directory `path` with `inode` when that inode is one
/// of its `ancestors` (a directory loop, which a walk must not enter).
pub fn loop_error(
    fs: &dyn FileSystem,
    path: &str,
    inode: Option<u64>,
    ancestors: &[u64],
) -> Option<diskimage::fs::Error> {
    let i = inode.filter(|i| ancestors.contains(i))?;
    Some(diskimage::fs::Error::corrupt(
        fs_name(fs),
        Some(path),
        format!("directory loop: inode {i} is this directory's own ancestor; not entered"),
    ))
}

fn fs_name(fs: &dyn FileSystem) -> diskimage::fs::FsName {
    use diskimage::fs::{FsKind, FsName};
    match fs.kind() {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => FsName::Ext,
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => FsName::Fat,
        FsKind::Ntfs => FsName::Ntfs,
        _ => FsName::Iso9660,
    }
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
    let mut on_err = |p: String, e: diskimage::fs::Error| {
        failed += 1;
        eprintln!("diskimage: {p}: {e}");
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
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} entries could not be read"
        )));
    }
    Ok(())
}
