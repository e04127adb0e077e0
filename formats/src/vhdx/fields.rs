//! Little-endian field readers (zero when short, from `crate::bytes`); GUIDs
//! ([MS-VHDX] 2.1: stored in the Windows `GUID` layout) are [`crate::guid::Guid`].

pub(crate) use crate::bytes::zeroed::{le_u16, le_u32, le_u64};
pub(crate) use crate::guid::Guid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_slices_read_as_zero() {
        assert_eq!(le_u32(&[1, 2], 0), 0);
        assert_eq!(le_u16(&[1, 2], 0), 0x0201);
        assert_eq!(le_u64(&[0; 8], usize::MAX), 0);
    }
}
