//! A logical volume as a [`BlockDevice`]: its linear and striped segments
//! mapped onto the PVs' devices, wherever in the disk set they are.

use std::sync::Arc;

use diskimage_formats::block_device::{check_range, uniform_map};
use diskimage_formats::{
    BlockDevice, Error as FormatError, ErrorKind, Extent, ExtentKind, Format, Result,
};

/// One stripe of a segment: `offset` is where its first byte is on `device`.
#[derive(Clone)]
pub(crate) struct Target {
    pub device: Arc<dyn BlockDevice>,
    pub offset: u64,
}

/// A mapped segment: `len` bytes of the LV from `start`, over its stripes.
#[derive(Clone)]
pub(crate) struct Mapped {
    pub start: u64,
    pub len: u64,
    /// Stripe size in bytes (the whole segment for one stripe).
    pub stripe_bytes: u64,
    pub targets: Vec<Target>,
}

/// Why an LV cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A segment type this reader does not map (thin, snapshot, raid ...).
    Unsupported(String),
    /// A PV of the LV is not in the disk set.
    Missing(String),
}

/// The device of one LVM2 logical volume.
pub struct LvDevice {
    size: u64,
    segments: Vec<Mapped>,
    problem: Option<Problem>,
}

impl LvDevice {
    pub(crate) fn new(size: u64, segments: Vec<Mapped>, problem: Option<Problem>) -> Self {
        LvDevice {
            size,
            segments,
            problem,
        }
    }

    fn refuse(&self) -> Result<()> {
        match &self.problem {
            None => Ok(()),
            Some(Problem::Unsupported(what)) => {
                Err(FormatError::unsupported(Format::Probe, what.clone()))
            }
            Some(Problem::Missing(what)) => Err(FormatError::missing(
                Format::Probe,
                what.clone(),
                Vec::new(),
            )),
        }
    }

    /// Where LV byte `offset` is: the target device, the byte on it, and
    /// how many bytes from there stay contiguous.
    fn locate(&self, offset: u64) -> Option<(&Arc<dyn BlockDevice>, u64, u64)> {
        let i = self.segments.partition_point(|s| s.start + s.len <= offset);
        let seg = self.segments.get(i)?;
        let rel = offset.checked_sub(seg.start)?;
        let n = seg.targets.len() as u64;
        if n == 1 {
            let t = seg.targets.first()?;
            return Some((&t.device, t.offset + rel, seg.len - rel));
        }
        let sb = seg.stripe_bytes.max(1);
        let chunk = rel / sb;
        let within = rel % sb;
        let t = seg.targets.get(usize::try_from(chunk % n).ok()?)?;
        Some((&t.device, t.offset + (chunk / n) * sb + within, sb - within))
    }
}

impl BlockDevice for LvDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.refuse()?;
        check_range(Format::Probe, offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some((dev, at, run)) = self.locate(pos) else {
                return Err(FormatError::new(
                    ErrorKind::Corrupt,
                    Format::Probe,
                    diskimage_formats::Detail::Invalid(format!(
                        "LVM2 logical volume has no segment at byte {pos}"
                    )),
                ));
            };
            let n = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let Some(part) = buf.get_mut(done..done + n) else {
                break;
            };
            dev.read_at(part, at)?;
            done += n;
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.refuse()?;
        uniform_map(Format::Probe, self.size, offset, len, ExtentKind::Data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage_formats::MemoryDevice;

    #[test]
    fn striped_reads_alternate_between_targets() {
        let a: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(vec![1u8; 4096]));
        let b: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(vec![2u8; 4096]));
        let seg = Mapped {
            start: 0,
            len: 4096,
            stripe_bytes: 1024,
            targets: vec![
                Target {
                    device: a,
                    offset: 0,
                },
                Target {
                    device: b,
                    offset: 2048,
                },
            ],
        };
        let lv = LvDevice::new(4096, vec![seg], None);
        let mut buf = vec![0u8; 4096];
        lv.read_at(&mut buf, 0).unwrap();
        assert!(buf[..1024].iter().all(|&x| x == 1));
        assert!(buf[1024..2048].iter().all(|&x| x == 2));
        assert!(buf[2048..3072].iter().all(|&x| x == 1));
        assert!(lv.read_at(&mut buf[..1], 4096).is_err());
        let bad = LvDevice::new(10, Vec::new(), Some(Problem::Unsupported("thin".into())));
        assert_eq!(
            bad.read_at(&mut buf[..1], 0).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
}
