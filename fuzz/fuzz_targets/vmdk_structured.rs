//! VMDK hosted sparse and streamOptimized extents built from a recipe
//! (`diskimage_formats::fuzzing::vmdk_input`): consistent grain directories,
//! tables, markers and stored-deflate grains, with damaged grains,
//! directories and byte patches where the recipe asks. A well-formed recipe
//! must open and read as the disk it describes.
#![no_main]

use diskimage_formats::fuzzing::vmdk_input::check_fuzz_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_fuzz_input(data);
});
