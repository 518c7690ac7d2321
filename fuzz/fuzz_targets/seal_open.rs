//! Sealed values: arbitrary text never opens, and a genuine sealed value edited by the
//! input (each byte pair: a position and a replacement) never opens once changed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_connector::oauth::seal::{Purpose, open, seal};
use mcp_connector_fuzz::rig;

fn genuine() -> &'static String {
    static SEALED: OnceLock<String> = OnceLock::new();
    SEALED.get_or_init(|| {
        let value = serde_json::json!({"r": ["http://127.0.0.1/cb"], "m": "none", "t": 1});
        seal(&rig().keys, Purpose::Client, "fuzz/a", &value).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = &rig().keys;
    let text = String::from_utf8_lossy(data);
    for purpose in [
        Purpose::Client,
        Purpose::Pending,
        Purpose::Code,
        Purpose::Refresh,
    ] {
        assert!(open::<serde_json::Value>(keys, purpose, "fuzz/a", &text).is_none());
    }

    let mut edited = genuine().clone().into_bytes();
    for pair in data.chunks(2) {
        let at = usize::from(pair[0]) % edited.len();
        match pair.get(1) {
            Some(&b) if b.is_ascii_graphic() => edited[at] = b,
            Some(_) => {
                edited.remove(at);
            }
            None => edited.truncate(at),
        }
        if edited.is_empty() {
            return;
        }
    }
    let edited = String::from_utf8_lossy(&edited).into_owned();
    if &edited != genuine() {
        let got = open::<serde_json::Value>(keys, Purpose::Client, "fuzz/a", &edited);
        assert!(got.is_none(), "{edited:?} opened");
    }
});
