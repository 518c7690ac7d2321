//! `POST /register` with an arbitrary body: JSON answers, no 5xx, no disallowed redirect
//! URI registered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_connector::oauth::redirect::Allowlist;
use mcp_connector_fuzz::{assert_well_formed, send};

fuzz_target!(|data: &[u8]| {
    let request = http::Request::post("/register").header("content-type", "application/json");
    let (status, location, body) = send(request, data.to_vec());
    assert_well_formed(status, location.as_deref(), &body);

    if status == http::StatusCode::CREATED {
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let list = Allowlist::default();
        for uri in answer["redirect_uris"].as_array().into_iter().flatten() {
            assert!(
                list.check(uri.as_str().unwrap_or_default()).is_ok(),
                "{uri}"
            );
        }
    }
});
