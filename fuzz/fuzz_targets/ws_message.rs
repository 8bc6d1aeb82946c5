#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interactor::fuzzing::ws_message(data));
