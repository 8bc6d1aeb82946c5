#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interactor::fuzzing::amp_frame(data));
