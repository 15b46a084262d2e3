#![no_main]
//! See `switchboard::fuzzing::ws_transport` for what is checked, docs/fuzzing.md to run it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::ws_transport(data));
