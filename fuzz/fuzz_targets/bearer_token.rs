//! Bearer tokens: arbitrary text never verifies, and never panics the verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_connector::oauth::access_token::verify;
use mcp_connector_fuzz::{BASE, rig};

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let audience = format!("{BASE}/mcp");
    let got = verify(&rig().keys, &token, BASE, &audience, None);
    assert!(got.is_err(), "{token:?} verified");
});
