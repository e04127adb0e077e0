//! Btrfs, read by our own layer.
//!
//! Its modules: `superblock` (the primary at 64 KiB, or the first good
//! mirror at 64 MiB or 256 GiB, with a warning), `devices` (the devices
//! of a file system spread over several, matched by file system UUID,
//! device id and device UUID), `chunk` (the logical to physical map from
//! the system chunk array and the chunk tree: single, DUP, RAID0, RAID1,
//! RAID1C3/C4 and RAID10 across the devices given; RAID5/6 chunks are
//! [`Unsupported`](crate::ErrorKind::Unsupported), naming the profile),
//! `tree` (tree blocks checked and searched), `items`, `extent` (inline,
//! regular, holes, preallocated ranges as zeros) and `compress` (zlib by
//! `flate2`, LZO by our own `lzo` decoder, zstd by
//! `diskimage_formats::zstd`).
//!
//! A file system over several devices is opened from one of them with the
//! others in [`FsOptions::devices`] (a disk set groups them:
//! `DiskSet::mount` in the `diskimage` crate). A device of the file system
//! missing from those given is a warning that says whether every chunk
//! still has a copy: reads take a mirror on a device present, and a read
//! with no copy present fails naming the device ("device N of the file
//! system is not in the disk set"). The device with the newest superblock
//! gives the tree roots.
//!
//! The root directory is the default subvolume (`btrfs subvolume
//! set-default`, else the top level), as a mount without `subvol=` shows
//! it; [`BtrfsFs::open_subvolume`] opens another. Subvolumes below it are
//! directories, entered as the kernel enters them; a subvolume the kernel
//! cannot reach from there (one nested in the source of a snapshot) is the
//! same empty directory, inode 2, that the kernel shows.
//!
//! Checksums (crc32c) of the superblock, tree blocks (each mirror tried)
//! and file data are checked: a mismatch is a warning
//! ([`FileSystem::warnings`]), strict mode ([`FsOptions::strict`]) an
//! error. Other checksum types (xxhash64, sha256, blake2b) are not
//! checked, with a warning.
//!
//! Inode numbers are those of their subvolume (every subvolume's root
//! directory is 256), as `stat` shows them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use diskimage_formats::BlockDevice;

use crate::error::{Error, FsName, Result};
use crate::file_system::{
    components, decode_name, encode_name, join, DirEntry, FileReader, FileSystem, FileType,
    Metadata, ReadDir, StoredRun, VisitFn, Visited,
};
use crate::options::FsOptions;
use crate::FsKind;

mod chunk;
mod compress;
mod devices;
mod extent;
mod items;
mod lzo;
mod superblock;
mod tree;

pub use devices::{device_info, DeviceInfo};
use extent::{ExtentReader, Placed};
use items::{InodeItem, Key, RootItem};
use tree::{Root, Volume};

const FS: FsName = FsName::Btrfs;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Longest symbolic link target read.
const MAX_LINK: u64 = 64 << 10;

/// A Btrfs file system, one subvolume at its root.
pub struct BtrfsFs {
    vol: Volume,
    root_tree: Root,
    csum_tree: Option<Root>,
    /// The subvolume shown as `/`.
    top: u64,
    /// Tree roots and root directories of subvolumes, by id.
    roots: RefCell<HashMap<u64, (Root, u64)>>,
}

/// What a path names.
#[derive(Debug, Clone)]
enum Node {
    /// An inode of a subvolume's tree.
    Inode {
        tree: u64,
        ino: u64,
        item: InodeItem,
    },
    /// The kernel's empty stand-in for a subvolume not reachable here.
    EmptySubvol,
}

impl BtrfsFs {
    /// Opens the Btrfs volume on `device` at its default subvolume (a
    /// volume on one device; see [`BtrfsFs::open_with`] for several).
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(device, &FsOptions::default())
    }

    /// [`BtrfsFs::open`] with `options`: strict mode refuses bad
    /// checksums (and a missing device); [`FsOptions::devices`] gives the
    /// other devices of a volume spread over several.
    pub fn open_with(device: Arc<dyn BlockDevice>, options: &FsOptions) -> Result<Self> {
        let mut fs = Self::open_volume(device, options)?;
        fs.top = fs.default_subvolume()?;
        fs.tree(fs.top)?;
        Ok(fs)
    }

    /// Opens the subvolume at `path` from the top level (what `mount -o
    /// subvol=PATH` mounts; `/` is the top level itself).
    pub fn open_subvolume(
        device: Arc<dyn BlockDevice>,
        options: &FsOptions,
        path: &str,
    ) -> Result<Self> {
        let mut fs = Self::open_volume(device, options)?;
        fs.top = items::FS_TREE;
        match fs.lookup(path)? {
            Node::Inode { tree, ino, .. } if fs.tree(tree)?.1 == ino => {
                fs.top = tree;
                Ok(fs)
            }
            _ => Err(Error::wrong_type(FS, path, "not a subvolume")),
        }
    }

    /// Opens the subvolume with id `id` (5: the top level), as `mount -o
    /// subvolid=ID`.
    pub fn open_subvolume_id(
        device: Arc<dyn BlockDevice>,
        options: &FsOptions,
        id: u64,
    ) -> Result<Self> {
        let mut fs = Self::open_volume(device, options)?;
        fs.tree(id)?;
        fs.top = id;
        Ok(fs)
    }

    /// The id of the subvolume shown as `/`.
    pub fn subvolume_id(&self) -> u64 {
        self.top
    }

    fn open_volume(device: Arc<dyn BlockDevice>, options: &FsOptions) -> Result<Self> {
        let mut warnings = Vec::new();
        let sb = superblock::read(device.as_ref(), options.strict, &mut warnings)?;
        let unknown = sb.unknown_incompat();
        if unknown != 0 {
            return Err(Error::unsupported(
                FS,
                None,
                format!(
                    "incompat features {unknown:#x} (extent tree v2, RAID stripe tree or newer)"
                ),
            ));
        }
        let g = devices::gather(device, sb, &options.devices.0, options.strict)?;
        warnings.extend(g.warnings);
        let sb = g.sb;
        let chunks =
            chunk::ChunkMap::from_sys_array(&sb.sys_chunk_array, g.devices.keys().copied())?;
        let chunk_root = Root {
            bytenr: sb.chunk_root,
            level: sb.chunk_root_level,
        };
        let root_tree = Root {
            bytenr: sb.root,
            level: sb.root_level,
        };
        let mut vol = Volume::new(
            g.devices,
            g.dev_uuids,
            g.primary,
            sb,
            chunks,
            options.strict,
        );
        for w in warnings {
            vol.warn(Error::corrupt(FS, None, w))?;
        }
        if vol.sb.csum_type != 0 {
            vol.warn(Error::unsupported(
                FS,
                None,
                format!("checksum type {} not verified", vol.sb.csum_type),
            ))?;
        }
        // The whole chunk tree.
        let all = vol.items(
            chunk_root,
            Key::new(items::FIRST_CHUNK_TREE_OBJECTID, items::CHUNK_ITEM, 0),
            Key::new(
                items::FIRST_CHUNK_TREE_OBJECTID,
                items::CHUNK_ITEM,
                u64::MAX,
            ),
            "chunk tree",
        )?;
        for (k, data) in all {
            let c = chunk::Chunk::parse(&data).map_err(|e| {
                Error::corrupt(
                    FS,
                    None,
                    format!("chunk tree: chunk at {:#x}: {e}", k.offset),
                )
            })?;
            vol.chunks.insert(k.offset, c)?;
        }
        devices::check(&mut vol, chunk_root)?;
        let mut fs = BtrfsFs {
            vol,
            root_tree,
            csum_tree: None,
            top: items::FS_TREE,
            roots: RefCell::new(HashMap::new()),
        };
        fs.csum_tree = fs.root_item(items::CSUM_TREE)?.map(|(r, _)| r);
        Ok(fs)
    }

    /// The root of tree `id` and its root directory, from the root tree.
    fn root_item(&self, id: u64) -> Result<Option<(Root, u64)>> {
        let found = self.vol.last_le(
            self.root_tree,
            Key::new(id, items::ROOT_ITEM, u64::MAX),
            "root tree",
        )?;
        let Some((_, data)) = found else {
            return Ok(None);
        };
        let r = RootItem::parse(&data).ok_or_else(|| {
            Error::corrupt(
                FS,
                None,
                format!("root tree: root item of tree {id} cut short"),
            )
        })?;
        if r.level > 7 {
            return Err(Error::corrupt(
                FS,
                None,
                format!("root tree: tree {id} has level {}", r.level),
            ));
        }
        Ok(Some((
            Root {
                bytenr: r.bytenr,
                level: r.level,
            },
            r.root_dirid,
        )))
    }

    /// The root and root directory of subvolume `id` (cached).
    fn tree(&self, id: u64) -> Result<(Root, u64)> {
        if let Some(r) = self.roots.borrow().get(&id) {
            return Ok(*r);
        }
        let r = self
            .root_item(id)?
            .ok_or_else(|| Error::corrupt(FS, None, format!("subvolume {id} has no root item")))?;
        self.roots.borrow_mut().insert(id, r);
        Ok(r)
    }

    /// The default subvolume: the `default` entry of the root tree's
    /// directory, or the top level.
    fn default_subvolume(&self) -> Result<u64> {
        let dir = self.vol.sb.root_dir_objectid;
        let key = Key::new(dir, items::DIR_ITEM, items::name_hash(b"default"));
        let Some(data) = self.vol.exact(self.root_tree, key, "root tree")? else {
            return Ok(items::FS_TREE);
        };
        let entries = items::dir_entries(&data)
            .map_err(|e| Error::corrupt(FS, None, format!("root tree: default entry: {e}")))?;
        Ok(entries
            .iter()
            .find(|e| e.name == b"default")
            .map_or(items::FS_TREE, |e| e.location.objectid))
    }

    fn inode(&self, tree: u64, ino: u64, path: &str) -> Result<Node> {
        let (root, _) = self.tree(tree)?;
        let data = self
            .vol
            .exact(root, Key::new(ino, items::INODE_ITEM, 0), "fs tree")?
            .ok_or_else(|| {
                Error::corrupt(
                    FS,
                    Some(path),
                    format!("inode {ino} of subvolume {tree} is missing"),
                )
            })?;
        let item = InodeItem::parse(&data).ok_or_else(|| {
            Error::corrupt(
                FS,
                Some(path),
                format!("inode {ino} of subvolume {tree} cut short"),
            )
        })?;
        Ok(Node::Inode { tree, ino, item })
    }

    /// What directory entry `e` of directory `dir` in `tree` leads to.
    fn follow(&self, tree: u64, dir: u64, e: &items::DirEntry, path: &str) -> Result<Node> {
        match e.location.ty {
            items::INODE_ITEM => self.inode(tree, e.location.objectid, path),
            items::ROOT_ITEM => {
                let sub = e.location.objectid;
                // The kernel enters a subvolume only through the directory
                // its root ref names.
                let key = Key::new(tree, items::ROOT_REF, sub);
                let r = self.vol.exact(self.root_tree, key, "root tree")?;
                let linked = r
                    .and_then(|d| items::RootRef::parse(&d))
                    .is_some_and(|r| r.dirid == dir && r.name == e.name);
                if !linked || self.root_item(sub)?.is_none() {
                    return Ok(Node::EmptySubvol);
                }
                let (_, dirid) = self.tree(sub)?;
                self.inode(sub, dirid, path)
            }
            other => Err(Error::corrupt(
                FS,
                Some(path),
                format!("directory entry points at key type {other}"),
            )),
        }
    }

    /// The node at `path`.
    fn lookup(&self, path: &str) -> Result<Node> {
        let parts = components(path).ok_or_else(|| Error::not_found(FS, path))?;
        let (_, dirid) = self.tree(self.top)?;
        let mut node = self.inode(self.top, dirid, "/")?;
        let mut so_far = String::from("/");
        for part in parts {
            so_far = join(&so_far, part);
            let (tree, ino) = match &node {
                Node::Inode { tree, ino, item } if item.mode & S_IFMT == S_IFDIR => (*tree, *ino),
                Node::EmptySubvol => return Err(Error::not_found(FS, path)),
                Node::Inode { .. } => return Err(Error::wrong_type(FS, path, "not a directory")),
            };
            let name = decode_name(part);
            let (root, _) = self.tree(tree)?;
            let key = Key::new(ino, items::DIR_ITEM, items::name_hash(&name));
            let data = self
                .vol
                .exact(root, key, "fs tree")?
                .ok_or_else(|| Error::not_found(FS, path))?;
            let entries =
                items::dir_entries(&data).map_err(|e| Error::corrupt(FS, Some(&so_far), e))?;
            let e = entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| Error::not_found(FS, path))?;
            node = self.follow(tree, ino, e, &so_far)?;
        }
        Ok(node)
    }

    /// The entries of directory `node`, in index order (as `readdir`).
    fn entries(&self, node: &Node, path: &str) -> Result<Vec<items::DirEntry>> {
        let (tree, ino) = match node {
            Node::Inode { tree, ino, item } if item.mode & S_IFMT == S_IFDIR => (*tree, *ino),
            Node::EmptySubvol => return Ok(Vec::new()),
            Node::Inode { .. } => return Err(Error::wrong_type(FS, path, "not a directory")),
        };
        let (root, _) = self.tree(tree)?;
        let items = self.vol.items(
            root,
            Key::new(ino, items::DIR_INDEX, 0),
            Key::new(ino, items::DIR_INDEX, u64::MAX),
            "fs tree",
        )?;
        let mut out = Vec::with_capacity(items.len());
        for (_, data) in items {
            let entries =
                items::dir_entries(&data).map_err(|e| Error::corrupt(FS, Some(path), e))?;
            for e in entries {
                if e.name.is_empty() || e.name.contains(&0) || e.name.contains(&b'/') {
                    return Err(Error::corrupt(
                        FS,
                        Some(&join(path, &encode_name(&e.name))),
                        "directory entry name is empty or holds '/' or NUL",
                    ));
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The file extents of `node` (a regular file or symlink).
    fn extents(&self, tree: u64, ino: u64) -> Result<Vec<Placed>> {
        let (root, _) = self.tree(tree)?;
        let items = self.vol.items(
            root,
            Key::new(ino, items::EXTENT_DATA, 0),
            Key::new(ino, items::EXTENT_DATA, u64::MAX),
            "fs tree",
        )?;
        items
            .into_iter()
            .map(|(k, d)| {
                let extent = items::FileExtent::parse(&d).map_err(|e| {
                    Error::corrupt(FS, None, format!("inode {ino} of subvolume {tree}: {e}"))
                })?;
                Ok(Placed {
                    at: k.offset,
                    extent,
                })
            })
            .collect()
    }

    fn reader(&self, node: &Node, path: &str, want: u32) -> Result<ExtentReader<'_>> {
        let Node::Inode { tree, ino, item } = node else {
            return Err(Error::wrong_type(FS, path, "is a directory"));
        };
        if item.mode & S_IFMT != want {
            return Err(Error::wrong_type(
                FS,
                path,
                if want == S_IFREG {
                    "not a regular file"
                } else {
                    "not a symbolic link"
                },
            ));
        }
        let extents = self.extents(*tree, *ino)?;
        for e in &extents {
            extent::check_supported(&e.extent, path)?;
        }
        let csum = (item.flags & items::INODE_NODATASUM == 0)
            .then_some(self.csum_tree)
            .flatten();
        Ok(ExtentReader::new(&self.vol, csum, path, extents, item.size))
    }

    fn open_node(&self, node: &Node, path: &str) -> Result<Box<dyn FileReader + '_>> {
        Ok(Box::new(self.reader(node, path, S_IFREG)?))
    }

    fn link_target(&self, node: &Node, path: &str) -> Result<String> {
        let r = self.reader(node, path, S_IFLNK)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(r, MAX_LINK), &mut out)
            .map_err(|e| Error::from_io(FS, path, e))?;
        Ok(encode_name(&out))
    }

    fn node_stored_runs(&self, node: &Node) -> Option<Vec<StoredRun>> {
        let Node::Inode { tree, ino, item } = node else {
            return None;
        };
        if item.mode & S_IFMT != S_IFREG {
            return None;
        }
        let extents = self.extents(*tree, *ino).ok()?;
        extent::stored_runs(&self.vol, &extents, item.size)
    }
}

fn mode_type(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFREG => FileType::File,
        S_IFLNK => FileType::Symlink,
        _ => FileType::Special,
    }
}

fn node_metadata(node: &Node) -> Metadata {
    match node {
        Node::Inode { ino, item, .. } => Metadata {
            file_type: mode_type(item.mode),
            size: item.size,
            allocated: Some(item.nbytes),
            mode: Some(item.mode),
            uid: Some(item.uid),
            gid: Some(item.gid),
            nlink: Some(u64::from(item.nlink)),
            inode: Some(*ino),
            created: Some(item.otime),
            modified: Some(item.mtime),
            accessed: Some(item.atime),
            changed: Some(item.ctime),
        },
        Node::EmptySubvol => Metadata {
            mode: Some(S_IFDIR | 0o755),
            uid: Some(0),
            gid: Some(0),
            nlink: Some(1),
            inode: Some(items::EMPTY_SUBVOL_DIR),
            ..Metadata::bare(FileType::Directory)
        },
    }
}

/// The type a dir entry's type byte gives, if it gives one.
fn entry_type(t: u8) -> Option<FileType> {
    match t {
        1 => Some(FileType::File),
        2 => Some(FileType::Directory),
        3..=6 => Some(FileType::Special),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

impl FileSystem for BtrfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }

    fn label(&self) -> Option<String> {
        let l = &self.vol.sb.label;
        (!l.is_empty()).then(|| l.clone())
    }

    fn serial(&self) -> Option<String> {
        Some(self.vol.sb.uuid())
    }

    fn case_sensitive(&self) -> bool {
        true
    }

    fn warnings(&self) -> Vec<String> {
        self.vol.warnings()
    }

    fn read_dir(&self, path: &str) -> Result<ReadDir> {
        let node = self.lookup(path)?;
        let Node::Inode { tree, ino, .. } = &node else {
            return Ok(ReadDir::default());
        };
        let mut out = Vec::new();
        for e in self.entries(&node, path)? {
            let name = encode_name(&e.name);
            let file_type = match entry_type(e.ty) {
                Some(t) => t,
                None => node_metadata(&self.follow(*tree, *ino, &e, &join(path, &name))?).file_type,
            };
            out.push(DirEntry { name, file_type });
        }
        Ok(out.into())
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(node_metadata(&self.lookup(path)?))
    }

    fn open(&self, path: &str) -> Result<Box<dyn FileReader + '_>> {
        self.open_node(&self.lookup(path)?, path)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        self.link_target(&self.lookup(path)?, path)
    }

    fn visit_dir(&self, path: &str, f: &mut VisitFn<'_>) -> Result<()> {
        let dir = self.lookup(path)?;
        let Node::Inode { tree, ino, .. } = &dir else {
            return Ok(());
        };
        for e in self.entries(&dir, path)? {
            let name = encode_name(&e.name);
            let full = join(path, &name);
            let flow = match self.follow(*tree, *ino, &e, &full) {
                Ok(node) => f(Ok(&BtrfsVisited {
                    fs: self,
                    path: full,
                    name,
                    node,
                })),
                Err(err) => f(Err((name, err))),
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// An entry met by [`BtrfsFs::visit_dir`], its inode read once.
struct BtrfsVisited<'a> {
    fs: &'a BtrfsFs,
    path: String,
    name: String,
    node: Node,
}

impl Visited for BtrfsVisited<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Result<Metadata> {
        Ok(node_metadata(&self.node))
    }
    fn open(&self, stream: &str) -> Result<Box<dyn FileReader + '_>> {
        if !stream.is_empty() {
            return Err(Error::not_found(FS, &format!("{}:{stream}", self.path)));
        }
        self.fs.open_node(&self.node, &self.path)
    }
    fn read_link(&self) -> Result<String> {
        self.fs.link_target(&self.node, &self.path)
    }
    fn streams(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn stored_runs(&self) -> Option<Vec<StoredRun>> {
        self.fs.node_stored_runs(&self.node)
    }
}
