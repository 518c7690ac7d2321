//! `GET /authorize` with an arbitrary query: JSON answers or a redirect, no 5xx, and no
//! redirect at all, since no input can forge a registered client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_connector_fuzz::{assert_well_formed, send};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let Ok(uri) = http::Uri::try_from(format!("/authorize?{query}")) else {
        return;
    };
    let (status, location, body) = send(http::Request::get(uri), Vec::new());
    assert_well_formed(status, location.as_deref(), &body);
    assert!(
        location.is_none(),
        "a redirect to {location:?} for {query:?}"
    );
});
