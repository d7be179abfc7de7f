//! Transactions: commit and rollback, isolation, savepoints, aborted transactions.

use super::*;

#[tokio::test]
async fn committed_work_persists_and_rolled_back_work_vanishes() {
    let (db, mut client) = database().await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "kept@example.com").await;
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    user(tx.client(), "undone@example.com").await;
    assert_eq!(
        count_users(tx.client()).await,
        2,
        "visible inside the transaction"
    );
    tx.rollback().await.unwrap();

    {
        // Dropped without commit: rolled back too.
        let tx = client.transaction().await.unwrap();
        user(tx.client(), "dropped@example.com").await;
    }
    assert_eq!(
        count_users(&client).await,
        1,
        "the dropped transaction rolled back"
    );
    // Another connection sees only the committed row.
    let other = db.client().await;
    let emails = support::texts(&other, "select email from users").await;
    assert_eq!(emails, ["kept@example.com"]);
}

#[tokio::test]
async fn uncommitted_work_is_invisible_to_other_connections() {
    let (db, mut client) = database().await;
    let other = db.client().await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "pending@example.com").await;
    assert_eq!(count_users(&other).await, 0);
    tx.commit().await.unwrap();
    assert_eq!(count_users(&other).await, 1);
}

#[tokio::test]
async fn savepoints_roll_back_part_of_a_transaction() {
    let (_db, mut client) = database().await;
    let mut tx = client.transaction().await.unwrap();
    user(tx.client(), "outer@example.com").await;
    {
        let inner = tx.savepoint("sp_inner").await.unwrap();
        user(inner.client(), "inner@example.com").await;
        inner.rollback().await.unwrap();
    }
    {
        let kept = tx.savepoint("sp_kept").await.unwrap();
        user(kept.client(), "kept@example.com").await;
        kept.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    let emails = support::texts(&client, "select email from users order by email").await;
    assert_eq!(emails, ["kept@example.com", "outer@example.com"]);
}

#[tokio::test]
async fn an_error_aborts_the_transaction_until_it_is_rolled_back() {
    let (_db, mut client) = database().await;
    user(&client, "taken@example.com").await;
    let tx = client.transaction().await.unwrap();
    user(tx.client(), "first@example.com").await;
    let err = tx
        .execute(
            "insert into users (email, password_hash) values ('taken@example.com', '$argon2id$x')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(violation(err).0, SqlState::UNIQUE_VIOLATION);
    let err = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    assert_eq!(
        count_users(&client).await,
        1,
        "first@ went with the rollback"
    );
}
