//! Attack tables: one family of known attacks per test, each row with the reason it must
//! fail, asserted one by one and named in the message.

use super::*;

/// Query or form pairs, as a row gives them.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Asserts one row: the message names the row and why it must fail.
macro_rules! row {
    ($cond:expr, $row:expr, $why:expr, $answer:expr) => {
        assert!($cond, "row {:?} ({}): {}", $row, $why, $answer.show())
    };
}

/// An error page: JSON, the expected status, and no redirect anywhere.
fn assert_error_page(answer: &Answer, row: &str, why: &str, status: u16) {
    row!(answer.location().is_none(), row, why, answer);
    row!(answer.status == status, row, why, answer);
    row!(answer.error().is_some(), row, why, answer);
}

#[tokio::test]
async fn registration_refuses_open_redirects() {
    let rig = Rig::start().await;
    let long = format!("http://127.0.0.1:5000/{}", "a".repeat(3000));

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("https://evil.example/cb", "not on the list"),
        ("https://claude.ai.evil.com/api/mcp/auth_callback", "lookalike: listed host as a prefix"),
        ("https://evil-claude.ai/api/mcp/auth_callback", "lookalike: listed host as a suffix"),
        ("https://claude.ai@evil.com/api/mcp/auth_callback", "userinfo hides the real host"),
        ("https://claude.ai:x@evil.com/api/mcp/auth_callback", "userinfo with a password"),
        ("https://evil.com\\@claude.ai/api/mcp/auth_callback", "backslash read as /"),
        ("https://evil.com#@claude.ai/api/mcp/auth_callback", "fragment hides the real host"),
        ("https://claude.ai/api/mcp/auth_callback#x", "fragments are never allowed"),
        ("https://claude.ai./api/mcp/auth_callback", "trailing dot"),
        ("https://claude.ai:8443/api/mcp/auth_callback", "another port"),
        ("https://claude.ai/api/mcp/auth_callback/../../../evil", "dot segments"),
        ("https://claude.ai/api/mcp/%2e%2e/%2e%2e/evil", "percent-encoded dot segments"),
        ("https://claude.ai/api/mcp/other", "another path"),
        ("https://cl\u{0430}ude.ai/api/mcp/auth_callback", "Cyrillic a: homograph"),
        ("https://xn--cude-8ve.ai/api/mcp/auth_callback", "punycode of a homograph"),
        ("https://\u{ff43}laude.ai/api/mcp/auth_callback", "fullwidth c"),
        ("https://claude%2eai/api/mcp/auth_callback", "percent-encoded host"),
        ("https://%63laude.ai/api/mcp/auth_callback", "percent-encoded letter"),
        ("http://%6cocalhost:5000/cb", "percent-encoded localhost"),
        ("http://localhost.evil.com:5000/cb", "localhost as a prefix"),
        ("http://localhost.:5000/cb", "trailing dot on localhost"),
        ("http://127.1:5000/cb", "short IPv4 form"),
        ("http://2130706433:5000/cb", "decimal IPv4 form"),
        ("http://0x7f.0.0.1:5000/cb", "hex IPv4 form"),
        ("http://0177.0.0.1:5000/cb", "octal IPv4 form"),
        ("http://127.0.0.1.nip.io:5000/cb", "wildcard DNS to loopback"),
        ("http://[::ffff:127.0.0.1]:5000/cb", "IPv4-mapped IPv6 is not a listed host"),
        ("http://[::1]:5000/cb", "IPv6 loopback is not on the default list"),
        ("http://192.168.1.10:5000/cb", "cleartext to a private address"),
        ("http://example.com/cb", "cleartext to the internet"),
        ("http://127.0.0.1:5000/cb\r\nSet-Cookie: a=b", "CRLF"),
        ("http://127.0.0.1:5000/cb\n", "LF"),
        (" http://127.0.0.1:5000/cb", "leading space, trimmed by parsers"),
        ("http://127.0.0.1:5000/c\tb", "tab, dropped by parsers"),
        ("http://127.0.0.1:5000/cb\u{0}", "NUL"),
        ("http://127.0.0.1:5000/cb\u{2028}", "Unicode line separator"),
        ("http://127.0.0.1:05000/cb", "leading zero in the port"),
        ("javascript:alert(document.cookie)", "javascript:"),
        ("JAVASCRIPT://localhost/%0aalert(1)", "javascript: in capitals, with a host"),
        ("data:text/html;base64,PHNjcmlwdD4=", "data:"),
        ("file:///etc/passwd", "file:"),
        ("vbscript:msgbox(1)", "vbscript:"),
        ("cursor://anysphere.cursor-retrieval/oauth/callback", "custom scheme not listed"),
        ("com.evil.app:/oauth2redirect", "private-use scheme not listed"),
        ("//evil.com/cb", "scheme-relative"),
        ("/callback", "relative"),
        ("", "empty"),
        (long.as_str(), "too long"),
    ];

    for (uri, why) in rows {
        let metadata = json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"});
        let answer = rig.register(&metadata).await;
        row!(answer.status == 400, uri, why, answer);
        row!(
            answer.error().as_deref() == Some("invalid_redirect_uri"),
            uri,
            why,
            answer
        );
        let json_type = answer.headers[header::CONTENT_TYPE].to_str().unwrap();
        row!(json_type.starts_with("application/json"), uri, why, answer);
    }

    // One bad URI spoils the registration; malformed lists are metadata errors.
    #[rustfmt::skip]
    let bodies: Vec<(Value, &str, &str)> = vec![
        (json!({"redirect_uris": [CLI, "https://evil.com/cb"]}), "invalid_redirect_uri",
            "one URI off the list"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri", "no URI"),
        (json!({}), "invalid_redirect_uri", "redirect_uris missing"),
        (json!({"redirect_uris": CLI}), "invalid_client_metadata", "a string, not a list"),
        (json!({"redirect_uris": [7]}), "invalid_client_metadata", "a number"),
        (json!({"redirect_uris": vec![CLI; 11]}), "invalid_redirect_uri", "more than ten"),
        (json!({"redirect_uris": [CLI], "response_types": ["token"]}), "invalid_client_metadata",
            "implicit flow"),
        (json!({"redirect_uris": [CLI], "grant_types": ["password"]}), "invalid_client_metadata",
            "password grant"),
        (json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata", "an unsupported auth method"),
        (json!([CLI]), "invalid_client_metadata", "not an object"),
    ];
    for (body, code, why) in bodies {
        let answer = rig.register(&body).await;
        let shown = body.to_string();
        row!(answer.status == 400, shown, why, answer);
        row!(answer.error().as_deref() == Some(code), shown, why, answer);
    }
}

#[tokio::test]
async fn authorize_never_redirects_to_a_uri_that_was_not_registered() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI, CLAUDE]).await;
    let (_, challenge) = pkce();

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("https://evil.com/cb", "never registered"),
        ("http://127.0.0.1:5000/callback/", "trailing slash"),
        ("http://127.0.0.1:5000/Callback", "path case"),
        ("http://127.0.0.1:5000/callback?next=https://evil.com", "an added query"),
        ("http://127.0.0.1:5000/callback#x", "a fragment"),
        ("http://localhost:5000/callback", "a name for the registered address"),
        ("http://127.0.0.2:5000/callback", "another loopback address"),
        ("https://127.0.0.1:5000/callback", "another scheme"),
        ("http://user@127.0.0.1:5000/callback", "userinfo"),
        ("http://127.0.0.1:5000/x/../callback", "dot segments"),
        ("http://127.0.0.1:5000/%63allback", "an encoded path"),
        ("http://127.1:5000/callback", "a short IPv4 form"),
        ("http://127.0.0.1:5000/callback\r\nLocation: https://evil.com", "CRLF"),
        ("http://127.0.0.1:5000\\@evil.com/callback", "a backslash"),
        ("https://claude.ai:443/api/mcp/auth_callback", "not the exact registered string"),
        ("https://CLAUDE.AI/api/mcp/auth_callback", "not the exact registered string"),
        ("https://claude.ai/api/mcp/auth_callback?x=1", "an added query"),
        ("https://claude.ai.evil.com/api/mcp/auth_callback", "a lookalike host"),
        ("https://claude.ai@evil.com/api/mcp/auth_callback", "userinfo"),
        ("https://claude.com/api/mcp/auth_callback", "allowed, but not registered"),
        ("javascript:alert(1)", "javascript:"),
        ("cursor://anysphere.cursor-retrieval/cb", "a custom scheme never registered"),
        ("", "empty"),
    ];
    for (uri, why) in rows {
        let answer = rig.authorize(&login(&client, uri, &challenge)).await;
        assert_error_page(&answer, uri, why, 400);
    }

    // Until the client is known, nothing redirects either.
    let forged = tamper(&client);
    let loopback_cimd = format!("https://127.0.0.1:{}/client.json", rig.server.addr.port());
    #[rustfmt::skip]
    let clients: Vec<(Pairs, u16, &str)> = vec![
        (login(&forged, CLI, &challenge), 401, "a forged client_id"),
        (login("", CLI, &challenge), 400, "an empty client_id"),
        (login(&loopback_cimd, CLI, &challenge), 401, "a metadata document on loopback"),
        (vec![("redirect_uri", CLI), ("response_type", "code")], 400, "no client_id"),
        ({
            let mut q = login(&client, CLI, &challenge);
            q.retain(|(k, _)| *k != "redirect_uri");
            q
        }, 400, "two URIs registered, none named"),
        ({
            let mut q = login(&client, CLI, &challenge);
            q.push(("redirect_uri", "https://evil.com/cb"));
            q
        }, 400, "a repeated redirect_uri"),
    ];
    for (query, status, why) in clients {
        let answer = rig.authorize(&query).await;
        assert_error_page(&answer, &format!("{query:?}"), why, status);
    }
}

#[tokio::test]
async fn pkce_must_be_s256_and_its_verifier_must_match() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let (verifier, challenge) = pkce();

    let with = |pkce: &[(&'static str, &'static str)]| {
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", CLI),
            ("state", "s"),
        ];
        q.extend_from_slice(pkce);
        q
    };
    let short = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c";
    #[rustfmt::skip]
    let rows: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with(&[]), "no code_challenge: PKCE is required"),
        (with(&[("code_challenge", "abc"), ("code_challenge_method", "plain")]), "plain"),
        (with(&[("code_challenge", short)]), "no method means plain"),
        (with(&[("code_challenge", short), ("code_challenge_method", "s256")]), "method case"),
        (with(&[("code_challenge", short), ("code_challenge_method", "S256")]), "42 characters"),
        (with(&[("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c!"),
            ("code_challenge_method", "S256")]), "not base64url"),
        (with(&[("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMM"),
            ("code_challenge_method", "S256")]), "44 characters"),
        (with(&[("code_challenge_method", "S256")]), "a method without a challenge"),
    ];
    for (query, why) in rows {
        let answer = rig.authorize(&query).await;
        let back = answer.redirect_pairs();
        let shown = format!("{query:?}");
        row!(answer.status == 302, shown, why, answer);
        row!(
            pair(&back, "error").as_deref() == Some("invalid_request"),
            shown,
            why,
            answer
        );
        row!(pair(&back, "iss") == Some(rig.issuer()), shown, why, answer);
        row!(
            pair(&back, "state").as_deref() == Some("s"),
            shown,
            why,
            answer
        );
        row!(pair(&back, "code").is_none(), shown, why, answer);
    }

    let long = "a".repeat(129);
    let other = pkce().0;
    #[rustfmt::skip]
    let verifiers: Vec<(Option<&str>, &str, &str)> = vec![
        (None, "invalid_request", "no verifier"),
        (Some(challenge.as_str()), "invalid_grant", "the challenge sent back (plain)"),
        (Some(other.as_str()), "invalid_grant", "another verifier"),
        (Some(&verifier[..42]), "invalid_grant", "a prefix, 42 characters"),
        (Some(long.as_str()), "invalid_grant", "129 characters"),
        (Some(""), "invalid_grant", "empty"),
    ];
    for (given, code_wanted, why) in verifiers {
        let code = rig.code(&client, CLI, &challenge).await;
        let mut form = exchange(&client, &code, &verifier, CLI);
        form.retain(|(k, _)| *k != "code_verifier");
        if let Some(v) = given {
            form.push(("code_verifier", v));
        }
        let answer = rig.token(&form, None).await;
        row!(
            answer.error().as_deref() == Some(code_wanted),
            given,
            why,
            answer
        );
        row!(answer.status == 400, given, why, answer);
    }
}

#[tokio::test]
async fn state_comes_back_byte_identical() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let (_, challenge) = pkce();
    let long = "s".repeat(1500);

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("", "empty"),
        ("abc", "plain"),
        ("a b  c ", "spaces, which form encoding turns into +"),
        ("a+b", "a plus"),
        ("&code=forged&iss=https://evil.com", "parameters smuggled in"),
        ("=&=", "separators only"),
        ("%41%", "percent signs that look encoded"),
        ("#frag", "a fragment mark"),
        ("\"'<script>alert(1)</script>", "markup and quotes"),
        ("x\r\nSet-Cookie: a=b", "CRLF"),
        ("\u{0}\u{1}\u{7f}", "control characters"),
        ("\u{e9}t\u{e9} \u{65e5}\u{672c} \u{1f511}", "non-ASCII and an emoji"),
        ("\u{fffd}", "the replacement character itself"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a JWT-shaped state"),
        (long.as_str(), "1500 characters"),
    ];
    for (state, why) in rows {
        for (scope, outcome) in [("mcp", "code"), ("admin", "error")] {
            let mut query = login(&client, CLI, &challenge);
            query.retain(|(k, _)| *k != "state");
            query.extend([("state", state), ("scope", scope)]);
            let answer = rig.authorize(&query).await;
            let back = answer.redirect_pairs();
            row!(answer.status == 302, state, why, answer);
            row!(pair(&back, outcome).is_some(), state, why, answer);
            row!(
                pair(&back, "state").as_deref() == Some(state),
                state,
                why,
                answer
            );
            row!(count(&back, "state") == 1, state, why, answer);
            row!(
                !answer.location().unwrap().contains(['\r', '\n']),
                state,
                why,
                answer
            );
        }
    }

    // Bytes that are not UTF-8 cannot be echoed as they came: the request is refused.
    let query = form(&login(&client, CLI, &challenge)).replace("state=s", "state=%FF%FEx");
    let answer = rig.get_on(&rig.host, &format!("/authorize?{query}")).await;
    let echoed = answer
        .location()
        .is_some_and(|l| l.contains("state=%FF%FEx"));
    let refused = answer.location().is_none() && answer.status == 400;
    row!(
        echoed || refused,
        "%FF%FEx",
        "invalid UTF-8 is echoed exactly or refused",
        answer
    );
}

/// A second connector on the same listener, reached as `localhost:PORT`: its host.
fn add_second_connector(rig: &Rig) -> String {
    let port = rig.server.addr.port();
    let upstream = Arc::new(|| Upstream::AutoLogin("bob".to_string()));
    let base = format!("http://localhost:{port}");
    rig.server
        .add_connector("test/b", &base, json!({}), upstream);
    format!("localhost:{port}")
}

#[tokio::test]
async fn a_code_works_once_for_its_client_and_redirect_uri_only() {
    let rig = Rig::start().await;
    let other_host = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let thief = rig.public_client(&[CLI]).await;
    let (confidential, secret) = rig.confidential_client("client_secret_post").await;
    let (verifier, challenge) = pkce();

    // A code that connector B issued, for a client of B.
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let b_body = metadata_body(&b_metadata);
    let b_client = rig
        .post_on(&other_host, "/register", "application/json", &[], b_body)
        .await
        .json()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_code = {
        let answer = rig
            .authorize_on(&other_host, &login(&b_client, CLI, &challenge))
            .await;
        pair(&answer.redirect_pairs(), "code").unwrap()
    };

    type Form = Box<dyn Fn(&str) -> Vec<(String, String)>>;
    let owned = |pairs: Vec<(&str, &str)>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (c, t, v) = (client.clone(), thief.clone(), verifier.clone());
    let (cc, cs, bc) = (confidential.clone(), secret.clone(), b_code.clone());
    #[rustfmt::skip]
    let rows: Vec<(&str, Form, u16, &str)> = vec![
        ("redeemed by another public client", Box::new(move |code| {
            owned(exchange(&t, code, &v, CLI))
        }), 400, "invalid_grant"),
        ("redeemed by a confidential client with its secret", {
            let v = verifier.clone();
            Box::new(move |code| {
                let mut f = owned(exchange(&cc, code, &v, CLI));
                f.push(("client_secret".into(), cs.clone()));
                f
            })
        }, 400, "invalid_grant"),
        ("another loopback port than the code was sent to", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, code, &v, "http://127.0.0.1:5001/callback")))
        }, 400, "invalid_grant"),
        ("another path", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, code, &v, "http://127.0.0.1:5000/other")))
        }, 400, "invalid_grant"),
        ("tampered", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, &tamper(code), &v, CLI)))
        }, 400, "invalid_grant"),
        ("presented as a refresh token", {
            let c = c.clone();
            Box::new(move |code| owned(vec![
                ("grant_type", "refresh_token"), ("refresh_token", code), ("client_id", &c),
            ]))
        }, 400, "invalid_grant"),
        ("presented as the client_id", {
            let v = verifier.clone();
            Box::new(move |code| owned(exchange(code, code, &v, CLI)))
        }, 401, "invalid_client"),
        ("a code of another connector", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |_| owned(exchange(&c, &bc, &v, CLI)))
        }, 400, "invalid_grant"),
    ];

    for (what, make, status, code_wanted) in &rows {
        let code = rig.code(&client, CLI, &challenge).await;
        let form = make(&code);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = rig.token(&pairs, None).await;
        row!(answer.status == *status, what, code_wanted, answer);
        row!(
            answer.error().as_deref() == Some(*code_wanted),
            what,
            code_wanted,
            answer
        );

        // The genuine client can still redeem it: the attempt did not help anyone.
        let good = rig
            .token(&exchange(&client, &code, &verifier, CLI), None)
            .await;
        row!(
            good.status == 200,
            what,
            "the genuine exchange still works",
            good
        );
    }

    let code = rig.code(&client, CLI, &challenge).await;
    let first = rig
        .token(&exchange(&client, &code, &verifier, CLI), None)
        .await;
    let replay = rig
        .token(&exchange(&client, &code, &verifier, CLI), None)
        .await;
    row!(first.status == 200, "first use", "a fresh code", first);
    row!(
        replay.error().as_deref() == Some("invalid_grant"),
        "replay",
        "single use",
        replay
    );

    let late = rig.code(&client, CLI, &challenge).await;
    rig.server.clock.advance(SignedDuration::from_secs(61));
    let expired = rig
        .token(&exchange(&client, &late, &verifier, CLI), None)
        .await;
    row!(
        expired.error().as_deref() == Some("invalid_grant"),
        "expired",
        "60 s TTL",
        expired
    );
}

fn metadata_body(metadata: &Value) -> Vec<u8> {
    metadata.to_string().into_bytes()
}

#[tokio::test]
async fn every_redirect_carries_the_issuer_it_came_from() {
    let rig = Rig::start().await;
    let other_host = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let (_, challenge) = pkce();

    let change = |k: &'static str, v: &'static str| {
        let mut q = login(&client, CLI, &challenge);
        q.retain(|(key, _)| *key != k);
        if !v.is_empty() {
            q.push((k, v));
        }
        q
    };
    #[rustfmt::skip]
    let rows: Vec<(Pairs, &str, &str)> = vec![
        (login(&client, CLI, &challenge), "code", "success"),
        (change("response_type", "token"), "error", "unsupported_response_type"),
        (change("response_type", ""), "error", "response_type missing"),
        (change("code_challenge", ""), "error", "PKCE missing"),
        (change("code_challenge_method", "plain"), "error", "plain PKCE"),
        (change("scope", "admin"), "error", "invalid_scope"),
        (change("resource", "https://evil.example/mcp"), "error", "invalid_target"),
    ];
    for (query, outcome, why) in rows {
        let answer = rig.authorize(&query).await;
        let back = answer.redirect_pairs();
        row!(
            pair(&back, outcome).is_some(),
            why,
            "the redirect happened",
            answer
        );
        row!(
            count(&back, "iss") == 1,
            why,
            "exactly one iss (RFC 9207)",
            answer
        );
        row!(
            pair(&back, "iss") == Some(rig.issuer()),
            why,
            "iss is the issuer",
            answer
        );
    }

    // Another connector's redirects name that connector, so a client can tell them apart.
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let b_body = metadata_body(&b_metadata);
    let answer = rig
        .post_on(&other_host, "/register", "application/json", &[], b_body)
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();
    let answer = rig
        .authorize_on(&other_host, &login(&b_client, CLI, &challenge))
        .await;
    let b_issuer = format!("http://{other_host}");
    let iss = pair(&answer.redirect_pairs(), "iss");
    row!(
        iss == Some(b_issuer),
        "connector B",
        "B's issuer, not A's",
        answer
    );
}

#[tokio::test]
async fn tokens_and_clients_of_one_connector_are_nothing_on_another() {
    let (addr, _mcp) = mcp_connector::dev::whoami::spawn().await.unwrap();
    let server = TestServer::start(
        json!({"mcpServer": {"url": format!("http://{addr}/mcp")}}),
        None,
    )
    .await;
    let rig = Rig::over(server, hermetic_cimd());
    let other = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let tokens = rig.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let answer = rig
        .post_on(
            &other,
            "/register",
            "application/json",
            &[],
            metadata_body(&b_metadata),
        )
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();

    let mcp = |host: String| {
        let rig = &rig;
        async move {
            let request = Request::post("/mcp")
                .header(header::HOST, host)
                .header(header::AUTHORIZATION, format!("Bearer {access}"))
                .header(header::ACCEPT, "application/json, text/event-stream")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
                ))
                .unwrap();
            rig.call(request).await
        }
    };
    let home = mcp(rig.host.clone()).await;
    row!(
        home.status != 401,
        "A's token on A",
        "the control: it works at home",
        home
    );

    let on_b = mcp(other.clone()).await;
    row!(
        on_b.status == 401,
        "A's token on B's /mcp",
        "another audience and key",
        on_b
    );
    row!(
        on_b.headers.contains_key(header::WWW_AUTHENTICATE),
        "A's token on B's /mcp",
        "a challenge",
        on_b
    );

    #[rustfmt::skip]
    let rows: Vec<(Pairs, u16, &str, &str)> = vec![
        (vec![("grant_type", "refresh_token"), ("refresh_token", refresh),
            ("client_id", &client)], 401, "invalid_client", "A's client and refresh at B"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", refresh),
            ("client_id", &b_client)], 400, "invalid_grant", "A's refresh with B's client"),
    ];
    for (form, status, code_wanted, why) in rows {
        let answer = rig.token_on(&other, &form, None).await;
        row!(answer.status == status, why, code_wanted, answer);
        row!(
            answer.error().as_deref() == Some(code_wanted),
            why,
            code_wanted,
            answer
        );
    }

    let (_, challenge) = pkce();
    let answer = rig
        .authorize_on(&other, &login(&client, CLI, &challenge))
        .await;
    assert_error_page(&answer, "A's client at B's /authorize", "unknown at B", 401);
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_the_whole_grant() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let tokens = rig.tokens(&client).await;
    let r0 = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: String| {
        let (rig, client) = (&rig, client.clone());
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", client.as_str()),
            ];
            rig.token(&form, None).await
        }
    };

    let first = refresh(r0.clone()).await;
    row!(
        first.status == 200,
        "r0",
        "the first refresh rotates",
        first
    );
    let r1 = first.json()["refresh_token"].as_str().unwrap().to_string();
    let access = first.json()["access_token"].as_str().unwrap().to_string();
    row!(r1 != r0, "r0", "the refresh token rotates", first);

    let raced = refresh(r0.clone()).await;
    row!(
        raced.status == 200,
        "r0 again at once",
        "a race within the grace window",
        raced
    );

    rig.server.clock.advance(SignedDuration::from_secs(11));
    let rows = [
        (
            r0.clone(),
            "r0 after the window",
            "a replay: the grant is revoked",
        ),
        (r1.clone(), "r1", "the current token of a revoked grant"),
        (r0.clone(), "r0 once more", "still revoked"),
    ];
    for (token, what, why) in rows {
        let answer = refresh(token).await;
        row!(answer.status == 400, what, why, answer);
        row!(
            answer.error().as_deref() == Some("invalid_grant"),
            what,
            why,
            answer
        );
    }

    let request = Request::get("/mcp")
        .header(header::HOST, &rig.host)
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .body(Body::empty())
        .unwrap();
    let answer = rig.call(request).await;
    row!(
        answer.status == 401,
        "the access token of the grant",
        "revoked with it",
        answer
    );
}

/// Flips one bit of the decoded value at `byte`.
fn flip(value: &str, byte: usize) -> String {
    let mut bytes = B64.decode(value).unwrap();
    let at = byte.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    B64.encode(bytes)
}

#[tokio::test]
async fn a_forged_or_tampered_client_id_is_an_unknown_client() {
    let rig = Rig::start().await;
    let other = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let (verifier, challenge) = pkce();
    let code = rig.code(&client, CLI, &challenge).await;
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let answer = rig
        .post_on(
            &other,
            "/register",
            "application/json",
            &[],
            metadata_body(&b_metadata),
        )
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();
    let len = B64.decode(&client).unwrap().len();
    let random = B64.encode(vec![7u8; len]);
    let upper = client.to_uppercase();

    #[rustfmt::skip]
    let rows: Vec<(String, &str)> = vec![
        (flip(&client, 0), "version byte"),
        (flip(&client, 2), "key tag"),
        (flip(&client, 8), "nonce"),
        (flip(&client, len / 2), "ciphertext"),
        (flip(&client, len - 1), "authentication tag"),
        (client[..client.len() - 1].to_string(), "one character short"),
        (format!("{client}A"), "one character more"),
        (format!("{client}{client}"), "doubled"),
        (upper, "case changed"),
        (random, "random bytes of the same length"),
        (b_client, "a client of another connector"),
        (code.clone(), "a code as a client_id"),
        ("null".to_string(), "a word"),
        ("https://127.0.0.1/client.json".to_string(), "a metadata URL on loopback"),
    ];
    for (forged, why) in &rows {
        let answer = rig.authorize(&login(forged, CLI, &challenge)).await;
        assert_error_page(&answer, forged, why, 401);
        row!(
            answer.error().as_deref() == Some("invalid_client"),
            forged,
            why,
            answer
        );

        let answer = rig
            .token(&exchange(forged, &code, &verifier, CLI), None)
            .await;
        row!(answer.status == 401, forged, why, answer);
        row!(
            answer.error().as_deref() == Some("invalid_client"),
            forged,
            why,
            answer
        );
    }
    let good = rig
        .token(&exchange(&client, &code, &verifier, CLI), None)
        .await;
    row!(
        good.status == 200,
        "the genuine client_id",
        "still works",
        good
    );
}

/// A loopback listener that counts the connections it accepts and answers each with
/// `reply`, so a test can tell whether a fetch was even attempted.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start(reply: &'static str) -> Listener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Listener {
            port,
            accepted,
            _task: task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn metadata_document_fetches_never_reach_private_addresses() {
    let target = Listener::start("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
    let p = target.port;
    let names = Names(HashMap::from([
        ("localhost", vec!["127.0.0.1".parse().unwrap()]),
        ("loopback.example", vec!["127.0.0.1".parse().unwrap()]),
        ("v6.example", vec!["::1".parse().unwrap()]),
        (
            "both.example",
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        ),
    ]));
    let cimd = FetcherConfig {
        resolver: Some(Arc::new(names)),
        timeout: Duration::from_secs(2),
        ..FetcherConfig::default()
    };
    let fetcher = CimdFetcher::new(cimd.clone());
    let rig = Rig::over(TestServer::start(json!({}), None).await, cimd);
    let (_, challenge) = pkce();

    // Non-loopback addresses appear only as literals, which are refused before any socket
    // is opened; names resolve to loopback only, so even a broken guard stays on this host.
    #[rustfmt::skip]
    let rows: Vec<(String, CimdError, &str)> = vec![
        (format!("https://127.0.0.1:{p}/c.json"), CimdError::ForbiddenAddress, "loopback"),
        (format!("https://127.9.9.9:{p}/c.json"), CimdError::ForbiddenAddress, "all of 127/8"),
        (format!("https://[::1]:{p}/c.json"), CimdError::ForbiddenAddress, "IPv6 loopback"),
        (format!("https://[::ffff:127.0.0.1]:{p}/c.json"), CimdError::ForbiddenAddress,
            "IPv4-mapped loopback"),
        (format!("https://0.0.0.0:{p}/c.json"), CimdError::ForbiddenAddress, "unspecified"),
        ("https://10.0.0.1/c.json".into(), CimdError::ForbiddenAddress, "private 10/8"),
        ("https://172.16.0.1/c.json".into(), CimdError::ForbiddenAddress, "private 172.16/12"),
        ("https://192.168.0.1/c.json".into(), CimdError::ForbiddenAddress, "private 192.168/16"),
        ("https://100.64.0.1/c.json".into(), CimdError::ForbiddenAddress, "shared 100.64/10"),
        ("https://169.254.169.254/latest/meta-data".into(), CimdError::ForbiddenAddress,
            "cloud metadata"),
        ("https://169.254.1.1/c.json".into(), CimdError::ForbiddenAddress, "link-local"),
        ("https://[fe80::1]/c.json".into(), CimdError::ForbiddenAddress, "IPv6 link-local"),
        ("https://[fd00::1]/c.json".into(), CimdError::ForbiddenAddress, "IPv6 unique local"),
        ("https://[fd00:ec2::254]/c.json".into(), CimdError::ForbiddenAddress,
            "AWS IPv6 metadata"),
        ("https://[::ffff:169.254.169.254]/c.json".into(), CimdError::ForbiddenAddress,
            "IPv4-mapped metadata"),
        ("https://[64:ff9b::a9fe:a9fe]/c.json".into(), CimdError::ForbiddenAddress,
            "NAT64 of metadata"),
        ("https://2852039166/c.json".into(), CimdError::ForbiddenAddress,
            "metadata as one decimal number"),
        ("https://0xa9fea9fe/c.json".into(), CimdError::ForbiddenAddress, "metadata in hex"),
        (format!("https://localhost:{p}/c.json"), CimdError::ForbiddenAddress,
            "DNS to loopback: localhost"),
        (format!("https://loopback.example:{p}/c.json"), CimdError::ForbiddenAddress,
            "DNS to loopback: another name"),
        (format!("https://v6.example:{p}/c.json"), CimdError::ForbiddenAddress,
            "DNS to IPv6 loopback"),
        (format!("https://both.example:{p}/c.json"), CimdError::ForbiddenAddress,
            "DNS to two loopback addresses"),
        (format!("http://127.0.0.1:{p}/c.json"), CimdError::InvalidUrl("it must use https"),
            "cleartext"),
    ];
    for (client_id, want, why) in &rows {
        let got = fetcher.fetch(client_id).await;
        assert_eq!(got.as_ref().err(), Some(want), "row {client_id:?} ({why})");

        let answer = rig.authorize(&login(client_id, CLI, &challenge)).await;
        assert_error_page(&answer, client_id, why, 401);
    }
    assert_eq!(
        target.accepted(),
        0,
        "the guard must refuse before connecting"
    );

    // A document URL that redirects (here from loopback, which tests may fetch) is an error,
    // and the redirect's target is never fetched.
    let inner = Listener::start("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{}/c.json\r\n\
             content-length: 0\r\n\r\n",
            inner.port
        )
        .into_boxed_str(),
    );
    let outer = Listener::start(redirect).await;
    let private = CimdFetcher::new(FetcherConfig {
        allow_private: true,
        ..hermetic_cimd()
    });
    let via_redirect = format!("http://127.0.0.1:{}/c.json", outer.port);
    let got = private.fetch(&via_redirect).await;
    assert_eq!(
        got.err(),
        Some(CimdError::Redirect),
        "redirects are never followed"
    );
    assert_eq!(outer.accepted(), 1);
    assert_eq!(inner.accepted(), 0, "the redirect's target was fetched");
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_json_error() {
    let rig = Rig::start().await;
    let limit = mcp_connector::oauth::MAX_BODY;
    let json_of = |n: usize| {
        let empty = json!({"redirect_uris": [CLI], "client_name": ""}).to_string();
        let padding = "x".repeat(n - empty.len());
        let body = json!({"redirect_uris": [CLI], "client_name": padding}).to_string();
        assert_eq!(body.len(), n);
        body.into_bytes()
    };
    let form_of = |n: usize| format!("grant_type=x&pad={}", "x".repeat(n - 17)).into_bytes();
    let form_type = "application/x-www-form-urlencoded";

    #[rustfmt::skip]
    let rows: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("/register", "application/json", json_of(limit + 1), "one byte over"),
        ("/register", "application/json", json_of(4 * limit), "far over"),
        ("/token", form_type, form_of(limit + 1), "one byte over"),
        ("/revoke", form_type, form_of(limit + 1), "one byte over"),
        ("/login", form_type, form_of(limit + 1), "one byte over"),
    ];
    for (path, content_type, body, why) in rows {
        let size = body.len();
        let answer = rig.post_on(&rig.host, path, content_type, &[], body).await;
        let row = format!("{path} {size} bytes");
        row!(answer.status == 413, row, why, answer);
        row!(
            answer.error().as_deref() == Some("invalid_request"),
            row,
            why,
            answer
        );
    }

    // At the limit the body is read, and judged on what it says.
    let at_limit = json_of(limit);
    let answer = rig
        .post_on(&rig.host, "/register", "application/json", &[], at_limit)
        .await;
    row!(
        answer.status == 201,
        "/register at the limit",
        "not too large",
        answer
    );

    // Over a socket, with a chunked body that declares no length.
    let client = reqwest::Client::new();
    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 8 * 1024]))),
    );
    let r = client
        .post(rig.server.url("/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "chunked, 160 KiB");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
}

/// A loopback server over a rig's connectors whose OAuth requests time out after `limit`.
async fn serve_with_timeout(rig: &Rig, limit: Duration) -> (SocketAddr, String) {
    let mut state = AppState::with_cimd(
        rig.server.store.clone(),
        rig.server.grants.clone(),
        rig.server.clock.clone(),
        hermetic_cimd(),
    );
    state.request_timeout = limit;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = mcp_connector::serve::Limits {
        header_read_timeout: limit,
    };
    let stop = std::future::pending();
    tokio::spawn(mcp_connector::serve::serve_with(
        listener,
        router(state),
        stop,
        limits,
    ));
    (addr, rig.host.clone())
}

/// Slowloris: a client that sends half a request head and then nothing, or nothing at
/// all, is cut once the header timeout has passed, while other clients are served.
#[tokio::test]
async fn a_trickled_request_head_is_cut_at_the_header_timeout() {
    let limit = Duration::from_millis(500);
    let rig = Rig::over(TestServer::start(json!({}), None).await, hermetic_cimd());
    let (addr, host) = serve_with_timeout(&rig, limit).await;

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let half = format!("GET /.well-known/oauth-authorization-server HTTP/1.1\r\nhost: {host}\r\n");
    slow.write_all(half.as_bytes()).await.unwrap();

    let other = reqwest::Client::new()
        .get(format!(
            "http://{addr}/.well-known/oauth-authorization-server"
        ))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(crate::support::WAIT, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent head was never cut");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= limit,
        "cut after {elapsed:?}, before the timeout"
    );
    assert!(elapsed < limit * 6, "cut only after {elapsed:?}");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains(" 200 "),
        "the half-sent request was answered: {rest}"
    );

    // A connection that never sends a byte is cut the same way.
    let mut nothing = Vec::new();
    let closed = tokio::time::timeout(crate::support::WAIT, silent.read_to_end(&mut nothing));
    assert!(closed.await.is_ok(), "a silent connection was never cut");
    assert!(nothing.is_empty());
}

/// Sends the head of a request and part of its body, then nothing more; the answer, or
/// `None` when none came within `wait`.
async fn trickle(addr: SocketAddr, host: &str, path: &str, wait: Duration) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{\"redirect_uris\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut answer = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_trickled_body_times_out_on_oauth_routes_but_mcp_streams_are_not_cut() {
    let limit = Duration::from_millis(700);
    // An MCP server that takes longer than the OAuth bound to answer.
    let slow = Router::new().route(
        "/mcp",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
        }),
    );
    let mcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mcp_addr = mcp_listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(mcp_listener, slow).await.ok();
    });
    let server = TestServer::start(
        json!({"mcpServer": {"url": format!("http://{mcp_addr}/mcp")}}),
        None,
    )
    .await;
    let rig = Rig::over(server, hermetic_cimd());
    let (addr, host) = serve_with_timeout(&rig, limit).await;

    for path in ["/register", "/token", "/revoke"] {
        let started = std::time::Instant::now();
        let answer = trickle(addr, &host, path, Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|| panic!("row {path:?}: no answer in 5 s"));
        assert!(answer.starts_with("HTTP/1.1 408"), "row {path:?}: {answer}");
        assert!(
            answer.contains("\"error\":\"invalid_request\""),
            "row {path:?}: {answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "row {path:?}");
    }

    let client = rig.public_client(&[CLI]).await;
    let access = rig.tokens(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("host", &host)
        .bearer_auth(access)
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "/mcp is not bound by the OAuth timeout");
}

#[tokio::test]
async fn crlf_never_reaches_a_header_unescaped() {
    let rig = Rig::start().await;
    let encoded = "http://127.0.0.1:5000/cb%0d%0aSet-Cookie:%20a=b";
    let client = rig.public_client(&[CLI, encoded]).await;
    let (_, challenge) = pkce();
    let with = |k: &'static str, v: &'static str, redirect: &'static str| {
        let mut q = login(&client, redirect, &challenge);
        q.retain(|(key, _)| *key != k);
        q.push((k, v));
        q
    };

    #[rustfmt::skip]
    let rows: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with("state", "x\r\nSet-Cookie: a=b", CLI), "CRLF in state"),
        (with("state", "x\nLocation: https://evil.com", CLI), "LF in state"),
        (with("scope", "mcp\r\nSet-Cookie: a=b", CLI), "CRLF in a scope echoed in the error"),
        (with("resource", "x\r\nSet-Cookie: a=b", CLI), "CRLF in a resource echoed back"),
        (with("state", "s", encoded), "a registered URI with encoded CRLF stays encoded"),
        (with("redirect_uri", "http://127.0.0.1:5000/cb\r\nSet-Cookie: a=b", CLI),
            "raw CRLF in redirect_uri"),
    ];
    for (query, why) in rows {
        let answer = rig.authorize(&query).await;
        let shown = format!("{query:?}");
        row!(
            !answer.headers.contains_key(header::SET_COOKIE),
            shown,
            why,
            answer
        );
        for (name, value) in &answer.headers {
            let raw = value.as_bytes();
            let clean = !raw.contains(&b'\r') && !raw.contains(&b'\n');
            row!(clean, shown, format!("{why}: header {name}"), answer);
        }
        if let Some(location) = answer.location() {
            let ok = url::Url::parse(&location).is_ok_and(|u| u.host_str() == Some("127.0.0.1"));
            row!(ok, shown, why, answer);
        }
    }
}

/// Sends `request` as it is on a connection of its own; the status and body of the answer.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(crate::support::WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();

    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The host a request is for is its target's when the target is absolute (RFC 9112
/// 3.2.2), so a `Host` header cannot route it elsewhere; two `Host` headers, or none, are
/// refused (RFC 9112 3.2) rather than the first one used or the request called unknown.
#[tokio::test]
async fn the_target_names_the_host_and_two_host_headers_are_refused() {
    let s = TestServer::start(json!({}), None).await;
    let path = "/.well-known/oauth-authorization-server";
    let ours = s.addr;

    #[rustfmt::skip]
    let rows = [
        (format!("GET http://{ours}{path} HTTP/1.1\r\nhost: evil.example\r\n"), 200,
            "an absolute target names our host; the Host header another"),
        (format!("GET http://evil.example{path} HTTP/1.1\r\nhost: {ours}\r\n"), 404,
            "an absolute target names another host; the Host header ours"),
        (format!("GET {path} HTTP/1.1\r\nhost: {ours}\r\nhost: evil.example\r\n"), 400,
            "two Host headers, ours first"),
        (format!("GET {path} HTTP/1.1\r\nhost: evil.example\r\nhost: {ours}\r\n"), 400,
            "two Host headers, ours last"),
        (format!("GET {path} HTTP/1.1\r\n"), 400, "no Host header and an origin-form target"),
    ];
    for (head, status, why) in rows {
        let (got, body) = raw(s.addr, &format!("{head}connection: close\r\n\r\n")).await;
        assert_eq!(got, status, "{why}: {body}");
        if status != 200 {
            let error: Value = serde_json::from_str(&body).unwrap_or_default();
            assert!(
                error["error"].is_string(),
                "{why}: not a JSON error: {body}"
            );
        }
    }
}

/// A request head of 20 KB, over nginx's default but under the bound, is served over
/// HTTP/1.1 and HTTP/2 alike.
#[tokio::test]
async fn a_large_request_head_is_served_over_http1_and_http2_alike() {
    let s = TestServer::start(json!({}), None).await;
    let large = "x".repeat(20_000);
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    for (client, version) in [(reqwest::Client::new(), "HTTP/1.1"), (http2, "HTTP/2")] {
        let answer = client
            .get(s.url("/.well-known/oauth-authorization-server"))
            .header("x-large", &large)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{version}");
    }
}

/// Stopping the server does not wait for a connection that has sent nothing yet: such a
/// connection is not hyper's, so hyper's graceful shutdown would wait out its timeout.
#[tokio::test]
async fn stopping_does_not_wait_for_a_connection_that_sent_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "served" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = mcp_connector::serve::Limits {
        header_read_timeout: Duration::from_secs(600),
    };
    let server = tokio::spawn(mcp_connector::serve::serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        limits,
    ));

    // Connections are accepted in turn, so once the second is answered the first is open.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw(
        addr,
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "served"));

    stop.send(()).unwrap();
    tokio::time::timeout(crate::support::WAIT, server)
        .await
        .expect("stopping waited for the silent connection")
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(silent.read_to_end(&mut rest).await.unwrap(), 0);
}
