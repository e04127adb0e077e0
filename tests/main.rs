//! The integration tests: one binary, one module per topic.
//!
//! - `fixtures`: every image under `fixtures/<topic>/` against the
//!   `expected.tsv`, `errors.tsv` and `warnings.tsv` made with it.
//! - `corpus`: the real-world images of `../shared/corpus/` against `TRUTH.tsv`.
//! - `cli`: the `diskimage` binary, end to end.
//! - `library`: the walk iterator, default volume, extraction engine, examples, options anywhere.
//! - `iso`: ISO 9660 / Joliet / Rock Ridge / El Torito images against xorriso, isoinfo and TSK.
//! - `fuzz_corpus`: every fuzz seed and crash reproducer through `open`, never a panic.
//! - `mount`: `diskimage mount` through FUSE (skips without FUSE unless DISKIMAGE_REQUIRE_FUSE=1).
//! - `hostile`: the README's hostile-image table, regenerated and compared.
//! - `regression`: one test per bug found, named after it.
//! - `ext_journal`: ext3/ext4 journals needing recovery, replayed as e2fsck replays them.
//! - `differential`: random qemu-img/qemu-io scenarios read by us, qemu and libyal.
//! - `os`: OS detection (Windows hives, Linux os-release/fstab) and damaged hives.
//! - `volumes`: MBR, GPT and LVM2 disk sets against sfdisk, mmls, blkid and the lvm tools.
//! - `ext`: ext feature sets (no filetype, inline_data, ea_inode, meta_bg, mmp, casefold, 128-byte inodes, bad checksums) against the kernel and debugfs.
//! - `detect`: volume types, labels and UUIDs against blkid, fsck.fat and TSK.
//! - `truncated`: images cut short: reads past the end fail, never short data.
//! - `ntfs`: NTFS images (fragmented `$MFT`, attribute lists) against TSK and ntfs-3g.
//! - `qcow2`: QCOW2 images against qemu-img convert and qemu-img map; one-field changes.
//! - `schemes`: BSD disklabels, APM, Sun/SGI/Atari labels, UDF on 4K blocks, a short fixed VHD
//!   and formats recognised but not read, against mmls, parted, blkid, qemu-img and file.
//! - `udf`: UDF images (genisoimage and pycdlib bridges, mkudffs of every revision) against 7-Zip, pycdlib and udfinfo.
//! - `read_paths`: `dump` to pipes, files, appended files and across file systems, and `hash`,
//!   on every container fixture with a recorded digest.
//! - `write`: create, child, write, convert and commit against qemu-img, libvmdk and the corpus.
//! - `write_vhd`: VHD and VHDX create, child, write and crash consistency against qemu-img and libvhdi.
//! - `write_errors`: the write side's bad input: a full and a read-only file system (loop mounts), changed parents, relinks after commit.
//! - `ewf`: EWF (.E01) segment sets against ewfexport, ewfinfo and ewfverify; one-field changes.
//! - `vdi`: VDI images against qemu-img map, a differencing pair, a `.vbox` machine over it, every command.
//! - `xfs`: XFS images (v5, nrext64, v4, real-time section) against the kernel's listing, xfs_db and a live loop mount; a Rocky-like disk for OS detection.
//! - `btrfs`: Btrfs volumes (subvolumes, compression, holes, 10,000 entries) against the kernel.
//! - `btrfs_raid`: Btrfs over several disks (RAID0/1/10/1C3, RAID5 refused) against the kernel.
//! - `snapshot`: snapshots of a powered-off VMware VM (create, revert, delete) against qemu-img and the recorded truth.
//! - `vm`: VM configurations (.vmx/.vmsd, .vbox, Hyper-V folders) against qemu-img per state.
//! - `snapshot_vbox`: VirtualBox snapshots taken, reverted and deleted offline, against qemu-img, libvmdk and libvhdi.
//! - `changes`: what changed between two VM states: runs against qemu-img map and compare, files against mtools/debugfs.

mod btrfs;
mod btrfs_raid;
mod changes;
mod cli;
mod common;
mod corpus;
mod detect;
mod differential;
mod ewf;
mod ext;
mod ext_journal;
mod filesystems;
mod fixtures;
mod fuzz_corpus;
mod hostile;
mod iso;
mod library;
mod mount;
mod ntfs;
mod os;
mod qcow2;
mod read_paths;
mod regression;
mod schemes;
mod snapshot;
mod snapshot_vbox;
mod truncated;
mod udf;
mod vdi;
mod vm;
mod volumes;
mod write;
mod write_errors;
mod write_vhd;
mod xfs;
