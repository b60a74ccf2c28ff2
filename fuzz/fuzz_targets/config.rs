#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mlmon_fuzz::config(data));
