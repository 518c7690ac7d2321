//! `POST /token` with an arbitrary form body: JSON answers, no 5xx, and never a token
//! (no input can forge a code or a refresh token).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_connector_fuzz::{assert_well_formed, send};

fuzz_target!(|data: &[u8]| {
    let request =
        http::Request::post("/token").header("content-type", "application/x-www-form-urlencoded");
    let (status, location, body) = send(request, data.to_vec());
    assert_well_formed(status, location.as_deref(), &body);
    assert_ne!(
        status,
        http::StatusCode::OK,
        "a token for {:?}",
        String::from_utf8_lossy(data)
    );
});
