//! The redirect matcher on arbitrary text: no panic, and nothing accepted off the list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_connector::oauth::redirect::{Allowlist, match_registered};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let default = Allowlist::default();
    if let Ok(url) = default.check(&text) {
        let host = url.host_str().unwrap_or_default();
        let allowed = matches!(
            (url.scheme(), host),
            ("http", "localhost" | "127.0.0.1") | ("https", "claude.ai" | "claude.com")
        );
        assert!(allowed, "{text:?} accepted as {url}");
        assert!(!text.contains(['@', '#', '\\']), "{text:?}");
    }

    let registered = vec![
        "http://127.0.0.1:5000/callback".to_string(),
        "https://claude.ai/api/mcp/auth_callback".to_string(),
        "cursor://anysphere.cursor-retrieval/cb".to_string(),
    ];
    if let Some(matched) = match_registered(&registered, &text) {
        let loopback_port_only = matched == registered[0] && text.starts_with("http://127.0.0.1:");
        assert!(
            matched == text || loopback_port_only,
            "{text:?} matched {matched}"
        );
    }

    // Allowlist entries, one per line, are the operator's input: they must not panic.
    let entries: Vec<&str> = text.lines().collect();
    if let Ok(list) = Allowlist::parse(&entries) {
        let _ = list.check("http://127.0.0.1:5000/callback");
    }
});
