#![no_main]
//! See `switchboard::fuzzing::peer_session` for what is checked, docs/fuzzing.md to run it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::peer_session(data));
