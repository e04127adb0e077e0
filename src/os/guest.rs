//! A guest's file tree as the guest sees it: file systems mounted at
//! their in-guest paths (`/`, `/usr`, ...), with symbolic links followed
//! across them (a bounded number of times).

use std::io::Read;

use diskimage_fs::{FileSystem, FileType};

/// Most symbolic links followed while resolving one path (Linux's limit).
pub const MAX_LINKS: u32 = 40;
/// Largest file read for OS detection (hives are the big ones).
pub const MAX_FILE: u64 = super::regf::MAX_HIVE_SIZE;

/// File systems mounted at in-guest paths.
pub struct Guest {
    mounts: Vec<(String, Box<dyn FileSystem>)>,
}

impl Guest {
    /// A guest whose root is `root`.
    pub fn new(root: Box<dyn FileSystem>) -> Self {
        Guest {
            mounts: vec![("/".to_owned(), root)],
        }
    }

    /// Mounts `fs` at `path` (an absolute path: `/usr`).
    pub fn mount(&mut self, path: &str, fs: Box<dyn FileSystem>) {
        let path = format!("/{}", path.trim_matches('/'));
        self.mounts.push((path, fs));
    }

    /// The file system holding `path` (longest mount prefix) and the path
    /// inside it.
    fn locate(&self, path: &str) -> Option<(&dyn FileSystem, String)> {
        let (prefix, fs) = self
            .mounts
            .iter()
            .filter(|(p, _)| {
                p == "/"
                    || path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|(p, _)| p.len())?;
        let inner = if prefix == "/" {
            path.to_owned()
        } else {
            path.get(prefix.len()..).unwrap_or("").to_owned()
        };
        let inner = if inner.is_empty() { "/".into() } else { inner };
        Some((fs.as_ref(), inner))
    }

    /// `path` with every symbolic link in it followed, across mounts.
    pub fn resolve(&self, path: &str) -> Result<String, String> {
        let mut todo: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(c),
            }
            let here = format!("/{}", done.join("/"));
            let (fs, inner) = self
                .locate(&here)
                .ok_or_else(|| format!("{here}: no file system mounted there"))?;
            let meta = fs.metadata(&inner).map_err(|e| format!("{here}: {e}"))?;
            if meta.file_type == FileType::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "{path}: more than {MAX_LINKS} symbolic links (a loop?)"
                    ));
                }
                let target = fs.read_link(&inner).map_err(|e| format!("{here}: {e}"))?;
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').rev().filter(|t| !t.is_empty()) {
                    todo.push_front(t.to_owned());
                }
            }
        }
        Ok(format!("/{}", done.join("/")))
    }

    /// Whether `path` exists (itself, a link not followed).
    pub fn exists(&self, path: &str) -> bool {
        self.locate(path)
            .is_some_and(|(fs, inner)| fs.metadata(&inner).is_ok())
    }

    /// The bytes of the file at `path` (links followed), refusing files
    /// over `max` bytes.
    pub fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        let (fs, inner, real, size) = self.regular(path)?;
        if size > max {
            return Err(format!(
                "{real}: {size} bytes, more than the {max} read for OS detection"
            ));
        }
        read_up_to(fs, &inner, &real, max)
    }

    /// The first `n` bytes of the regular file at `path` (links followed),
    /// whatever its size: enough for a header.
    pub fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>, String> {
        let (fs, inner, real, _) = self.regular(path)?;
        read_up_to(fs, &inner, &real, n)
    }

    /// The regular file at `path` (links followed): its file system, its
    /// path there, its resolved path and its size.
    fn regular(&self, path: &str) -> Result<(&dyn FileSystem, String, String, u64), String> {
        let real = self.resolve(path)?;
        let (fs, inner) = self
            .locate(&real)
            .ok_or_else(|| format!("{real}: no file system mounted there"))?;
        let meta = fs.metadata(&inner).map_err(|e| format!("{real}: {e}"))?;
        if meta.file_type != FileType::File {
            return Err(format!("{real}: not a regular file"));
        }
        Ok((fs, inner, real, meta.size))
    }

    /// The names in the directory at `path` (links followed), sorted.
    pub fn list(&self, path: &str) -> Result<Vec<String>, String> {
        let real = self.resolve(path)?;
        let (fs, inner) = self
            .locate(&real)
            .ok_or_else(|| format!("{real}: no file system mounted there"))?;
        let mut names: Vec<String> = fs
            .read_dir(&inner)
            .map_err(|e| format!("{real}: {e}"))?
            .map(|e| e.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The file at `path` as text (lossy UTF-8), for small config files.
    pub fn read_text(&self, path: &str) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.read(path, 1 << 20)?).into_owned())
    }
}

/// At most `n` bytes from the start of `inner` in `fs` (`real` names it
/// in errors).
fn read_up_to(fs: &dyn FileSystem, inner: &str, real: &str, n: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    fs.open(inner)
        .map_err(|e| format!("{real}: {e}"))?
        .take(n)
        .read_to_end(&mut out)
        .map_err(|e| format!("{real}: {e}"))?;
    Ok(out)
}
