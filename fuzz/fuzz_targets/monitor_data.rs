#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interactor::fuzzing::monitor_data(data));
