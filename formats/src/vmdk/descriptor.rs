//! The VMDK text descriptor ("Virtual Disk Format 5.0", section "The
//! Descriptor File"): header keys, one line per extent, and the `ddb.*`
//! disk database. It is a separate file (`disk.vmdk` next to
//! `disk-flat.vmdk`) or embedded in a hosted sparse extent.
//!
//! The parser tolerates what real writers produce: a first line other than
//! `# Disk DescriptorFile` (third-party converters), CRLF line ends, spaces
//! around `=`, any case for keys, access words and extent types, and an
//! offset on any extent line. It never skips an extent line: a malformed
//! one is an error naming the line, because skipping it would shift every
//! later extent.

use crate::error::{Detail, Error, Format, Result};

/// The largest descriptor this reader parses (real ones are a few KiB; an
/// embedded one is at most a few hundred sectors).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1024 * 1024;
/// The most extent lines one descriptor may hold (a 62 TiB
/// twoGbMaxExtentSparse disk has about 31,000).
pub const MAX_EXTENTS: usize = 100_000;
/// The `parentCID` value meaning "no parent".
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// The access word of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the descriptor's own words: RW, RDONLY, NOACCESS
pub enum Access {
    /// `RW`: read and write.
    ReadWrite,
    /// `RDONLY`: read only.
    ReadOnly,
    /// `NOACCESS`: the extent must not be read.
    NoAccess,
}

impl Access {
    fn parse(word: &str) -> Option<Self> {
        match word.to_ascii_uppercase().as_str() {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        }
    }

    /// The word as the descriptor spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "RW",
            Access::ReadOnly => "RDONLY",
            Access::NoAccess => "NOACCESS",
        }
    }
}

/// The type word of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// `FLAT`: the sectors are stored as they are in a file, from an offset.
    Flat,
    /// `SPARSE`: a hosted sparse extent (`KDMV`), streamOptimized included.
    Sparse,
    /// `ZERO`: no file; reads as zeros.
    Zero,
    /// `VMFS`: an ESXi flat extent.
    Vmfs,
    /// `VMFSSPARSE`: an ESXi COWD delta extent.
    VmfsSparse,
    /// `SESPARSE`: an ESXi 6.5+ space-efficient sparse extent.
    SeSparse,
    /// `VMFSRDM`: a raw device mapping.
    VmfsRdm,
    /// `VMFSRAW`: a raw device.
    VmfsRaw,
}

impl ExtentType {
    fn parse(word: &str) -> Option<Self> {
        match word.to_ascii_uppercase().as_str() {
            "FLAT" => Some(ExtentType::Flat),
            "SPARSE" => Some(ExtentType::Sparse),
            "ZERO" => Some(ExtentType::Zero),
            "VMFS" => Some(ExtentType::Vmfs),
            "VMFSSPARSE" => Some(ExtentType::VmfsSparse),
            "SESPARSE" => Some(ExtentType::SeSparse),
            "VMFSRDM" => Some(ExtentType::VmfsRdm),
            "VMFSRAW" => Some(ExtentType::VmfsRaw),
            _ => None,
        }
    }

    /// The word as the descriptor spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtentType::Flat => "FLAT",
            ExtentType::Sparse => "SPARSE",
            ExtentType::Zero => "ZERO",
            ExtentType::Vmfs => "VMFS",
            ExtentType::VmfsSparse => "VMFSSPARSE",
            ExtentType::SeSparse => "SESPARSE",
            ExtentType::VmfsRdm => "VMFSRDM",
            ExtentType::VmfsRaw => "VMFSRAW",
        }
    }
}

/// One extent line: `ACCESS SECTORS TYPE ["file" [OFFSET]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// The access word.
    pub access: Access,
    /// The extent's size in 512-byte sectors.
    pub sectors: u64,
    /// The extent type.
    pub kind: ExtentType,
    /// The file name, relative to the descriptor (empty for `ZERO`).
    pub file: String,
    /// Where the extent starts in its file, in sectors (flat extents).
    pub offset: u64,
    /// The 1-based line number in the descriptor.
    pub line: usize,
}

impl std::fmt::Display for ExtentLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.access.as_str(),
            self.sectors,
            self.kind.as_str()
        )?;
        if self.kind != ExtentType::Zero {
            write!(f, " \"{}\"", self.file)?;
        }
        if self.offset != 0 {
            write!(f, " {}", self.offset)?;
        }
        Ok(())
    }
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Whether the first line was the standard `# Disk DescriptorFile`.
    pub standard_first_line: bool,
    /// `version`.
    pub version: Option<String>,
    /// `encoding`.
    pub encoding: Option<String>,
    /// `CID`: content id, changed on every write.
    pub cid: Option<u32>,
    /// `parentCID`: the parent's CID when this delta was made (`ffffffff`: none).
    pub parent_cid: Option<u32>,
    /// `createType` as written.
    pub create_type: Option<String>,
    /// `parentFileNameHint`: where the parent was.
    pub parent_file_name_hint: Option<String>,
    /// The extent lines, in order.
    pub extents: Vec<ExtentLine>,
    /// The `ddb.*` entries and any other `key = value` lines, in order.
    pub ddb: Vec<(String, String)>,
}

impl Descriptor {
    /// Parses descriptor text. `what` names it in errors ("descriptor file").
    pub fn parse(text: &[u8]) -> Result<Self> {
        // An embedded descriptor is padded with NULs to whole sectors.
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let text = String::from_utf8_lossy(text.get(..end).unwrap_or_default());
        let mut d = Descriptor::default();
        let mut any = false;
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
            if i == 0 {
                d.standard_first_line = line.eq_ignore_ascii_case("# Disk DescriptorFile");
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            any = true;
            let first = line.split_whitespace().next().unwrap_or_default();
            if Access::parse(first).is_some() {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::limit(
                        Format::Vmdk,
                        "descriptor extent lines",
                        d.extents.len() as u64 + 1,
                        MAX_EXTENTS as u64,
                    ));
                }
                d.extents.push(parse_extent(line, line_no)?);
            } else if let Some((key, value)) = line.split_once('=') {
                d.set(key.trim(), unquote(value.trim()), line_no)?;
            } else {
                return Err(bad_line(
                    line_no,
                    line,
                    "neither `key = value` nor an extent",
                ));
            }
        }
        if !any {
            return Err(Error::corrupt(
                Format::Vmdk,
                Detail::Invalid("descriptor is empty".into()),
            ));
        }
        Ok(d)
    }

    fn set(&mut self, key: &str, value: &str, line: usize) -> Result<()> {
        match key.to_ascii_lowercase().as_str() {
            "version" => self.version = Some(value.to_owned()),
            "encoding" => self.encoding = Some(value.to_owned()),
            "cid" => self.cid = Some(parse_cid(value, line)?),
            "parentcid" => self.parent_cid = Some(parse_cid(value, line)?),
            "createtype" if value.eq_ignore_ascii_case("vsanSparse") => {
                return Err(Error::unsupported(
                    Format::Vmdk,
                    "createType vsanSparse (vSAN objects) is not read by this version",
                ))
            }
            "createtype" => self.create_type = Some(value.to_owned()),
            "parentfilenamehint" => self.parent_file_name_hint = Some(value.to_owned()),
            _ => self.ddb.push((key.to_owned(), value.to_owned())),
        }
        Ok(())
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

fn bad_line(line: usize, text: &str, why: &str) -> Error {
    let shown: String = text.chars().take(80).collect();
    Error::corrupt(
        Format::Vmdk,
        Detail::Invalid(format!("descriptor line {line} `{shown}`: {why}")),
    )
}

fn parse_cid(value: &str, line: usize) -> Result<u32> {
    u32::from_str_radix(value.trim(), 16)
        .map_err(|_| bad_line(line, value, "a CID is 1 to 8 hex digits"))
}

fn parse_extent(line: &str, line_no: usize) -> Result<ExtentLine> {
    let mut rest = line;
    let mut word = || -> Option<&str> {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let access = word().and_then(Access::parse);
    let sectors = word().and_then(|w| w.parse::<u64>().ok());
    let kind_word = word().unwrap_or_default().to_owned();
    let (Some(access), Some(sectors)) = (access, sectors) else {
        return Err(bad_line(line_no, line, "extent size is not a number"));
    };
    let Some(kind) = ExtentType::parse(&kind_word) else {
        return Err(Error::unsupported(
            Format::Vmdk,
            format!("descriptor line {line_no}: extent type `{kind_word}` is not known"),
        ));
    };
    let rest = rest.trim();
    let (file, after) = if kind == ExtentType::Zero && rest.is_empty() {
        (String::new(), "")
    } else if let Some(q) = rest.strip_prefix('"') {
        match q.find('"') {
            Some(end) => (
                q.get(..end).unwrap_or_default().to_owned(),
                q.get(end + 1..).unwrap_or_default().trim(),
            ),
            None => return Err(bad_line(line_no, line, "file name has no closing quote")),
        }
    } else {
        // Unquoted names happen in hand-written descriptors.
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (f, a) = rest.split_at(end);
        (f.to_owned(), a.trim())
    };
    if file.is_empty() && kind != ExtentType::Zero {
        return Err(bad_line(line_no, line, "extent has no file name"));
    }
    let offset = match after.split_whitespace().next() {
        None => 0,
        Some(w) => w
            .parse::<u64>()
            .map_err(|_| bad_line(line_no, line, "extent offset is not a number"))?,
    };
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        line: line_no,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const GOLDEN: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=8f67ca74\n\
        parentCID=0172e8a4\ncreateType=\"vmfsSparse\"\nparentFileNameHint=\"base.vmdk\"\n\
        # Extent description\nRW 4096 VMFSSPARSE \"d-delta.vmdk\"\nRDONLY 100 FLAT \"a b.vmdk\" 7\n\
        NOACCESS 5 ZERO\n\n#DDB\nddb.uuid = \"60 00\"\nddb.geometry.heads = \"64\"\n";

    #[test]
    fn golden_descriptor() {
        let d = Descriptor::parse(GOLDEN.as_bytes()).unwrap();
        assert!(d.standard_first_line);
        assert_eq!(d.cid, Some(0x8f67_ca74));
        assert_eq!(d.parent_cid, Some(0x0172_e8a4));
        assert_eq!(d.create_type.as_deref(), Some("vmfsSparse"));
        assert!(d.parent_file_name_hint.is_some());
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[1].file, "a b.vmdk");
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.extents.iter().map(|e| e.sectors).sum::<u64>(), 4201);
        assert_eq!(d.ddb[0], ("ddb.uuid".into(), "60 00".into()));
        assert_eq!(d.extents[1].to_string(), "RDONLY 100 FLAT \"a b.vmdk\" 7");
    }

    #[test]
    fn crlf_odd_case_spacing_and_foreign_first_line() {
        let t = "# made by a converter\r\n  CREATETYPE =  \"streamOptimized\" \r\n\
                 rw   2048   sparse   \"x.vmdk\"\r\nvmfs_line=1\r\nRW 8 vmfs \"f.vmdk\" 0\r\n\0\0\0";
        let d = Descriptor::parse(t.as_bytes()).unwrap();
        assert!(!d.standard_first_line);
        assert_eq!(d.create_type.as_deref(), Some("streamOptimized"));
        assert_eq!(d.extents[0].sectors, 2048);
        assert_eq!(d.extents[1].kind, ExtentType::Vmfs);
    }

    #[test]
    fn bad_lines_are_errors_never_skipped() {
        let e = |t: &str| Descriptor::parse(t.as_bytes()).unwrap_err();
        assert_eq!(e("RW x SPARSE \"a\"").kind(), ErrorKind::Corrupt);
        assert_eq!(e("RW 8 SPARSE").kind(), ErrorKind::Corrupt);
        assert_eq!(e("RW 8 SPARSE \"a").kind(), ErrorKind::Corrupt);
        assert_eq!(e("RW 8 FLAT \"a\" zz").kind(), ErrorKind::Corrupt);
        assert_eq!(e("RW 8 VSANSPARSE \"a\"").kind(), ErrorKind::Unsupported);
        assert_eq!(e("CID=xyz").kind(), ErrorKind::Corrupt);
        assert!(e("createType=\"vsanSparse\"")
            .to_string()
            .contains("vsanSparse"));
        assert_eq!(e("garbage").kind(), ErrorKind::Corrupt);
        assert!(e("\n\n# only comments\n\0\0").to_string().contains("empty"));
    }
}
