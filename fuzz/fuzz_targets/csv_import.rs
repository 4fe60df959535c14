//! The CSV import (dry run) on arbitrary files: see `samlgate::fuzzing::csv_import`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = samlgate::fuzzing::csv_import(data);
});
