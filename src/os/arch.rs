//! The machine an executable is built for, from its header: the PE
//! `Machine` field of a Windows binary, the ELF `e_machine` and class of a
//! Unix one.

use diskimage_formats::bytes::{be_u16, has_at, le_u16, le_u32};

/// The architecture of a PE image (`MZ` … `PE\0\0` + `Machine`), or `None`
/// when `data` is not one. Names follow Rust's target names.
pub fn pe_machine(data: &[u8]) -> Option<&'static str> {
    if !has_at(data, 0, b"MZ") {
        return None;
    }
    let pe = le_u32(data, 0x3c)? as usize;
    if !has_at(data, pe, b"PE\0\0") {
        return None;
    }
    Some(match le_u16(data, pe.checked_add(4)?)? {
        0x014c => "x86",
        0x8664 => "x86_64",
        0xaa64 => "aarch64",
        0x01c4 => "arm",
        0x0200 => "ia64",
        _ => "unknown",
    })
}

/// The architecture of an ELF file (`e_machine`, with the class telling
/// 32- from 64-bit where one machine number covers both), or `None` when
/// `data` is not one.
pub fn elf_machine(data: &[u8]) -> Option<&'static str> {
    if !has_at(data, 0, b"\x7fELF") {
        return None;
    }
    let class64 = *data.get(4)? == 2;
    let machine = match *data.get(5)? {
        2 => be_u16(data, 18)?,
        _ => le_u16(data, 18)?,
    };
    Some(match (machine, class64) {
        (3, _) => "x86",
        (62, _) => "x86_64",
        (40, _) => "arm",
        (183, _) => "aarch64",
        (243, true) => "riscv64",
        (243, false) => "riscv32",
        (8, true) => "mips64",
        (8, false) => "mips",
        (20, _) => "powerpc",
        (21, _) => "powerpc64",
        (22, _) => "s390x",
        (258, _) => "loongarch64",
        _ => "unknown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_foreign_headers_are_none() {
        assert_eq!(pe_machine(b"MZ"), None);
        assert_eq!(elf_machine(b"\x7fELF\x02"), None);
        let mut pe = vec![0u8; 0x90];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(pe_machine(&pe), Some("x86_64"));
        pe[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pe_machine(&pe), None);
    }
}
