//! One account per address: Unicode forms, cases and invisible characters, end to end.

use serde_json::Value;

use crate::support::TestApp;

const PASSWORD: &str = "correct horse battery";

async fn code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn nfd_nfc_and_case_variants_are_one_account() {
    let app = TestApp::spawn().await;
    // Decomposed é (e + U+0301) and a capital letter.
    let res = app
        .register("Jose\u{301}.Smith@Example.com", PASSWORD)
        .await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], "jos\u{e9}.smith@example.com");
    for variant in ["jos\u{e9}.smith@example.com", "JOS\u{c9}.SMITH@EXAMPLE.COM"] {
        assert_eq!(
            code(app.register(variant, PASSWORD).await).await,
            (409, "email_taken".to_owned()),
            "{variant:?}"
        );
        assert_eq!(
            app.login(variant, PASSWORD).await.status(),
            200,
            "{variant:?}"
        );
    }
}

#[tokio::test]
async fn invisible_and_fullwidth_variants_are_refused() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.register("alice@example.com", PASSWORD).await.status(),
        201
    );
    for variant in [
        "ali\u{200B}ce@example.com",
        "\u{202E}alice@example.com",
        "\u{FF41}lice@example.com",
    ] {
        assert_eq!(
            code(app.register(variant, PASSWORD).await).await,
            (422, "validation_error".to_owned()),
            "{variant:?}"
        );
        // At login such an address is simply unknown.
        assert_eq!(
            app.login(variant, PASSWORD).await.status(),
            401,
            "{variant:?}"
        );
    }
}
