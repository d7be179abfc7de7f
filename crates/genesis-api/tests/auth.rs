//! The auth suite: the seed's `test_auth` behaviours and a few more, through real HTTP requests
//! to the real API, each test on a database of its own.

#[path = "auth/emails.rs"]
mod emails;

use genesis_api::AppState;
use genesis_settings::Secret;
use genesis_test_support as support;
use serde_json::{Value, json};
use support::TestApp;

const PASSWORD: &str = "correct horse battery";

/// Status, error code and message of an error response; fails unless the body has the API's
/// error shape.
async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("an error body in JSON");
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some() && message.is_some(),
        "not the error shape: {body}"
    );
    (
        status,
        code.unwrap().to_owned(),
        message.unwrap().to_owned(),
    )
}

#[tokio::test]
async fn register_creates_an_account() {
    let app = TestApp::spawn().await;
    let res = app.register("  Alice@Example.com ", PASSWORD).await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], "alice@example.com", "stored normalised");
    assert!(user["id"].as_i64().unwrap() > 0);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let fields: Vec<&String> = user.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        ["created_at", "email", "id"],
        "no hash in the answer"
    );
}

#[tokio::test]
async fn duplicate_register_is_refused() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.register("bob@example.com", PASSWORD).await.status(),
        201
    );
    for again in ["bob@example.com", "BOB@example.com"] {
        let (status, code, _) = error_of(app.register(again, "another password").await).await;
        assert_eq!((status, code.as_str()), (409, "email_taken"), "{again}");
    }
    let client = app.db.client().await;
    let count: i64 = client
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn login_returns_a_bearer_token() {
    let app = TestApp::spawn().await;
    app.register("carol@example.com", PASSWORD).await;
    let res = app.login("carol@example.com", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(body["expires_in"].as_u64().unwrap() > 0);

    // Each login is a session of its own; the email is matched case-insensitively.
    let again: Value = app
        .login("CAROL@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(again["access_token"], body["access_token"]);
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let app = TestApp::spawn().await;
    app.register("dave@example.com", PASSWORD).await;
    let res = app.login("dave@example.com", "not the password").await;
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let (status, code, message) = error_of(res).await;
    assert_eq!(status, 401);
    assert_eq!(code, "invalid_credentials");
    assert_eq!(message, "invalid email or password");
}

#[tokio::test]
async fn unknown_email_gets_the_same_answer_as_a_wrong_password() {
    let app = TestApp::spawn().await;
    app.register("erin@example.com", PASSWORD).await;
    let wrong = app.login("erin@example.com", "not the password").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let malformed = app.login("not-an-email", PASSWORD).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), wrong.status());
    assert_eq!(malformed.status(), wrong.status());
    let wrong = wrong.text().await.unwrap();
    assert_eq!(
        unknown.text().await.unwrap(),
        wrong,
        "byte-for-byte the same body"
    );
    assert_eq!(malformed.text().await.unwrap(), wrong);
}

#[tokio::test]
async fn protected_route_requires_a_valid_token() {
    let app = TestApp::spawn().await;
    let (status, code, _) = error_of(app.get("/auth/me", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    let forged = "0".repeat(64);
    for token in ["garbage", forged.as_str()] {
        assert_eq!(
            app.get("/auth/me", Some(token)).await.status(),
            401,
            "{token}"
        );
    }
    let basic = app
        .http
        .get(app.url("/auth/me"))
        .basic_auth("frank@example.com", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    let token = app.user_token("frank@example.com", PASSWORD).await;
    let res = app.get("/auth/me", Some(&token)).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["email"], "frank@example.com");
}

#[tokio::test]
async fn logout_revokes_the_token() {
    let app = TestApp::spawn().await;
    let token = app.user_token("grace@example.com", PASSWORD).await;
    let other: Value = app
        .login("grace@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let other = other["access_token"].as_str().unwrap();

    assert_eq!(app.get("/auth/me", Some(&token)).await.status(), 200);
    let res = app.post("/auth/logout", None, Some(&token)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.get("/auth/me", Some(&token)).await.status(), 401);
    assert_eq!(
        app.post("/auth/logout", None, Some(&token)).await.status(),
        401,
        "a revoked token cannot log out again"
    );
    assert_eq!(
        app.get("/auth/me", Some(other)).await.status(),
        200,
        "the other session is untouched"
    );
    assert_eq!(app.post("/auth/logout", None, None).await.status(), 401);
}

#[tokio::test]
async fn invalid_input_is_refused_with_422() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (json!({"email": "a@b", "password": PASSWORD}), "email"),
        (
            json!({"email": "x y@example.com", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "ok@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "ok@example.com", "password": "x".repeat(2000)}),
            "password",
        ),
        (json!({"email": "ok@example.com"}), "password"),
        (json!({"password": PASSWORD}), "email"),
        (json!({"email": 42, "password": PASSWORD}), "email"),
    ];
    for (body, field) in cases {
        let res = app.post("/auth/register", Some(body.clone()), None).await;
        let (status, code, message) = error_of(res).await;
        assert_eq!((status, code.as_str()), (422, "validation_error"), "{body}");
        assert!(message.contains(field), "{body}: {message}");
    }

    let malformed = app
        .http
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(malformed).await.0, 400);
    let untyped = app
        .http
        .post(app.url("/auth/register"))
        .body(r#"{"email":"ok@example.com","password":"long enough"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(untyped).await.0, 415);

    let client = app.db.client().await;
    let count: i64 = client
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing was stored");
}

#[tokio::test]
async fn passwords_and_tokens_are_stored_hashed() {
    let app = TestApp::spawn().await;
    let token = app.user_token("heidi@example.com", PASSWORD).await;
    let client = app.db.client().await;
    let row = client
        .query_one("select password_hash from users", &[])
        .await
        .unwrap();
    let hash: String = row.get(0);
    // The test settings' cost (the minimum), through production's code path.
    let cost = support::settings().password_cost;
    let phc = format!(
        "$argon2id$v=19$m={},t={},p={}$",
        cost.memory_kib, cost.iterations, cost.parallelism
    );
    assert_eq!(cost.name, "minimum");
    assert!(hash.starts_with(&phc), "{hash}");
    assert!(!hash.contains(PASSWORD));

    let rows = client
        .query(
            "select token_hash, (to_jsonb(t))::text from auth_tokens t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: Vec<u8> = rows[0].get(0);
    let row_text: String = rows[0].get(1);
    assert_eq!(stored.len(), 32);
    assert!(!row_text.contains(&token), "the token itself is not stored");
    let raw: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).unwrap())
        .collect();
    assert_ne!(stored, raw, "what is stored is a keyed hash of the token");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user_token("ivan@example.com", PASSWORD).await;
    assert_eq!(app.get("/auth/me", Some(&token)).await.status(), 200);
    let client = app.db.client().await;
    let updated = client
        .execute(
            "update auth_tokens set created_at = now() - interval '2 days',
                                    expires_at = now() - interval '1 day'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
    assert_eq!(app.get("/auth/me", Some(&token)).await.status(), 401);
    assert_eq!(
        app.post("/auth/logout", None, Some(&token)).await.status(),
        401
    );
}

#[tokio::test]
async fn tokens_are_bound_to_the_token_secret() {
    // The same database served with another TOKEN_SECRET does not accept the token.
    let app = TestApp::spawn().await;
    let token = app.user_token("judy@example.com", PASSWORD).await;
    let mut settings = support::settings();
    settings.test_database_url = app.db.url().clone();
    settings.token_secret = Secret::new("another-secret-that-is-long-enough-0123456789");
    let (addr, _stop) = support::serve(AppState::new(&settings).unwrap()).await;
    let res = app
        .http
        .get(format!("http://{addr}/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(app.get("/auth/me", Some(&token)).await.status(), 200);
}
