#![no_main]
//! See `switchboard::fuzzing::frame_decoder` for what is checked, docs/fuzzing.md to run it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::frame_decoder(data));
