//! Concurrent writers: row locks, serializable retries, one account per email.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_under_row_locks_lose_nothing() {
    const WRITERS: i32 = 8;
    const EACH: i32 = 10;
    let (db, client) = database().await;
    let id = document(&client, "counter", "", &json!({})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let url = db.url().clone();
        tasks.spawn(async move {
            let mut client = genesis_api::db::connect(&url).await.unwrap();
            for _ in 0..EACH {
                // Read, compute in the application, write: safe only because of the row lock.
                let tx = client.transaction().await.unwrap();
                let revision: i32 = tx
                    .query_one(
                        "select revision from documents where id = $1 for update",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                tokio::task::yield_now().await;
                tx.execute(
                    "update documents set revision = $2 where id = $1",
                    &[&id, &(revision + 1)],
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    join_all(tasks).await;
    assert_eq!(revision(&client, id).await, 1 + WRITERS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_writers_retry_and_lose_nothing() {
    const WRITERS: i32 = 6;
    const EACH: i32 = 5;
    let (db, client) = database().await;
    let id = document(&client, "serial", "", &json!({})).await;
    // Every writer reads before any writes in its first transaction, so all but one of those
    // first transactions must fail to serialize: the retries are certain, not left to timing.
    let all_read = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let url = db.url().clone();
        let all_read = all_read.clone();
        tasks.spawn(async move {
            let mut client = genesis_api::db::connect(&url).await.unwrap();
            let mut retries = 0_u32;
            for n in 0..EACH {
                loop {
                    let first = n == 0 && retries == 0;
                    let attempt = async {
                        let tx = client
                            .build_transaction()
                            .isolation_level(tokio_postgres::IsolationLevel::Serializable)
                            .start()
                            .await?;
                        let revision: i32 = tx
                            .query_one("select revision from documents where id = $1", &[&id])
                            .await?
                            .get(0);
                        if first {
                            all_read.wait().await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        tx.execute(
                            "update documents set revision = $2 where id = $1",
                            &[&id, &(revision + 1)],
                        )
                        .await?;
                        tx.commit().await
                    };
                    match attempt.await {
                        Ok(()) => break,
                        Err(err) if err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                            retries += 1;
                            assert!(retries < 1000, "no progress");
                        }
                        Err(err) => panic!("unexpected error: {err}"),
                    }
                }
            }
            retries
        });
    }
    let retries: u32 = join_all(tasks).await.into_iter().sum();
    assert!(
        retries >= (WRITERS - 1) as u32,
        "{retries} retries: the first round alone must have made {}",
        WRITERS - 1
    );
    assert_eq!(revision(&client, id).await, 1 + WRITERS * EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_create_one_account() {
    let app = TestApp::spawn().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let http = app.http.clone();
        let url = app.url("/auth/register");
        tasks.spawn(async move {
            http.post(url)
                .json(&json!({"email": "race@example.com", "password": "long enough"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = join_all(tasks).await;
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409]);
}
