#![no_main]
//! See `switchboard::fuzzing::tls_server` for what is checked, docs/fuzzing.md to run it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::tls_server(data));
