//! The LVM2 text metadata (the "Text Format Volume Group"), parsed with
//! our own small parser, and the volume group it describes.
//!
//! Grammar: `item := NAME '=' value | NAME '{' item* '}'`, `value :=
//! "string" | integer | '[' value, ... ']'`, `#` comments to the end of the
//! line. Nesting is bounded by [`MAX_DEPTH`], the text by
//! [`MAX_METADATA_TEXT`](super::label::MAX_METADATA_TEXT).

use crate::error::{Error, Result, Scheme};

/// The deepest nesting of sections accepted (real metadata nests 5 deep).
pub const MAX_DEPTH: usize = 16;
/// Most items in one section (LVs, segments, PVs ...).
pub const MAX_ITEMS: usize = 65_536;

/// A value of the metadata text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string (escapes resolved).
    Str(String),
    /// A list of values.
    List(Vec<Value>),
    /// A section of named items.
    Section(Section),
}

/// A section: named items in text order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section(pub Vec<(String, Value)>);

impl Section {
    /// The value of the first item called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// An integer item.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// A string item.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// A subsection.
    pub fn section(&self, name: &str) -> Option<&Section> {
        match self.get(name)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }
    /// A list item.
    pub fn list(&self, name: &str) -> Option<&[Value]> {
        match self.get(name)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// The subsections, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.0.iter().filter_map(|(n, v)| match v {
            Value::Section(s) => Some((n.as_str(), s)),
            _ => None,
        })
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

fn err(pos: usize, what: impl Into<String>) -> Error {
    Error::invalid(
        Scheme::Lvm2,
        format!("metadata text at byte {pos}: {}", what.into()),
    )
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-')
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn word(&mut self) -> Result<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(err(
                start,
                format!("expected a name, found {:?}", self.peek().map(char::from)),
            ));
        }
        Ok(String::from_utf8_lossy(self.b.get(start..self.pos).unwrap_or_default()).into_owned())
    }

    fn items(&mut self, depth: usize, top: bool) -> Result<Section> {
        if depth > MAX_DEPTH {
            return Err(Error::limit(
                Scheme::Lvm2,
                "metadata section nesting",
                depth as u64,
                MAX_DEPTH as u64,
            ));
        }
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None if top => return Ok(Section(items)),
                None => return Err(err(self.pos, "text ends inside a section")),
                Some(b'}') if !top => {
                    self.pos += 1;
                    return Ok(Section(items));
                }
                _ => {}
            }
            if items.len() >= MAX_ITEMS {
                return Err(Error::limit(
                    Scheme::Lvm2,
                    "items in one metadata section",
                    items.len() as u64 + 1,
                    MAX_ITEMS as u64,
                ));
            }
            let name = self.word()?;
            self.skip_space();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let s = self.items(depth + 1, false)?;
                    items.push((name, Value::Section(s)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_space();
                    let v = self.value(depth)?;
                    items.push((name, v));
                }
                other => {
                    return Err(err(
                        self.pos,
                        format!(
                            "expected '=' or '{{' after {name:?}, found {:?}",
                            other.map(char::from)
                        ),
                    ))
                }
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err(err(self.pos, "unterminated string")),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') => {
                            self.pos += 1;
                            if let Some(c) = self.peek() {
                                s.push(c);
                                self.pos += 1;
                            }
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Error::limit(
                        Scheme::Lvm2,
                        "metadata list nesting",
                        depth as u64 + 1,
                        MAX_DEPTH as u64,
                    ));
                }
                self.pos += 1;
                let mut list = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::List(list));
                    }
                    if list.len() >= MAX_ITEMS {
                        return Err(Error::limit(
                            Scheme::Lvm2,
                            "values in one metadata list",
                            list.len() as u64 + 1,
                            MAX_ITEMS as u64,
                        ));
                    }
                    list.push(self.value(depth + 1)?);
                    self.skip_space();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        other => {
                            return Err(err(
                                self.pos,
                                format!(
                                    "expected ',' or ']' in a list, found {:?}",
                                    other.map(char::from)
                                ),
                            ))
                        }
                    }
                }
            }
            _ => {
                let start = self.pos;
                let w = self.word()?;
                w.parse::<i64>().map(Value::Int).map_err(|_| {
                    err(
                        start,
                        format!("{w:?} is not an integer, a string or a list"),
                    )
                })
            }
        }
    }
}

/// Parses metadata text into its top-level section.
pub fn parse(text: &str) -> Result<Section> {
    let mut p = Parser {
        b: text.as_bytes(),
        pos: 0,
    };
    p.items(0, true)
}

/// A segment of a logical volume as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// First logical extent of the LV this segment covers.
    pub start_extent: u64,
    /// Number of logical extents.
    pub extent_count: u64,
    /// The segment type (`striped`, `thin`, `snapshot`, `raid1` ...).
    pub segment_type: String,
    /// Stripe size in 512-byte sectors (0 for one stripe).
    pub stripe_size: u64,
    /// Each stripe's PV name (`pv0`) and first physical extent.
    pub stripes: Vec<(String, u64)>,
}

/// A logical volume as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMeta {
    /// The LV name.
    pub name: String,
    /// The LV UUID, as LVM prints it (with dashes).
    pub id: String,
    /// Whether `status` holds `VISIBLE` (what `lvs` lists).
    pub visible: bool,
    /// The segments in order.
    pub segments: Vec<SegmentMeta>,
}

/// A physical volume as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMeta {
    /// The name inside the metadata (`pv0`).
    pub name: String,
    /// The PV UUID, as LVM prints it (with dashes).
    pub id: String,
    /// The device path when the metadata was written (a hint only).
    pub device: Option<String>,
    /// First sector (512 bytes) of the first physical extent.
    pub pe_start: u64,
    /// Number of physical extents.
    pub pe_count: u64,
}

/// A volume group as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgMeta {
    /// The VG name.
    pub name: String,
    /// The VG UUID, as LVM prints it.
    pub id: String,
    /// The metadata sequence number (the highest one is current).
    pub seqno: u64,
    /// Extent size in 512-byte sectors.
    pub extent_size: u64,
    /// The PVs.
    pub pvs: Vec<PvMeta>,
    /// The LVs.
    pub lvs: Vec<LvMeta>,
}

fn need_u64(s: &Section, name: &'static str, ctx: &str) -> Result<u64> {
    s.int(name)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| {
            Error::invalid(
                Scheme::Lvm2,
                format!("{ctx}: no non-negative integer {name}"),
            )
        })
}

fn need_str<'a>(s: &'a Section, name: &'static str, ctx: &str) -> Result<&'a str> {
    s.str(name)
        .ok_or_else(|| Error::invalid(Scheme::Lvm2, format!("{ctx}: no string {name}")))
}

/// Reads the volume group from parsed metadata.
pub fn volume_group(top: &Section) -> Result<VgMeta> {
    let (name, vg) = top
        .sections()
        .next()
        .ok_or_else(|| Error::invalid(Scheme::Lvm2, "metadata holds no volume group section"))?;
    let ctx = format!("volume group {name}");
    let extent_size = need_u64(vg, "extent_size", &ctx)?;
    if extent_size == 0 {
        return Err(Error::invalid(
            Scheme::Lvm2,
            format!("{ctx}: extent_size is 0"),
        ));
    }
    let mut pvs = Vec::new();
    if let Some(section) = vg.section("physical_volumes") {
        for (pv_name, pv) in section.sections() {
            let c = format!("{ctx}, PV {pv_name}");
            pvs.push(PvMeta {
                name: pv_name.to_owned(),
                id: need_str(pv, "id", &c)?.to_owned(),
                device: pv.str("device").map(str::to_owned),
                pe_start: need_u64(pv, "pe_start", &c)?,
                pe_count: need_u64(pv, "pe_count", &c)?,
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(section) = vg.section("logical_volumes") {
        for (lv_name, lv) in section.sections() {
            let c = format!("{ctx}, LV {lv_name}");
            let visible = lv
                .list("status")
                .is_some_and(|l| l.iter().any(|v| *v == Value::Str("VISIBLE".into())));
            let mut segments = Vec::new();
            for (seg_name, seg) in lv.sections() {
                if !seg_name.starts_with("segment") {
                    continue;
                }
                let c = format!("{c}, {seg_name}");
                let mut stripes = Vec::new();
                if let Some(list) = seg.list("stripes") {
                    for pair in list.chunks(2) {
                        match pair {
                            [Value::Str(pv), Value::Int(pe)] if *pe >= 0 => {
                                stripes.push((pv.clone(), *pe as u64));
                            }
                            _ => {
                                return Err(Error::invalid(
                                    Scheme::Lvm2,
                                    format!("{c}: stripes must be pairs of PV name and extent"),
                                ))
                            }
                        }
                    }
                }
                segments.push(SegmentMeta {
                    start_extent: need_u64(seg, "start_extent", &c)?,
                    extent_count: need_u64(seg, "extent_count", &c)?,
                    segment_type: need_str(seg, "type", &c)?.to_owned(),
                    stripe_size: seg
                        .int("stripe_size")
                        .and_then(|v| u64::try_from(v).ok())
                        .unwrap_or(0),
                    stripes,
                });
            }
            segments.sort_by_key(|s| s.start_extent);
            lvs.push(LvMeta {
                name: lv_name.to_owned(),
                id: need_str(lv, "id", &c)?.to_owned(),
                visible,
                segments,
            });
        }
    }
    Ok(VgMeta {
        name: name.to_owned(),
        id: need_str(vg, "id", &ctx)?.to_owned(),
        seqno: need_u64(vg, "seqno", &ctx)?,
        extent_size,
        pvs,
        lvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::ErrorKind;

    const TEXT: &str = r#"vg0 {
id = "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG"
seqno = 3
format = "lvm2" # comment
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192
physical_volumes {
pv0 {
id = "p0"
device = "/dev/loop0"
pe_start = 2048
pe_count = 10
}
}
logical_volumes {
lin {
id = "l1"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 1
stripes = [
"pv0", 2
]
}
}
}
}
contents = "Text Format Volume Group"
version = 1
description = "say \"hi\""
"#;

    #[test]
    fn golden_text_gives_the_volume_group() {
        let top = parse(TEXT).unwrap();
        assert_eq!(top.str("description"), Some("say \"hi\""));
        let vg = volume_group(&top).unwrap();
        assert_eq!(
            (vg.name.as_str(), vg.seqno, vg.extent_size),
            ("vg0", 3, 8192)
        );
        assert_eq!(vg.pvs[0].pe_start, 2048);
        let lv = &vg.lvs[0];
        assert!(lv.visible);
        assert_eq!(lv.segments[0].stripes, vec![("pv0".to_owned(), 2)]);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bad in [
            "vg0 { id = }",
            "vg0 {",
            "= 3",
            "a = [1, 2",
            "a = \"x",
            "a = 1.5.x!",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{bad}: {e}");
        }
        let deep = "a {".repeat(100);
        assert_eq!(parse(&deep).unwrap_err().kind(), ErrorKind::LimitExceeded);
        let deep = format!("a = {}", "[".repeat(100));
        assert_eq!(parse(&deep).unwrap_err().kind(), ErrorKind::LimitExceeded);
        assert!(volume_group(&parse("x = 1").unwrap()).is_err());
    }
}
