//! Client ID Metadata Documents: the fetcher reads an arbitrary body from a loopback
//! server; no panic, and a document is accepted only with its own URL as `client_id`.
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mcp_connector::oauth::cimd::{CimdFetcher, FetcherConfig};

struct Docs {
    body: Arc<Mutex<Vec<u8>>>,
    addr: std::net::SocketAddr,
    fetcher: CimdFetcher,
    next: AtomicUsize,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let body: Arc<Mutex<Vec<u8>>> = Arc::default();
        let served = body.clone();
        let rig = mcp_connector_fuzz::rig();
        let addr = rig.runtime.block_on(async move {
            let app = axum::Router::new().fallback(move || {
                let body = served.lock().unwrap().clone();
                async move { ([("content-type", "application/json")], body) }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.ok() });
            addr
        });
        let fetcher = CimdFetcher::new(FetcherConfig {
            allow_private: true,
            ..FetcherConfig::default()
        });
        Docs {
            body,
            addr,
            fetcher,
            next: AtomicUsize::new(0),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let docs = docs();
    // A fresh URL each time, so the cache never answers; `{ID}` in the input becomes it.
    let n = docs.next.fetch_add(1, Ordering::Relaxed);
    let url = format!("http://{}/doc/{n}", docs.addr);
    let text = String::from_utf8_lossy(data).replace("{ID}", &url);
    *docs.body.lock().unwrap() = text.into_bytes();

    let got = mcp_connector_fuzz::rig()
        .runtime
        .block_on(docs.fetcher.fetch(&url));
    if let Ok(doc) = got {
        assert_eq!(doc.client_id, url);
        assert!(!doc.redirect_uris.is_empty());
    }
});
