//! Reparse points: symlinks and junctions shown as links with their
//! print name as target; other tags named, not followed.

use std::io::Read;
use std::sync::Arc;

use diskimage_formats::bytes::{le_u16, le_u32, utf16le};
use ntfs::structured_values::NtfsFileAttributeFlags;
use ntfs::NtfsFile;

use super::data::RunReader;
use super::mft::{self, StreamData};
use super::{map_err, NtfsFs, FS};
use crate::error::{Error, Result};

/// Largest reparse point read, in bytes (the format's own limit is 16 KiB).
const MAX_REPARSE: u64 = 16 * 1024;
/// Reparse tags shown as links.
const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;

impl NtfsFs {
    /// The reparse tag and target of a file with a reparse point.
    pub(super) fn reparse(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&[u8]>,
        path: &str,
    ) -> Result<Option<(u32, String)>> {
        let base = self.base_record(file, record)?;
        let Some(attr) = self.mft.attribute(
            file.file_record_number(),
            &base,
            mft::ATTR_REPARSE_POINT,
            "",
            path,
        )?
        else {
            return Ok(None);
        };
        if attr.size > MAX_REPARSE {
            return Err(Error::corrupt(
                FS,
                Some(path),
                "reparse point larger than 16 KiB",
            ));
        }
        let buf = match attr.data {
            StreamData::Resident(v) => v,
            StreamData::Runs(runs) => {
                let mut buf = Vec::new();
                RunReader::new(
                    Arc::clone(&self.device),
                    runs,
                    attr.size,
                    attr.initialized,
                    None,
                    path,
                )?
                .take(MAX_REPARSE)
                .read_to_end(&mut buf)
                .map_err(|e| Error::from_io(FS, path, e))?;
                buf
            }
        };
        let u16at = |o: usize| le_u16(&buf, o).map_or(0, usize::from);
        let tag = le_u32(&buf, 0).unwrap_or(0);
        let base = match tag {
            IO_REPARSE_TAG_SYMLINK => 20,
            IO_REPARSE_TAG_MOUNT_POINT => 16,
            _ => return Ok(Some((tag, format!("<reparse tag {tag:#010x}>")))),
        };
        let (sub_off, sub_len, print_off, print_len) = (u16at(8), u16at(10), u16at(12), u16at(14));
        let (off, len) = if print_len > 0 {
            (print_off, print_len)
        } else {
            (sub_off, sub_len)
        };
        let raw = buf.get(base + off..base + off + len).ok_or_else(|| {
            Error::corrupt(
                FS,
                Some(path),
                "reparse target lies outside the reparse point",
            )
        })?;
        Ok(Some((tag, utf16le(raw))))
    }

    /// The link target of a symlink or junction; `None` for any other file.
    pub(super) fn is_link(
        &self,
        file: &NtfsFile<'_>,
        record: Option<&[u8]>,
        path: &str,
    ) -> Result<Option<String>> {
        let info = file.info().map_err(|e| map_err(e, path))?;
        if !info
            .file_attributes()
            .contains(NtfsFileAttributeFlags::REPARSE_POINT)
        {
            return Ok(None);
        }
        Ok(self
            .reparse(file, record, path)?
            .filter(|(tag, _)| matches!(*tag, IO_REPARSE_TAG_SYMLINK | IO_REPARSE_TAG_MOUNT_POINT))
            .map(|(_, t)| t))
    }
}
