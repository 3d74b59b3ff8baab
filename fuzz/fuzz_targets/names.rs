#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stackyard_core::fuzzing::names(data));
