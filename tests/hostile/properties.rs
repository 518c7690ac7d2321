//! Property tests: generated input for every parser an attacker reaches, each answer judged
//! by an oracle written without the code under test.

use super::*;

/// 256 cases a property unless `PROPTEST_CASES` says otherwise; no regression files.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn check<S>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Never a 5xx; a redirect has a Location without CR or LF; anything else is JSON, with
/// an `error` member when it is an error (SPEC 5).
fn well_formed(answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(!answer.status.is_server_error(), "5xx: {}", answer.show());
    if answer.status == StatusCode::FOUND {
        let location = answer
            .location()
            .ok_or_else(|| fail("302 without Location"))?;
        prop_assert!(!location.contains(['\r', '\n']), "CR/LF in {location:?}");
        prop_assert!(
            url::Url::parse(&location).is_ok(),
            "bad Location {location:?}"
        );
        return Ok(());
    }
    let json_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    prop_assert!(json_type, "not JSON: {}", answer.show());
    let body = answer.json();
    prop_assert!(
        body.is_object(),
        "body is not a JSON object: {}",
        answer.show()
    );
    if answer.status.is_client_error() {
        prop_assert!(
            body["error"].is_string(),
            "no error code: {}",
            answer.show()
        );
    }
    Ok(())
}

const SCHEMES: &[&str] = &[
    "http",
    "https",
    "HTTP",
    "hTTps",
    "javascript",
    "JavaScript",
    "data",
    "file",
    "vbscript",
    "cursor",
    "com.example.app",
    "ftp",
    "blob",
    "",
];
const SEPARATORS: &[&str] = &["://", "://", "://", ":", ":/", ":///", "//", ":\\\\"];
const USERINFO: &[&str] = &[
    "",
    "",
    "",
    "user@",
    "claude.ai@",
    "a:b@",
    "%40@",
    "localhost@",
];
const HOSTS: &[&str] = &[
    "localhost",
    "LocalHost",
    "127.0.0.1",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "127.000.000.001",
    "[::1]",
    "[0:0::1]",
    "[::ffff:127.0.0.1]",
    "claude.ai",
    "CLAUDE.AI",
    "claude.ai.",
    "claude.ai.evil.com",
    "evil-claude.ai",
    "claude.com",
    "claude.com:443@evil.com",
    "cl\u{0430}ude.ai",
    "\u{ff43}laude.ai",
    "xn--claude-9ya.ai",
    "localhost.evil.com",
    "localhost.",
    "%6cocalhost",
    "claude%2eai",
    "127.0.0.1.nip.io",
    "evil.com",
    "app.example.com",
    "anysphere.cursor-retrieval",
    "",
];
const PORTS: &[&str] = &[
    "", "", ":5000", ":0", ":65535", ":65536", ":*", ":05000", ":", ":443", ":80", ":8000",
];
const PATHS: &[&str] = &[
    "",
    "/",
    "/callback",
    "/cb",
    "/api/mcp/auth_callback",
    "/api/mcp/auth_callback/",
    "/api/mcp/../mcp/auth_callback",
    "/api/mcp/%2e%2e/auth_callback",
    "/api/mcp/auth%5fcallback",
    "/a b",
    "/%0d%0aSet-Cookie:%20x=y",
    "\\@evil.com",
    "/\u{2028}",
    "//evil.com",
];
const QUERIES: &[&str] = &["", "", "?", "?a=1", "?x=1", "?redirect=https://evil.com"];
const FRAGMENTS: &[&str] = &["", "", "", "#", "#x", "#@evil.com"];
const JUNK: &[&str] = &[
    "\r", "\n", "\r\n", "\t", " ", "\0", "\u{a0}", "\\", "@", "#", "%", "%00",
];

fn sel(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    select(options)
}

/// Inserts `junk` at a character boundary chosen by `at`.
fn insert_at(text: &str, at: Index, junk: &str) -> String {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let at = bounds[at.index(bounds.len())];
    format!("{}{junk}{}", &text[..at], &text[at..])
}

/// Redirect URIs built from pieces that are each known to trip some matcher.
fn uri_from_pieces() -> impl Strategy<Value = String> + Clone {
    let head = (
        sel(SCHEMES),
        sel(SEPARATORS),
        sel(USERINFO),
        sel(HOSTS),
        sel(PORTS),
    );
    let tail = (sel(PATHS), sel(QUERIES), sel(FRAGMENTS));
    let junk = proptest::option::weighted(0.2, (any::<Index>(), sel(JUNK)));
    (head, tail, junk).prop_map(|((s, sep, u, h, p), (path, q, f), junk)| {
        let uri = format!("{s}{sep}{u}{h}{p}{path}{q}{f}");
        match junk {
            Some((at, j)) => insert_at(&uri, at, j),
            None => uri,
        }
    })
}

/// Any text: arbitrary Unicode, printable ASCII, or URIs from pieces.
fn uri_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,120}",
        uri_from_pieces(),
        uri_from_pieces(),
    ]
}

/// What a URI's text says its host is: between `://` (after any userinfo) and the port,
/// path or query.
fn raw_host(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
}

/// Nothing in the text that a browser could read another way.
fn nothing_hidden(uri: &str) -> Result<url::Url, String> {
    if !uri.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a space, control or non-ASCII character".into());
    }
    if let Some(c) = uri.chars().find(|c| matches!(c, '@' | '#' | '\\')) {
        return Err(format!("`{c}` in the URI"));
    }
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !raw_host(uri).eq_ignore_ascii_case(host) {
        return Err(format!(
            "host written {:?} but read {host:?}",
            raw_host(uri)
        ));
    }
    Ok(url)
}

/// Judged without the matcher: a URI the default allowlist accepted has the scheme and
/// host of one of its entries (and the callback path of the claude entries).
fn within_default_allowlist(uri: &str) -> Result<(), String> {
    let url = nothing_hidden(uri)?;
    match (url.scheme(), url.host_str()) {
        ("http", Some("localhost" | "127.0.0.1")) => Ok(()),
        ("https", Some("claude.ai" | "claude.com"))
            if url.port().is_none() && url.path() == "/api/mcp/auth_callback" =>
        {
            Ok(())
        }
        (scheme, host) => Err(format!("outside the allowlist: {scheme} {host:?}")),
    }
}

const CUSTOM_LIST: [&str; 3] = ["https://app.example.com", "cursor://", "http://[::1]:*/cb"];

/// The same, for [`CUSTOM_LIST`].
fn within_custom_allowlist(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    if url.scheme() == "cursor" {
        return Ok(());
    }
    nothing_hidden(uri)?;
    match (url.scheme(), url.host_str(), url.path()) {
        ("https", Some("app.example.com"), _) if url.port().is_none() => Ok(()),
        ("http", Some("[::1]"), "/cb") => Ok(()),
        (scheme, host, path) => Err(format!("outside the list: {scheme} {host:?} {path}")),
    }
}

const REGISTERED: [&str; 6] = [
    CLI,
    "http://localhost/cb",
    CLAUDE,
    "http://[::1]:8000/cb",
    "cursor://anysphere.cursor-retrieval/cb",
    "http://127.0.0.1:5000/callback?a=1",
];

/// Judged without the matcher: the registered URI matched is the one requested, or a
/// loopback one that differs from it in the port alone (RFC 8252 7.3).
fn sound_match(requested: &str, matched: &str) -> Result<(), String> {
    if !REGISTERED.contains(&matched) {
        return Err(format!("matched {matched:?}, which is not registered"));
    }
    if requested == matched {
        return Ok(());
    }
    let req = nothing_hidden(requested)?;
    let reg = url::Url::parse(matched).map_err(|e| e.to_string())?;
    let loopback = matches!(reg.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let same = req.scheme() == reg.scheme()
        && req.host_str() == reg.host_str()
        && req.path() == reg.path()
        && req.query() == reg.query();
    if loopback && same {
        Ok(())
    } else {
        Err(format!("{requested:?} matched {matched:?}"))
    }
}

#[test]
fn the_redirect_matcher_never_panics_and_allows_nothing_off_its_list() {
    let default = Allowlist::default();
    let custom = Allowlist::parse(&CUSTOM_LIST).unwrap();
    let registered: Vec<String> = REGISTERED.iter().map(|s| s.to_string()).collect();

    check(uri_text(), |uri| {
        if default.check(&uri).is_ok() {
            within_default_allowlist(&uri).map_err(fail)?;
        }
        if custom.check(&uri).is_ok() {
            within_custom_allowlist(&uri).map_err(fail)?;
        }
        if let Some(matched) = match_registered(&registered, &uri) {
            sound_match(&uri, matched).map_err(fail)?;
        }
        Ok(())
    });
}

#[test]
fn allowlist_entries_never_panic_when_parsed() {
    check(vec(uri_text(), 0..4), |entries| {
        if let Ok(list) = Allowlist::parse(&entries) {
            let _ = list.check(CLI);
        }
        Ok(())
    });
}

const FIELDS: &[&str] = &[
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "scope",
    "client_id",
    "client_secret",
    "jwks",
    "software_statement",
];

/// Any JSON, with keys that are often the fields of client metadata.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        uri_text().prop_map(Value::from),
    ];
    let key = prop_oneof![sel(FIELDS).prop_map(String::from), "[a-z_]{0,12}"];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            hash_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const AUTH_METHODS: &[&str] = &[
    "none",
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "client_secret_jwt",
    "",
    "NONE",
];
const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "implicit",
    "client_credentials",
    "password",
];
const RESPONSE_TYPES: &[&str] = &["code", "token", "id_token", "code token"];

/// Registration metadata from plausible and hostile field values.
fn metadata() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(vec(uri_text(), 0..4)),
        proptest::option::of(sel(AUTH_METHODS)),
        proptest::option::of(vec(sel(GRANT_TYPES), 0..3)),
        proptest::option::of(vec(sel(RESPONSE_TYPES), 0..2)),
        proptest::option::of(prop_oneof![any::<String>(), "x{300}"]),
        proptest::option::of(prop_oneof![Just("mcp".to_string()), any::<String>()]),
    )
        .prop_map(|(uris, method, grants, responses, name, scope)| {
            let mut m = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("redirect_uris", uris.map(|u| json!(u)));
            put("token_endpoint_auth_method", method.map(|x| json!(x)));
            put("grant_types", grants.map(|g| json!(g)));
            put("response_types", responses.map(|r| json!(r)));
            put("client_name", name.map(Value::from));
            put("scope", scope.map(Value::from));
            Value::Object(m)
        })
}

fn registration_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => metadata().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..400),
    ]
}

#[test]
fn registration_answers_json_and_registers_only_allowed_redirects() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());

    check(registration_body(), |body| {
        rt.block_on(async {
            let answer = rig
                .post_on(
                    &rig.host,
                    "/register",
                    "application/json",
                    &[],
                    body.clone(),
                )
                .await;
            well_formed(&answer)?;

            let reply = answer.json();
            if answer.status != StatusCode::CREATED {
                let code = reply["error"].as_str().unwrap_or_default();
                let known = ["invalid_redirect_uri", "invalid_client_metadata"];
                prop_assert!(known.contains(&code), "{}", answer.show());
                prop_assert_eq!(answer.status, StatusCode::BAD_REQUEST);
                return Ok(());
            }

            let sent: Value = serde_json::from_slice(&body).unwrap();
            for uri in reply["redirect_uris"].as_array().into_iter().flatten() {
                let uri = uri.as_str().unwrap_or_default();
                within_default_allowlist(uri).map_err(fail)?;
            }
            prop_assert_eq!(&reply["redirect_uris"], &sent["redirect_uris"]);
            let method = sent["token_endpoint_auth_method"]
                .as_str()
                .unwrap_or("client_secret_basic");
            prop_assert_eq!(reply["token_endpoint_auth_method"].as_str(), Some(method));
            prop_assert_eq!(reply["client_secret"].is_string(), method != "none");
            Ok(())
        })
    });
}

/// What a value in a generated request stands for; `$` names are filled in per case.
const TOKEN_VALUES: &[&str] = &[
    "$CODE",
    "$CODE",
    "$CODE_TAMPERED",
    "$VERIFIER",
    "$VERIFIER",
    "$PUBLIC",
    "$PUBLIC",
    "$CONFIDENTIAL",
    "$SECRET",
    "$REFRESH",
    "$REFRESH_TAMPERED",
    "$ACCESS",
    CLI,
    "http://127.0.0.1:5001/callback",
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "mcp",
    "mcp offline_access",
    "admin",
    "",
];
const TOKEN_KEYS: &[&str] = &[
    "grant_type",
    "grant_type",
    "code",
    "code_verifier",
    "client_id",
    "client_id",
    "client_secret",
    "redirect_uri",
    "refresh_token",
    "scope",
    "resource",
];
const AUTH_HEADERS: &[&str] = &[
    "",
    "",
    "Basic $PUBLIC:",
    "Basic $CONFIDENTIAL:$SECRET",
    "Basic $CONFIDENTIAL:wrong",
    "Basic !!!",
    "Basic Og==",
    "Bearer $ACCESS",
];

fn value_text(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => sel(pool).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// A `/token` request: form pairs and an `Authorization` header, in `$` names.
fn token_request() -> impl Strategy<Value = (Vec<(String, String)>, &'static str)> {
    let key = prop_oneof![6 => sel(TOKEN_KEYS).prop_map(String::from), 1 => "[a-z_]{0,8}"];
    (
        vec((key, value_text(TOKEN_VALUES)), 0..8),
        sel(AUTH_HEADERS),
    )
}

/// Fills the `$` names of one case.
struct Secrets {
    values: Vec<(&'static str, String)>,
}

impl Secrets {
    fn fill(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest names first, so `$CODE` does not eat `$CODE_TAMPERED`.
        for (name, value) in &self.values {
            out = out.replace(name, value);
        }
        out
    }
}

#[test]
fn token_requests_answer_json_and_issue_only_for_the_genuine_grant() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let public = rt.block_on(rig.public_client(&[CLI]));
    let (confidential, secret) = rt.block_on(rig.confidential_client("client_secret_basic"));
    let tokens = rt.block_on(rig.tokens(&public));
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    check(token_request(), |(pairs, auth)| {
        rt.block_on(async {
            let (verifier, challenge) = pkce();
            let code = rig.code(&public, CLI, &challenge).await;
            let secrets = Secrets {
                values: vec![
                    ("$CODE_TAMPERED", tamper(&code)),
                    ("$CODE", code.clone()),
                    ("$VERIFIER", verifier.clone()),
                    ("$PUBLIC", public.clone()),
                    ("$CONFIDENTIAL", confidential.clone()),
                    ("$SECRET", secret.clone()),
                    ("$REFRESH_TAMPERED", tamper(&refresh)),
                    ("$REFRESH", refresh.clone()),
                    ("$ACCESS", access.clone()),
                ],
            };
            let filled: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), secrets.fill(v)))
                .collect();
            let pairs_ref: Vec<(&str, &str)> = filled
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut headers = Vec::new();
            let auth = secrets.fill(auth);
            if let Some(basic) = auth.strip_prefix("Basic ") {
                let value = match basic.split_once(':') {
                    Some((id, s)) => basic_header(id, s),
                    None => auth.clone(),
                };
                headers.push(("authorization", value));
            } else if !auth.is_empty() {
                headers.push(("authorization", auth.clone()));
            }
            let body = form(&pairs_ref).into_bytes();
            let content_type = "application/x-www-form-urlencoded";
            let answer = rig
                .post_on(&rig.host, "/token", content_type, &headers, body)
                .await;
            well_formed(&answer)?;

            let get = |k: &str| {
                let found: Vec<&str> = pairs_ref
                    .iter()
                    .filter(|(key, _)| *key == k)
                    .map(|(_, v)| *v)
                    .collect();
                (found.len() == 1).then(|| found[0])
            };
            if answer.status == StatusCode::OK {
                let basic_id = auth
                    .strip_prefix("Basic ")
                    .and_then(|b| b.split_once(':'))
                    .map(|(id, _)| id.to_string());
                let client = basic_id.or_else(|| get("client_id").map(String::from));
                prop_assert_eq!(client.as_deref(), Some(public.as_str()), "issued to");
                let genuine = match get("grant_type") {
                    Some("authorization_code") => {
                        get("code") == Some(code.as_str())
                            && get("code_verifier") == Some(verifier.as_str())
                    }
                    Some("refresh_token") => get("refresh_token") == Some(refresh.as_str()),
                    _ => false,
                };
                prop_assert!(genuine, "issued for a forged grant: {}", answer.show());
                let body = answer.json();
                prop_assert!(body["expires_in"].is_i64());
                let no_store = answer.headers.get(header::CACHE_CONTROL);
                prop_assert_eq!(no_store.and_then(|v| v.to_str().ok()), Some("no-store"));
            } else {
                let error = answer.error().unwrap_or_default();
                let unauthorized = answer.status == StatusCode::UNAUTHORIZED;
                prop_assert_eq!(unauthorized, error == "invalid_client", "{}", answer.show());
                if unauthorized && auth.starts_with("Basic ") {
                    let challenge = answer.headers.get(header::WWW_AUTHENTICATE);
                    prop_assert!(challenge.is_some(), "401 to Basic without a challenge");
                }
            }
            Ok(())
        })
    });
}

const AUTHORIZE_KEYS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
    "resource",
    "prompt",
    "nonce",
];
const AUTHORIZE_VALUES: &[&str] = &[
    "$CLIENT",
    "$CLIENT_TAMPERED",
    "$CHALLENGE",
    CLI,
    "http://127.0.0.1:5999/callback",
    "http://127.0.0.1:5000/callback/",
    "http://localhost:5000/callback",
    CLAUDE,
    "https://claude.ai.evil.com/api/mcp/auth_callback",
    LOOPBACK_QUERY,
    "http://localhost:7/cb?x=1",
    "http://localhost/cb?x=2",
    "javascript:alert(1)",
    "code",
    "token",
    "S256",
    "plain",
    "mcp",
    "mcp offline_access",
    "admin",
    "$RESOURCE",
    "https://other.example/mcp",
    "consent",
    "",
    "a&b=c",
    "\r\nSet-Cookie: x=y",
];

/// An `/authorize` query: a good request with some pairs dropped, others appended.
fn authorize_request() -> impl Strategy<Value = Vec<(String, String)>> {
    let base = [
        ("response_type", "code"),
        ("client_id", "$CLIENT"),
        ("redirect_uri", CLI),
        ("code_challenge", "$CHALLENGE"),
        ("code_challenge_method", "S256"),
    ];
    let key = prop_oneof![6 => sel(AUTHORIZE_KEYS).prop_map(String::from), 1 => "[a-z_]{0,8}"];
    let state = proptest::option::of(prop_oneof!["[ -~]{0,40}", any::<String>()]);
    (
        vec(any::<bool>(), 5),
        state,
        vec((key, value_text(AUTHORIZE_VALUES)), 0..4),
    )
        .prop_map(move |(keep, state, extra)| {
            let mut pairs: Vec<(String, String)> = base
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|((k, v), _)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(s) = state {
                pairs.push(("state".into(), s));
            }
            pairs.extend(extra);
            pairs
        })
}

/// Judged without the matcher: a redirect goes to a registered URI, on another port only
/// for loopback.
fn to_a_registered_uri(location: &str, registered: &[&str]) -> Result<(), String> {
    let to = url::Url::parse(location).map_err(|e| e.to_string())?;
    let ok = registered.iter().any(|r| {
        let r = url::Url::parse(r).unwrap();
        let loopback = matches!(r.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        r.scheme() == to.scheme()
            && r.host_str() == to.host_str()
            && r.path() == to.path()
            && (r.port() == to.port() || loopback)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("redirect to an unregistered URI: {location}"))
    }
}

#[test]
fn authorize_never_redirects_anywhere_unregistered_and_echoes_state() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let registered = [CLI, CLAUDE, LOOPBACK_QUERY];
    let client = rt.block_on(rig.public_client(&registered));
    let (_, challenge) = pkce();
    let resource = format!("{}/mcp", rig.issuer());
    let secrets = Secrets {
        values: vec![
            ("$CLIENT_TAMPERED", tamper(&client)),
            ("$CLIENT", client.clone()),
            ("$CHALLENGE", challenge),
            ("$RESOURCE", resource),
        ],
    };

    check(authorize_request(), |pairs| {
        rt.block_on(async {
            let filled: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), secrets.fill(v)))
                .collect();
            let pairs_ref: Vec<(&str, &str)> = filled
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let answer = rig.authorize(&pairs_ref).await;
            well_formed(&answer)?;

            if answer.status != StatusCode::FOUND {
                return Ok(());
            }
            let ids: Vec<&str> = pairs_ref
                .iter()
                .filter(|(k, _)| *k == "client_id")
                .map(|(_, v)| *v)
                .collect();
            prop_assert_eq!(ids, vec![client.as_str()], "redirect for another client");
            let location = answer.location().unwrap();
            to_a_registered_uri(&location, &registered).map_err(fail)?;

            let back = answer.redirect_pairs();
            prop_assert_eq!(count(&back, "iss"), 1, "{}", location);
            prop_assert_eq!(pair(&back, "iss"), Some(rig.issuer()));
            let states: Vec<String> = filled
                .iter()
                .filter(|(k, _)| k == "state")
                .map(|(_, v)| v.clone())
                .collect();
            prop_assert!(states.len() <= 1, "a repeated state was accepted");
            prop_assert_eq!(pair(&back, "state"), states.first().cloned());
            prop_assert!(count(&back, "state") <= 1);
            Ok(())
        })
    });
}

/// A tiny loopback server answering `/doc/{n}` with the body stored for `n`.
struct DocServer {
    addr: SocketAddr,
    docs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    next: AtomicUsize,
    _task: tokio::task::JoinHandle<()>,
}

impl DocServer {
    async fn start() -> DocServer {
        let docs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = docs.clone();
        let app = Router::new().route(
            "/doc/{n}",
            axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<String>| {
                let body = served.lock().unwrap().get(&n).cloned().unwrap_or_default();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        DocServer {
            addr,
            docs,
            next: AtomicUsize::new(0),
            _task: task,
        }
    }

    /// Stores a body at a fresh URL (fresh, so the fetcher's cache never answers).
    fn put(&self, body: impl FnOnce(&str) -> Vec<u8>) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let url = format!("http://{}/doc/{n}", self.addr);
        self.docs.lock().unwrap().insert(n, body(&url));
        url
    }
}

/// A Client ID Metadata Document to generate: each member present or not, right or wrong.
#[derive(Clone, Debug)]
struct DocCase {
    client_id: u8,
    members: Vec<(&'static str, Value)>,
    junk: Option<Value>,
    raw: Option<Vec<u8>>,
}

fn member_values() -> impl Strategy<Value = Value> {
    let uris = vec(
        sel(&[CLI, CLAUDE, "", "javascript:x", "http://localhost/cb"]),
        0..3,
    );
    prop_oneof![
        uris.prop_map(|u| json!(u)),
        vec(sel(GRANT_TYPES), 0..3).prop_map(|g| json!(g)),
        vec(sel(RESPONSE_TYPES), 0..2).prop_map(|r| json!(r)),
        sel(AUTH_METHODS).prop_map(|m| json!(m)),
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        json_value(),
    ]
}

const DOC_MEMBERS: &[&str] = &[
    "redirect_uris",
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "scope",
    "client_secret",
    "client_secret_expires_at",
];

fn doc_case() -> impl Strategy<Value = DocCase> {
    let members = vec((sel(DOC_MEMBERS), member_values()), 0..6);
    let raw = proptest::option::weighted(0.15, vec(any::<u8>(), 0..200));
    let junk = proptest::option::weighted(0.1, json_value());
    (0u8..5, members, junk, raw).prop_map(|(client_id, members, junk, raw)| DocCase {
        client_id,
        members,
        junk,
        raw,
    })
}

impl DocCase {
    fn body(&self, url: &str) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        if let Some(junk) = &self.junk {
            return junk.to_string().into_bytes();
        }
        let mut doc = serde_json::Map::new();
        let id = match self.client_id {
            0 | 1 => Some(json!(url)),
            2 => Some(json!(format!("{url}/"))),
            3 => Some(json!(7)),
            _ => None,
        };
        if let Some(id) = id {
            doc.insert("client_id".into(), id);
        }
        for (k, v) in &self.members {
            doc.insert(k.to_string(), v.clone());
        }
        Value::Object(doc).to_string().into_bytes()
    }
}

/// Judged without the parser: whether a document body is valid for `url` (CIMD draft, and
/// this server's `none`-only rule).
fn valid_document(body: &[u8], url: &str) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let string_or_absent = |k: &str| doc.get(k).is_none_or(|v| v.is_null() || v.is_string());
    let list_with = |k: &str, item: &str| match doc.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => {
            a.iter().all(Value::is_string) && a.iter().any(|x| x.as_str() == Some(item))
        }
        Some(_) => false,
    };
    let uris_ok = match doc.get("redirect_uris") {
        Some(Value::Array(a)) => !a.is_empty() && a.iter().all(Value::is_string),
        _ => false,
    };
    let method_ok = match doc.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => true,
        Some(v) => v.as_str() == Some("none"),
    };

    doc.get("client_id").and_then(Value::as_str) == Some(url)
        && !doc.contains_key("client_secret")
        && !doc.contains_key("client_secret_expires_at")
        && uris_ok
        && method_ok
        && list_with("grant_types", "authorization_code")
        && list_with("response_types", "code")
        && string_or_absent("client_name")
        && string_or_absent("scope")
}

#[test]
fn client_metadata_documents_are_accepted_exactly_when_valid() {
    let rt = runtime();
    let docs = rt.block_on(DocServer::start());
    let fetcher = CimdFetcher::new(FetcherConfig {
        allow_private: true,
        max_cache_entries: 10_000,
        ..FetcherConfig::default()
    });

    check(doc_case(), |case| {
        rt.block_on(async {
            let url = docs.put(|url| case.body(url));
            let body = case.body(&url);
            let got = fetcher.fetch(&url).await;
            let valid = valid_document(&body, &url);
            prop_assert_eq!(
                got.is_ok(),
                valid,
                "{} -> {:?}",
                String::from_utf8_lossy(&body),
                got.as_ref().err()
            );
            if let Ok(doc) = got {
                prop_assert_eq!(&doc.client_id, &url);
                prop_assert!(!doc.redirect_uris.is_empty());
            }
            Ok(())
        })
    });
}

fn test_keys() -> Keys {
    let now = START.parse().unwrap();
    let dcr = Keyset {
        keys: vec![KeyKind::Seal.generate(now).unwrap()],
    };
    let signing = Keyset {
        keys: vec![KeyKind::Signing.generate(now).unwrap()],
    };
    Keys::from_keysets(&dcr, &signing).unwrap()
}

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "http://127.0.0.1:8080/mcp";

fn claims() -> AccessClaims {
    let now = START.parse::<jiff::Timestamp>().unwrap().as_second();
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "alice".into(),
        exp: now + 3600,
        iat: now,
        jti: "j".into(),
        client_id: "c".into(),
        scope: "mcp".into(),
        preferred_username: "alice".into(),
        groups: vec![],
        gid: "g".into(),
    }
}

/// One change to a text: replace, insert or delete a character, truncate, or swap two.
fn mutate(text: &str, (at, kind, c): (Index, u8, char)) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return c.to_string();
    }
    let i = at.index(chars.len());
    let mut out = chars.clone();
    match kind % 5 {
        0 => out[i] = c,
        1 => out.insert(i, c),
        2 => {
            out.remove(i);
        }
        3 => out.truncate(i),
        _ => out.swap(i, (i + 1) % chars.len()),
    }
    out.into_iter().collect()
}

fn mutation() -> impl Strategy<Value = (Index, u8, char)> {
    let b64 = "[A-Za-z0-9_=+/.-]".prop_map(|s| s.chars().next().unwrap_or('A'));
    (any::<Index>(), any::<u8>(), prop_oneof![b64, any::<char>()])
}

/// JWT-shaped text: three base64url parts of generated headers, claims and signatures.
fn jwt_shaped(kid: String) -> impl Strategy<Value = String> {
    let alg = sel(&["ES256", "none", "HS256", "RS256", "es256", ""]);
    let kid = prop_oneof![Just(kid), any::<String>()];
    let payload = prop_oneof![Just(serde_json::to_value(claims()).unwrap()), json_value()];
    let signature = prop_oneof![vec(any::<u8>(), 0..80), Just(vec![])];
    (alg, kid, payload, signature).prop_map(|(alg, kid, payload, sig)| {
        let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string()),
            B64.encode(sig)
        )
    })
}

#[test]
fn bearer_tokens_that_are_not_ours_never_verify() {
    let keys = test_keys();
    let now = Some(START.parse::<jiff::Timestamp>().unwrap().as_second());
    let genuine = mint(&keys, &claims()).unwrap();
    assert!(verify(&keys, &genuine, ISSUER, AUDIENCE, now).is_ok());

    let kid = keys.current_signing().kid.clone();
    let original = genuine.clone();
    let inputs = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{0,400}",
        jwt_shaped(kid),
        mutation().prop_map(move |m| mutate(&original, m)),
    ];
    check(inputs, |token| {
        if token != genuine {
            let got = verify(&keys, &token, ISSUER, AUDIENCE, now);
            prop_assert!(got.is_err(), "{token:?} verified: {got:?}");
        }
        Ok(())
    });
}

#[test]
fn a_sealed_value_changed_in_any_way_never_opens() {
    let keys = test_keys();
    let value = json!({"r": [CLI], "m": "none", "t": 1});
    let sealed = seal(&keys, Purpose::Client, "test/a", &value).unwrap();
    let opened = open::<Value>(&keys, Purpose::Client, "test/a", &sealed);
    assert_eq!(opened.map(|(v, _)| v), Some(value));

    let changes = vec(mutation(), 1..4);
    check(changes, |changes| {
        let changed = changes.iter().fold(sealed.clone(), |s, m| mutate(&s, *m));
        if changed != sealed {
            let got = open::<Value>(&keys, Purpose::Client, "test/a", &changed);
            prop_assert!(got.is_none(), "{changed:?} opened");
        }
        for purpose in [Purpose::Pending, Purpose::Code, Purpose::Refresh] {
            prop_assert!(open::<Value>(&keys, purpose, "test/a", &sealed).is_none());
        }
        prop_assert!(open::<Value>(&keys, Purpose::Client, "test/b", &sealed).is_none());
        Ok(())
    });
}
