//! A reusable read buffer whose first byte sits on a page boundary (the
//! formats crate's, which its converter reads through too).

pub use diskimage_formats::buffer::{AlignedBuf, ALIGN};
