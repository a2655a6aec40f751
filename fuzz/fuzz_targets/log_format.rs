#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxyfleet_fuzz::log_format::run(data));
