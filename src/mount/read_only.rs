//! What makes a mount read-only beyond its `ro` option.

/// The write operations of a read-only mount, each answered `EROFS`
/// (the kernel refuses most of them itself because of the `ro` option).
macro_rules! refuse_writes {
    () => {
        fn setattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _mode: Option<u32>,
            _uid: Option<u32>,
            _gid: Option<u32>,
            _size: Option<u64>,
            _atime: Option<fuser::TimeOrNow>,
            _mtime: Option<fuser::TimeOrNow>,
            _ctime: Option<std::time::SystemTime>,
            _fh: Option<fuser::FileHandle>,
            _crtime: Option<std::time::SystemTime>,
            _chgtime: Option<std::time::SystemTime>,
            _bkuptime: Option<std::time::SystemTime>,
            _flags: Option<fuser::BsdFileFlags>,
            reply: fuser::ReplyAttr,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn mknod(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _rdev: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn mkdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn unlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn rmdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn symlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _link_name: &std::ffi::OsStr,
            _target: &std::path::Path,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn rename(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            _flags: fuser::RenameFlags,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn link(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn write(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: u64,
            _data: &[u8],
            _write_flags: fuser::WriteFlags,
            _flags: fuser::OpenFlags,
            _lock_owner: Option<fuser::LockOwner>,
            reply: fuser::ReplyWrite,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn setxattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _value: &[u8],
            _flags: i32,
            _position: u32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn removexattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn create(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _flags: i32,
            reply: fuser::ReplyCreate,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
        fn fallocate(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: u64,
            _length: u64,
            _mode: i32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS);
        }
    };
}
pub(crate) use refuse_writes;

/// Whether an open with `flags` asks to change the file.
pub fn wants_write(flags: fuser::OpenFlags) -> bool {
    flags.acc_mode() != fuser::OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0
}
