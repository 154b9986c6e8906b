#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clinicea_notifier_fuzz::api_page(data);
});
