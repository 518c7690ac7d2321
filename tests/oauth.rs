//! The OAuth server over real HTTP on loopback: every interop case of
//! `shared/cases/interop.md` (C1-C16) as its own test, and the key, expiry and revocation
//! rules of SPEC sections 3 and 5.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use jiff::SignedDuration;
use serde_json::json;

use mcp_connector::keys::KeyKind;
use support::WAIT;
use support::server::*;

const CLI_REDIRECT: &str = "http://127.0.0.1:5000/callback";

async fn server() -> TestServer {
    TestServer::start(json!({}), None).await
}

/// A server whose `/mcp` proxies to the built-in `whoami` MCP server.
async fn server_with_mcp() -> TestServer {
    let (addr, _task) = mcp_connector::dev::whoami::spawn().await.unwrap();
    std::mem::forget(_task);
    TestServer::start(
        json!({"mcpServer": {"url": format!("http://{addr}/mcp")}}),
        None,
    )
    .await
}

async fn get_json(url: &str) -> serde_json::Value {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

async fn mcp_post(server: &TestServer, bearer: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}})
            .to_string(),
        );
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn c01_resource_is_exactly_the_mcp_url() {
    let s = server().await;

    let doc = get_json(&s.url("/.well-known/oauth-protected-resource/mcp")).await;
    let root = get_json(&s.url("/.well-known/oauth-protected-resource")).await;

    assert_eq!(doc["resource"], s.url("/mcp"));
    assert_eq!(doc["authorization_servers"], json!([s.base()]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["resource_name"], "Kloudfuse MCP (OAuth)");
    assert_eq!(doc, root);
}

#[tokio::test]
async fn c02_issuer_is_byte_identical_to_authorization_servers() {
    let s = server().await;
    let prm = get_json(&s.url("/.well-known/oauth-protected-resource/mcp")).await;
    let issuer = prm["authorization_servers"][0].as_str().unwrap();

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta = get_json(&format!("{issuer}{path}")).await;
        assert_eq!(meta["issuer"].as_str().unwrap(), issuer, "{path}");
        assert!(!issuer.ends_with('/'));
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        assert_eq!(meta["client_id_metadata_document_supported"], true);
        assert_eq!(meta["token_endpoint_auth_methods_supported"][0], "none");
        assert_eq!(meta["scopes_supported"], json!(["mcp"]));
    }
}

#[tokio::test]
async fn c03_post_mcp_without_token_gets_one_resource_metadata_challenge() {
    let s = server().await;

    let r = mcp_post(&s, None).await;

    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge.matches("resource_metadata=").count(),
        1,
        "{challenge}"
    );
    let expected = format!(
        "resource_metadata=\"{}\"",
        s.url("/.well-known/oauth-protected-resource/mcp")
    );
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&expected),
        "{challenge}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn c04_get_and_head_mcp_without_token_get_401() {
    let s = server().await;

    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = http()
            .request(method.clone(), s.url("/mcp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert_eq!(
            challenge.matches("resource_metadata=").count(),
            1,
            "{method}"
        );
    }
}

#[tokio::test]
async fn c05_a_loopback_redirect_may_change_port_but_not_path_or_host() {
    let s = server().await;
    let client = register_public(&s, "http://127.0.0.1:5000/callback").await;
    let (_, challenge) = pkce();

    let other_port = authorize(
        &s,
        &client.id,
        "http://127.0.0.1:5001/callback",
        &challenge,
        &[],
    )
    .await;
    let other_path = authorize(
        &s,
        &client.id,
        "http://127.0.0.1:5001/other",
        &challenge,
        &[],
    )
    .await;
    let other_host = authorize(
        &s,
        &client.id,
        "http://localhost:5000/callback",
        &challenge,
        &[],
    )
    .await;

    assert_eq!(other_port.status(), 302);
    assert!(location(&other_port).starts_with("http://127.0.0.1:5001/callback?code="));
    for refused in [other_path, other_host] {
        assert_eq!(refused.status(), 400, "never redirected");
        assert!(refused.headers().get("location").is_none());
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
}

/// Serves one Client ID Metadata Document on loopback; returns its URL.
async fn serve_metadata_document(redirect_uris: serde_json::Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/client.json", listener.local_addr().unwrap());
    let doc = json!({"client_id": url, "client_name": "Claude Code",
                     "redirect_uris": redirect_uris, "token_endpoint_auth_method": "none"});
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn c06_a_portless_loopback_redirect_in_a_metadata_document_matches_any_port() {
    let s = server().await;
    let client_id = serve_metadata_document(json!(["http://localhost/callback"])).await;
    let (verifier, challenge) = pkce();
    let redirect = "http://localhost:51353/callback";

    let code = code(&s, &client_id, redirect, &challenge, &[]).await;
    let (status, _, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", redirect),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let elsewhere = authorize(
        &s,
        &client_id,
        "http://localhost:51353/other",
        &challenge,
        &[],
    )
    .await;
    assert_eq!(
        elsewhere.status(),
        400,
        "another path is refused, not redirected"
    );
}

#[tokio::test]
async fn a_metadata_document_with_a_redirect_off_the_allowlist_is_refused() {
    let s = server().await;
    let client_id = serve_metadata_document(json!(["https://evil.example/cb"])).await;
    let (_, challenge) = pkce();

    let r = authorize(&s, &client_id, "https://evil.example/cb", &challenge, &[]).await;

    assert_eq!(r.status(), 401);
    assert!(r.headers().get("location").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn c07_a_loopback_redirect_without_path_is_accepted() {
    let s = server().await;

    let (status, body) = register(
        &s,
        json!({"redirect_uris": ["http://127.0.0.1:33418"], "token_endpoint_auth_method": "none"}),
    )
    .await;

    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn c08_resource_names_the_mcp_url_or_nothing() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;

    let wrong_resource = s.url("/mcp/v1");
    let (status, _, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client.id),
            ("resource", &wrong_resource),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_target"))
    );

    let (_, tokens) = login(&s, CLI_REDIRECT).await;
    let claims = decode_claims(&tokens.access);
    assert_eq!(claims["aud"], s.url("/mcp"));
    assert_eq!(claims["iss"], s.base());
}

#[tokio::test]
async fn c08_authorize_with_a_foreign_resource_redirects_invalid_target() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (_, challenge) = pkce();

    let r = authorize(
        &s,
        &client.id,
        CLI_REDIRECT,
        &challenge,
        &[("resource", "https://evil.example/mcp")],
    )
    .await;

    let q = query(&location(&r));
    assert_eq!(q["error"], "invalid_target");
    assert_eq!(q["state"], "st4te");
    assert_eq!(q["iss"], s.base());
}

fn decode_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn c09_racing_refreshes_both_succeed_and_a_late_reuse_revokes_the_grant() {
    let s = server().await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;

    let (first, a) = refresh(&s, &client.id, &tokens.refresh, None).await;
    s.clock.advance(SignedDuration::from_millis(50));
    let (second, b) = refresh(&s, &client.id, &tokens.refresh, None).await;
    assert_eq!((first.as_u16(), second.as_u16()), (200, 200), "{a} {b}");

    s.clock.advance(SignedDuration::from_secs(60));
    let (third, c) = refresh(&s, &client.id, &tokens.refresh, None).await;
    assert_eq!(
        (third.as_u16(), c["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let newest = a["refresh_token"].as_str().unwrap();
    let (after, d) = refresh(&s, &client.id, newest, None).await;
    assert_eq!(
        (after.as_u16(), d["error"].as_str()),
        (400, Some("invalid_grant")),
        "grant revoked"
    );
}

#[tokio::test]
async fn c10_every_token_answer_has_expires_in_bearer_refresh_and_no_store() {
    let s = server().await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;
    let (_, refreshed) = refresh(&s, &client.id, &tokens.refresh, None).await;

    for body in [&tokens.body, &refreshed] {
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert!(body["refresh_token"].is_string());
    }
    let (verifier, challenge) = pkce();
    let code = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;
    let (_, headers, _) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client.id),
        ],
        None,
    )
    .await;
    assert_eq!(headers["cache-control"], "no-store");
}

async fn confidential_login(
    s: &TestServer,
    method: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let (status, reg) = register(
        s,
        json!({"redirect_uris": [CLI_REDIRECT], "token_endpoint_auth_method": method}),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["token_endpoint_auth_method"], method);
    let id = reg["client_id"].as_str().unwrap().to_string();
    let secret = reg["client_secret"].as_str().map(String::from);

    let (verifier, challenge) = pkce();
    let code = code(s, &id, CLI_REDIRECT, &challenge, &[]).await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CLI_REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let basic = match (method, secret.as_deref()) {
        ("client_secret_basic", Some(secret)) => Some((id.as_str(), secret)),
        ("client_secret_post", Some(secret)) => {
            form.push(("client_id", &id));
            form.push(("client_secret", secret));
            None
        }
        _ => {
            form.push(("client_id", &id));
            None
        }
    };
    let (status, _, body) = token(s, &form, basic).await;
    (status, body)
}

#[tokio::test]
async fn c11_each_client_auth_method_is_echoed_and_works() {
    let s = server().await;

    for method in ["client_secret_basic", "client_secret_post", "none"] {
        let (status, body) = confidential_login(&s, method).await;
        assert_eq!(status, 200, "{method}: {body}");
    }
}

#[tokio::test]
async fn c11_a_wrong_secret_is_invalid_client_with_a_basic_challenge() {
    let s = server().await;
    let (_, reg) = register(
        &s,
        json!({
            "redirect_uris": [CLI_REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
        }),
    )
    .await;
    let id = reg["client_id"].as_str().unwrap();

    let r = http()
        .post(s.url("/token"))
        .basic_auth(id, Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn c12_preflight_is_allowed_everywhere_and_exposes_www_authenticate() {
    let s = server().await;
    let routes = [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/register",
        "/token",
        "/mcp",
    ];

    for route in routes {
        let r = http()
            .request(reqwest::Method::OPTIONS, s.url(route))
            .header("origin", "http://localhost:6274")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "mcp-protocol-version, authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{route}: {}", r.status());
        let h = r.headers();
        assert_eq!(
            h["access-control-allow-origin"], "http://localhost:6274",
            "{route}"
        );
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(
            allowed.contains("mcp-protocol-version") && allowed.contains("authorization"),
            "{route}"
        );
    }

    let r = http()
        .post(s.url("/mcp"))
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"));
}

#[tokio::test]
async fn c13_unknown_routes_and_bad_json_get_json_errors() {
    let s = server().await;

    let missing = http().get(s.url("/no-such-route")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    let bad = http()
        .post(s.url("/register"))
        .header("content-type", "application/json")
        .body("this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
}

#[tokio::test]
async fn c13_an_unknown_host_gets_a_json_404() {
    let s = server().await;

    let r = http()
        .get(s.url("/.well-known/oauth-authorization-server"))
        .header("host", "rebound.example.com")
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn c14_prompt_consent_is_never_forwarded() {
    // The upstream here is the development form; the OIDC leg is covered by the end-to-end
    // test, which checks the IdP's authorization URL.
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (_, challenge) = pkce();

    for prompt in ["consent", "login", "none", "select_account"] {
        let r = authorize(
            &s,
            &client.id,
            CLI_REDIRECT,
            &challenge,
            &[("prompt", prompt)],
        )
        .await;
        assert_eq!(r.status(), 302, "{prompt}");
        let loc = location(&r);
        assert!(!loc.contains("prompt"), "{loc}");
        assert!(
            query(&loc).contains_key("code"),
            "prompt={prompt} is no error"
        );
    }
}

#[tokio::test]
async fn c15_offline_access_is_accepted_at_every_step() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = code(
        &s,
        &client.id,
        CLI_REDIRECT,
        &challenge,
        &[("scope", "mcp offline_access")],
    )
    .await;
    let (status, _, tokens) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client.id),
            ("scope", "mcp offline_access"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let refresh_token = tokens["refresh_token"].as_str().unwrap();

    let (again, same) = refresh(&s, &client.id, refresh_token, Some("mcp offline_access")).await;
    assert_eq!(again, 200, "{same}");
    let (bare, granted) = refresh(
        &s,
        &client.id,
        same["refresh_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(bare, 200, "{granted}");
    assert_eq!(granted["scope"], "mcp");
    assert_eq!(
        decode_claims(granted["access_token"].as_str().unwrap())["scope"],
        "mcp"
    );
}

#[tokio::test]
async fn c16_the_gemini_cli_registration_is_accepted() {
    let s = server().await;

    let (status, body) = register(
        &s,
        json!({
            "client_name": "Gemini CLI MCP Client",
            "redirect_uris": ["http://localhost:51734/oauth/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "mcp offline_access"
        }),
    )
    .await;

    assert_eq!(status, 201, "{body}");
    assert_eq!(body["scope"], "mcp offline_access");
}

#[tokio::test]
async fn a_registration_answers_with_the_scopes_it_can_be_granted_only() {
    let s = server().await;
    let registered = |scope: &'static str| {
        register(
            &s,
            json!({
                "redirect_uris": [CLI_REDIRECT],
                "token_endpoint_auth_method": "none",
                "scope": scope,
            }),
        )
    };

    let (status, body) = registered("openid admin mcp").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["scope"], "mcp");

    let (status, body) = registered("openid profile").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["scope"], "mcp");
}

#[tokio::test]
async fn registration_refuses_redirects_off_the_allowlist() {
    let s = server().await;

    for uri in [
        "https://evil.example/cb",
        "http://192.0.2.1:80/cb",
        "http://127.0.0.1:5000/cb#frag",
    ] {
        let (status, body) = register(
            &s,
            json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("invalid_redirect_uri")),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn an_unknown_client_sees_an_error_page_never_a_redirect() {
    let s = server().await;
    let (_, challenge) = pkce();

    let r = authorize(
        &s,
        "forged-client-id",
        "https://evil.example/cb",
        &challenge,
        &[],
    )
    .await;

    assert_eq!(r.status(), 401);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn pkce_is_required_and_must_be_s256() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;

    let base = [
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", CLI_REDIRECT),
    ];
    let get = |extra: &'static [(&'static str, &'static str)]| {
        let mut q: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, *v)).collect();
        q.extend_from_slice(extra);
        http().get(s.url("/authorize")).query(&q).send()
    };
    let plain = get(&[
        ("code_challenge", "abc"),
        ("code_challenge_method", "plain"),
    ])
    .await
    .unwrap();
    let missing = get(&[]).await.unwrap();
    let repeated = authorize(&s, &client.id, CLI_REDIRECT, "abc", &[("state", "again")]).await;

    assert_eq!(
        repeated.status(),
        400,
        "a repeated parameter is refused (RFC 6749 3.1)"
    );
    for r in [plain, missing] {
        let q = query(&location(&r));
        assert_eq!(q["error"], "invalid_request");
        assert!(q.contains_key("iss"));
    }
}

#[tokio::test]
async fn a_code_is_single_use_and_expires() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let form = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("code_verifier", verifier.clone()),
            ("client_id", client.id.clone()),
        ]
    };

    let code1 = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;
    let f = form(&code1);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (first, _, _) = token(&s, &f, None).await;
    let (replay, _, body) = token(&s, &f, None).await;
    assert_eq!(first, 200);
    assert_eq!(
        (replay.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let code2 = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;
    s.clock.advance(SignedDuration::from_secs(61));
    let f = form(&code2);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (late, _, body) = token(&s, &f, None).await;
    assert_eq!(
        (late.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn access_tokens_work_on_mcp_until_they_expire() {
    let s = server_with_mcp().await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let ok = mcp_post(&s, Some(&tokens.access)).await;
    assert_eq!(ok.status(), 200);

    s.clock.advance(SignedDuration::from_secs(3600 + 31));
    let late = mcp_post(&s, Some(&tokens.access)).await;
    assert_eq!(late.status(), 401);
    assert!(
        late.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn rotation_keeps_earlier_tokens_and_clients_valid() {
    let s = server_with_mcp().await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;

    s.rotate(KeyKind::Signing);
    s.rotate(KeyKind::Seal);

    assert_eq!(mcp_post(&s, Some(&tokens.access)).await.status(), 200);
    let (status, body) = refresh(&s, &client.id, &tokens.refresh, None).await;
    assert_eq!(status, 200, "{body}");
    let jwks = get_json(&s.url("/jwks.json")).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_deleted_dcr_secret_invalidates_clients_codes_and_refresh_tokens() {
    let s = server().await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let pending_code = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;

    s.regenerate(KeyKind::Seal);

    let (status, body) = refresh(&s, &client.id, &tokens.refresh, None).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let fresh = register_public(&s, CLI_REDIRECT).await;
    let (status, _, body) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &pending_code),
            ("code_verifier", &verifier),
            ("client_id", &fresh.id),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = refresh(&s, &fresh.id, &tokens.refresh, None).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn a_deleted_signing_key_invalidates_access_tokens() {
    let s = server_with_mcp().await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;
    // Used once first, so that `/mcp` remembers it as verified.
    assert_eq!(mcp_post(&s, Some(&tokens.access)).await.status(), 200);

    s.regenerate(KeyKind::Signing);

    let r = mcp_post(&s, Some(&tokens.access)).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("unknown key")
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_the_grant() {
    let s = server_with_mcp().await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;
    assert_eq!(mcp_post(&s, Some(&tokens.access)).await.status(), 200);

    let r = http()
        .post(s.url("/revoke"))
        .form(&[
            ("token", tokens.refresh.as_str()),
            ("client_id", client.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (status, body) = refresh(&s, &client.id, &tokens.refresh, None).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(mcp_post(&s, Some(&tokens.access)).await.status(), 401);
}

#[tokio::test]
async fn a_token_for_another_connector_is_refused() {
    let s = server_with_mcp().await;
    let other = format!("http://localhost:{}", s.addr.port());
    s.add_connector(
        "test/b",
        &other,
        json!({}),
        std::sync::Arc::new(|| mcp_connector::upstream::Upstream::AutoLogin("bob".into())),
    );
    let (_, tokens) = login(&s, CLI_REDIRECT).await;
    assert_eq!(mcp_post(&s, Some(&tokens.access)).await.status(), 200);

    let r = http()
        .post(format!("{other}/mcp"))
        .bearer_auth(&tokens.access)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_foreign_browser_origin_is_refused_on_mcp() {
    let s = server_with_mcp().await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let r = http()
        .post(s.url("/mcp"))
        .bearer_auth(&tokens.access)
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_origin");
}

#[tokio::test]
async fn the_mcp_server_down_is_a_json_502() {
    let s = TestServer::start(
        json!({"mcpServer": {"url": "http://127.0.0.1:9/mcp"}}),
        None,
    )
    .await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let r = mcp_post(&s, Some(&tokens.access)).await;

    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
}

#[tokio::test]
async fn a_connector_without_an_issuer_answers_discovery_with_a_json_503() {
    let s = server().await;
    let unresolved = mcp_connector::keys::store::Entry::Unavailable {
        host: Some("kf.example.com".into()),
        why: "neither spec.baseURL nor spec.tls.host is set".into(),
    };
    s.store.upsert("test/unresolved", unresolved);

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = http()
            .get(s.url(path))
            .header("host", "kf.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("spec.tls.host")
        );
    }
}

#[tokio::test]
async fn an_authenticating_proxy_signs_in_only_when_it_proves_itself() {
    use mcp_connector::keys::SecretString;
    use mcp_connector::upstream::{ProxyUpstream, Upstream};

    let proxy: UpstreamFactory = std::sync::Arc::new(|| {
        Upstream::Proxy(ProxyUpstream {
            user_header: "x-auth-request-email".into(),
            groups_header: Some("x-auth-request-groups".into()),
            secret_header: "x-auth-proxy-secret".into(),
            shared_secret: SecretString::new("proxy-s3cret"),
        })
    });
    let s = TestServer::start(json!({}), Some(proxy)).await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let query = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", CLI_REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let authorize_with = |secret: &'static str| {
        http()
            .get(s.url("/authorize"))
            .query(&query)
            .header("x-auth-request-email", "bob@example.com")
            .header("x-auth-request-groups", "sre")
            .header("x-auth-proxy-secret", secret)
            .send()
    };

    let forged = query_of(&authorize_with("guess").await.unwrap());
    assert_eq!(forged["error"], "access_denied");

    let proven = query_of(&authorize_with("proxy-s3cret").await.unwrap());
    let (status, _, tokens) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &proven["code"]),
            ("code_verifier", &verifier),
            ("client_id", &client.id),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = decode_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        (claims["sub"].as_str(), claims["groups"][0].as_str()),
        (Some("bob@example.com"), Some("sre"))
    );
}

fn query_of(r: &reqwest::Response) -> std::collections::HashMap<String, String> {
    query(&location(r))
}

#[tokio::test]
async fn a_replayed_code_revokes_the_grant_of_its_first_redemption() {
    let s = server().await;
    let client = register_public(&s, CLI_REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = code(&s, &client.id, CLI_REDIRECT, &challenge, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", client.id.as_str()),
    ];

    let (first, _, tokens) = token(&s, &form, None).await;
    let (replay, _, _) = token(&s, &form, None).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let (after, body) = refresh(&s, &client.id, refresh_token, None).await;

    assert_eq!((first.as_u16(), replay.as_u16()), (200, 400));
    assert_eq!(
        (after.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn mcp_passes_the_verified_identity_and_drops_forged_ones() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}/mcp", listener.local_addr().unwrap());
    let echo = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|headers: axum::http::HeaderMap| async move {
            let seen: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            axum::Json(seen)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, echo).await.unwrap() });
    let s = TestServer::start(json!({"mcpServer": {"url": backend}}), None).await;
    let (client, tokens) = login(&s, CLI_REDIRECT).await;

    let seen: serde_json::Value = http()
        .post(s.url("/mcp"))
        .bearer_auth(&tokens.access)
        .header("x-mcp-connector-user", "admin@example.com")
        .header("x-auth-request-email", "admin@example.com")
        .header("x-forwarded-user", "admin")
        .header("mcp-session-id", "s-1")
        .header("connection", "keep-alive, x-custom-hop")
        .header("x-custom-hop", "dropped")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(seen["x-mcp-connector-user"], "alice");
    assert_eq!(seen["x-mcp-connector-client-id"], client.id.as_str());
    assert_eq!(seen["mcp-session-id"], "s-1");
    for gone in [
        "authorization",
        "x-auth-request-email",
        "x-forwarded-user",
        "x-custom-hop",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the MCP server: {seen}"
        );
    }
}

/// An MCP server double that answers with the HTTP version it was spoken to in. Served by
/// axum, which accepts HTTP/1.1 and HTTP/2 from the first byte on one port.
async fn version_echo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let echo = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|request: axum::extract::Request| async move {
            format!("{:?}", request.version())
        }),
    );
    tokio::spawn(async move { axum::serve(listener, echo).await.unwrap() });
    url
}

#[tokio::test]
async fn mcp_speaks_http1_to_the_mcp_server_unless_http2_is_asked_for() {
    for (http2, expected) in [(None, "HTTP/1.1"), (Some(true), "HTTP/2.0")] {
        let backend = version_echo().await;
        let spec = json!({"mcpServer": {"url": backend, "http2": http2}});
        let s = TestServer::start(spec, None).await;
        let (_, tokens) = login(&s, CLI_REDIRECT).await;

        for _ in 0..3 {
            let r = mcp_post(&s, Some(&tokens.access)).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), expected, "http2: {http2:?}");
        }
    }
}

/// An h2c MCP server double allowing `limit` concurrent streams per connection: a GET is an
/// event stream that never ends, a POST answers at once. Its URL and a count of the
/// connections made to it.
async fn h2c_server(limit: u32) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::get(|| async {
            let open = Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b": open\n\n"));
            let events = futures::StreamExt::chain(
                futures::stream::iter([open]),
                futures::stream::pending(),
            );
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(events),
            )
        })
        .post(|| async { "answered" }),
    );
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(limit);
                let _ = builder
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (url, accepted)
}

/// With `http2: true`, event streams that stay open do not use up the MCP server's streams
/// per connection: another connection is opened, and a call still goes through at once.
#[tokio::test]
async fn open_event_streams_over_http2_never_make_a_call_wait() {
    use futures::StreamExt;
    use std::sync::atomic::Ordering;

    let limit = mcp_connector::proxy::http2::STREAMS_PER_CONNECTION;
    let (backend, connections) = h2c_server(limit as u32).await;
    let s = TestServer::start(json!({"mcpServer": {"url": backend, "http2": true}}), None).await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let opening = futures::stream::iter(0..limit + limit / 2)
        .map(|_| {
            let request = http()
                .get(s.url("/mcp"))
                .bearer_auth(&tokens.access)
                .header("accept", "text/event-stream");
            async move {
                let mut response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                let first = response.chunk().await.unwrap().unwrap();
                assert_eq!(&first[..], b": open\n\n");
                response
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let streams = tokio::time::timeout(WAIT, opening)
        .await
        .expect("event streams waited behind other open ones");

    let call = tokio::time::timeout(WAIT, mcp_post(&s, Some(&tokens.access)))
        .await
        .expect("a call waited behind open event streams");
    assert_eq!(call.status(), 200);
    assert_eq!(call.text().await.unwrap(), "answered");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    drop(streams);
}

/// An HTTP/1.1 MCP server double that answers every POST with `answered` and every GET with
/// an event stream that never ends; its URL, and a watch of how many connections it has
/// accepted and how many are still open.
async fn counting_server() -> (String, tokio::sync::watch::Receiver<(usize, usize)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (counts, watch) = tokio::sync::watch::channel((0, 0));
    let counts = std::sync::Arc::new(counts);
    let stream = || async {
        let open = Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b": open\n\n"));
        let events =
            futures::StreamExt::chain(futures::stream::iter([open]), futures::stream::pending());
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(events),
        )
    };
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { "answered" }).get(stream),
    );
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counts.send_modify(|(accepted, open)| {
                *accepted += 1;
                *open += 1;
            });
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let counts = counts.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
                counts.send_modify(|(_, open)| *open -= 1);
            });
        }
    });
    (url, watch)
}

/// A server whose `/mcp` proxies to a [`counting_server`], a login's tokens, and the counts.
async fn proxying_to_counting_server() -> (
    TestServer,
    Tokens,
    tokio::sync::watch::Receiver<(usize, usize)>,
) {
    let (backend, counts) = counting_server().await;
    let s = TestServer::start(json!({"mcpServer": {"url": backend}}), None).await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;
    (s, tokens, counts)
}

/// Waits until the counting server has no connection open; `outlived` says what failed.
async fn all_closed(counts: &mut tokio::sync::watch::Receiver<(usize, usize)>, outlived: &str) {
    let closed = counts.wait_for(|&(_, open)| open == 0);
    tokio::time::timeout(WAIT, closed)
        .await
        .expect(outlived)
        .unwrap();
}

async fn call(client: &reqwest::Client, s: &TestServer, token: &str) -> String {
    let r = client
        .post(s.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Each client connection has its own connection to the MCP server, reused for each of its
/// calls and closed when the client leaves.
#[tokio::test]
async fn a_client_connection_has_one_connection_to_the_mcp_server_until_it_leaves() {
    let (s, tokens, mut counts) = proxying_to_counting_server().await;

    let first = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(call(&first, &s, &tokens.access).await, "answered");
    }
    assert_eq!(*counts.borrow(), (1, 1));

    drop(first);
    all_closed(&mut counts, "the MCP server connection outlived its client").await;

    let second = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(call(&second, &s, &tokens.access).await, "answered");
    }
    assert_eq!(*counts.borrow(), (2, 1));
}

/// Calls made at once on one HTTP/2 client connection each get an answer, and rounds of
/// them reuse connections to the MCP server instead of opening one for most calls.
#[tokio::test]
async fn concurrent_calls_on_one_http2_client_connection_reuse_connections() {
    let (s, tokens, counts) = proxying_to_counting_server().await;

    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..5 {
        let calls = (0..10).map(|_| call(&client, &s, &tokens.access));
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a == "answered"), "{answers:?}");
    }
    let (accepted, _) = *counts.borrow();
    assert!(
        (1..=10).contains(&accepted),
        "{accepted} connections to the MCP server for 5 rounds of 10 calls"
    );
}

/// A body over the limit sent without a length, over HTTP/1.1 or HTTP/2, is cut there and
/// answered with the JSON 413, not as an unreachable MCP server.
#[tokio::test]
async fn an_mcp_body_over_the_limit_sent_in_chunks_gets_a_json_413() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}/mcp", listener.local_addr().unwrap());
    // Reads every byte before it answers, so that only the limit can end the request.
    let reader = axum::routing::post(|body: axum::body::Body| async move {
        let mut stream = body.into_data_stream();
        while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
        "read"
    });
    let app = axum::Router::new().route("/mcp", reader);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = TestServer::start(json!({"mcpServer": {"url": backend}}), None).await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let http1 = reqwest::Client::new();
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [(http1, "HTTP/1.1"), (http2, "HTTP/2")] {
        let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
        let chunks = (0..17).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        let r = client
            .post(s.url("/mcp"))
            .bearer_auth(&tokens.access)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{version}");
        let error: serde_json::Value = r.json().await.unwrap();
        assert_eq!(error["error"], "invalid_request", "{version}: {error}");
    }
}

/// An MCP server that closes each connection after one answer, with no `Connection: close`
/// to say so, still answers every call of a client that keeps its connection to us.
#[tokio::test]
async fn a_connection_the_mcp_server_closed_is_replaced_without_failing_a_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}/mcp", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);

            // The head and the two-byte body of one request, then one answer, then close.
            let mut read = Vec::new();
            let mut buf = [0u8; 4096];
            while !read.windows(4).any(|w| w == b"\r\n\r\n") || !read.ends_with(b"{}") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                read.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nanswered";
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let s = TestServer::start(json!({"mcpServer": {"url": backend}}), None).await;
    let (_, tokens) = login(&s, CLI_REDIRECT).await;

    let client = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(call(&client, &s, &tokens.access).await, "answered");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 10);
}

/// An event stream through `/mcp` ends at the MCP server when its client goes away.
#[tokio::test]
async fn an_event_stream_ends_at_the_mcp_server_when_its_client_leaves() {
    let (s, tokens, mut counts) = proxying_to_counting_server().await;

    let client = reqwest::Client::new();
    let mut stream = client
        .get(s.url("/mcp"))
        .bearer_auth(&tokens.access)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    let first = stream.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b": open\n\n");
    assert_eq!(*counts.borrow(), (1, 1));

    drop(stream);
    drop(client);
    all_closed(&mut counts, "the event stream outlived its client").await;
}

/// The head of a POST to `/mcp` declaring a body over the limit, sent alone on a socket;
/// the answer's status and body. Nothing past the head is sent, so the server must judge
/// on the head.
async fn post_head_over_limit(s: &TestServer, bearer: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut socket = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let authorization = bearer.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{authorization}\
         content-length: {}\r\nconnection: close\r\n\r\n",
        s.addr,
        mcp_connector::proxy::MAX_MCP_BODY + 1
    );
    socket.write_all(head.as_bytes()).await.unwrap();

    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("no answer to the head alone")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// A body declared over the limit is refused as JSON, and nothing reaches the MCP server;
/// without a token, the challenge comes first.
#[tokio::test]
async fn an_mcp_body_over_the_limit_gets_a_json_413_after_the_token_check() {
    let (s, tokens, counts) = proxying_to_counting_server().await;

    let (status, _) = post_head_over_limit(&s, None).await;
    assert_eq!(status, 401);

    let (status, body) = post_head_over_limit(&s, Some(&tokens.access)).await;
    assert_eq!(status, 413, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "invalid_request", "{error}");
    assert_eq!(counts.borrow().0, 0, "the MCP server was called");
}
