//! The inode table of a mounted file system: FUSE node ids ↔ (volume, path).
//!
//! Node `1` is the root. Every other node is created by a `lookup` and
//! counted: the kernel's `forget` takes the count back and a node whose
//! count reaches zero is dropped, so the table holds what the kernel
//! holds in its inode cache and no more (bounded memory on any tree).
//! A file the file system gives an inode number (NTFS MFT records) keeps
//! one node for all its names: hard links show one `st_ino`.

use std::collections::HashMap;

/// Node id of the root directory (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

/// Where a node lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// The synthetic top directory of a multi-volume mount (`--all`).
    Top,
    /// `path` inside volume `vol` (index into the mount's volume list).
    Entry {
        /// The volume.
        vol: usize,
        /// The path inside its file system, from `/`.
        path: String,
    },
}

#[derive(Debug)]
struct Node {
    place: Place,
    fs_inode: Option<u64>,
    lookups: u64,
}

/// FUSE node ids ↔ places, counted by lookups.
#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_place: HashMap<Place, u64>,
    by_fs_inode: HashMap<(usize, u64), u64>,
    next: u64,
}

impl InodeTable {
    /// A table holding only the root, at `root`.
    pub fn new(root: Place) -> Self {
        let mut t = InodeTable {
            nodes: HashMap::new(),
            by_place: HashMap::new(),
            by_fs_inode: HashMap::new(),
            next: ROOT + 1,
        };
        t.by_place.insert(root.clone(), ROOT);
        t.nodes.insert(
            ROOT,
            Node {
                place: root,
                fs_inode: None,
                // The root is never forgotten.
                lookups: u64::MAX,
            },
        );
        t
    }

    /// Where node `ino` lives, if the table holds it.
    pub fn place(&self, ino: u64) -> Option<&Place> {
        self.nodes.get(&ino).map(|n| &n.place)
    }

    /// The node already standing for `place` (or for its file-system inode),
    /// without counting a lookup: for `readdir`'s `d_ino`.
    pub fn peek(&self, place: &Place, fs_inode: Option<u64>) -> Option<u64> {
        if let (Place::Entry { vol, .. }, Some(i)) = (place, fs_inode) {
            if let Some(&ino) = self.by_fs_inode.get(&(*vol, i)) {
                return Some(ino);
            }
        }
        self.by_place.get(place).copied()
    }

    /// The node for `place` with one more lookup counted; a file with a
    /// file-system inode number already known under another name gets
    /// that name's node.
    pub fn lookup(&mut self, place: Place, fs_inode: Option<u64>) -> u64 {
        let found = self.peek(&place, fs_inode);
        let ino = match found {
            Some(ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                if let (Place::Entry { vol, .. }, Some(i)) = (&place, fs_inode) {
                    self.by_fs_inode.insert((*vol, i), ino);
                }
                self.by_place.insert(place.clone(), ino);
                self.nodes.insert(
                    ino,
                    Node {
                        place,
                        fs_inode,
                        lookups: 0,
                    },
                );
                ino
            }
        };
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_add(1);
        }
        ino
    }

    /// The kernel forgets `count` lookups of `ino`; at zero the node goes.
    pub fn forget(&mut self, ino: u64, count: u64) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        n.lookups = n.lookups.saturating_sub(count);
        if n.lookups > 0 || ino == ROOT {
            return;
        }
        if let Some(n) = self.nodes.remove(&ino) {
            if self.by_place.get(&n.place) == Some(&ino) {
                self.by_place.remove(&n.place);
            }
            if let (Place::Entry { vol, .. }, Some(i)) = (&n.place, n.fs_inode) {
                if self.by_fs_inode.get(&(*vol, i)) == Some(&ino) {
                    self.by_fs_inode.remove(&(*vol, i));
                }
            }
        }
    }

    /// How many nodes the table holds (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root is never removed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> Place {
        Place::Entry {
            vol: 0,
            path: path.into(),
        }
    }

    #[test]
    fn hard_links_share_a_node_and_forget_frees() {
        let mut t = InodeTable::new(at("/"));
        let a = t.lookup(at("/a"), Some(42));
        let b = t.lookup(at("/b"), Some(42));
        assert_eq!(a, b);
        let c = t.lookup(at("/c"), None);
        assert_ne!(a, c);
        assert_eq!(t.lookup(at("/c"), None), c);
        assert_eq!(t.len(), 3);
        t.forget(a, 2);
        t.forget(c, 1);
        assert_eq!(t.len(), 2);
        t.forget(c, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.place(ROOT), Some(&at("/")));
        t.forget(ROOT, u64::MAX);
        assert_eq!(t.len(), 1);
    }
}
