//! Constraints: unique, not null, check and foreign keys.

use super::*;

#[tokio::test]
async fn unique_and_not_null_constraints_are_enforced() {
    let (_db, client) = database().await;
    user(&client, "once@example.com").await;
    let err = client
        .execute(
            "insert into users (email, password_hash) values ('once@example.com', '$argon2id$y')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        violation(err),
        (SqlState::UNIQUE_VIOLATION, Some("users_email_key".into()))
    );

    let err = client
        .execute(
            "insert into users (email, password_hash) values ($1, null)",
            &[&"n@example.com"],
        )
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(
        (db.code(), db.column()),
        (&SqlState::NOT_NULL_VIOLATION, Some("password_hash"))
    );
    let err = client
        .execute("insert into documents (title) values (null)", &[])
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::NOT_NULL_VIOLATION);
}

#[tokio::test]
async fn check_constraints_are_enforced() {
    let (_db, client) = database().await;
    let owner = user(&client, "owner@example.com").await;
    let long_title = "t".repeat(201);
    let cases: [(&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>, &str); 6] = [
        (
            "insert into users (email, password_hash) values ('Upper@Example.com', '$argon2id$x')",
            vec![],
            "users_email_normalised",
        ),
        (
            "insert into users (email, password_hash) values ('no-at-sign', '$argon2id$x')",
            vec![],
            "users_email_shape",
        ),
        (
            "insert into users (email, password_hash) values ('plain@example.com', 'plaintext')",
            vec![],
            "users_password_hash_phc",
        ),
        (
            "insert into documents (title) values ($1)",
            vec![&long_title],
            "documents_title_length",
        ),
        (
            "insert into documents (title, revision) values ('r', 0)",
            vec![],
            "documents_revision_positive",
        ),
        (
            "insert into auth_tokens (user_id, token_hash, expires_at) \
             values ($1, '\\x01', now() + interval '1 hour')",
            vec![&owner],
            "auth_tokens_token_hash_len",
        ),
    ];
    for (sql, params, constraint) in cases {
        let err = client.execute(sql, &params).await.unwrap_err();
        assert_eq!(
            violation(err),
            (SqlState::CHECK_VIOLATION, Some(constraint.to_owned())),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn foreign_keys_are_enforced_and_cascade() {
    let (_db, client) = database().await;
    let err = client
        .execute(
            "insert into auth_tokens (user_id, token_hash, expires_at)
             values (424242, decode(repeat('ab', 32), 'hex'), now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::FOREIGN_KEY_VIOLATION);

    let owner = user(&client, "cascade@example.com").await;
    client
        .execute(
            "insert into auth_tokens (user_id, token_hash, expires_at)
             values ($1, decode(repeat('cd', 32), 'hex'), now() + interval '1 hour')",
            &[&owner],
        )
        .await
        .unwrap();
    client
        .execute(
            "insert into documents (owner_id, title) values ($1, 'mine')",
            &[&owner],
        )
        .await
        .unwrap();
    client
        .execute("delete from users where id = $1", &[&owner])
        .await
        .unwrap();
    let left: (i64, i64) = client
        .query_one(
            "select (select count(*) from auth_tokens), (select count(*) from documents)",
            &[],
        )
        .await
        .unwrap()
        .pipe(|r| (r.get(0), r.get(1)));
    assert_eq!(left, (0, 0));
}
