//! The integration suite: what the API relies on, against the real PostgreSQL and Redis. Each
//! test has a database of its own (cloned from the migrated template) and a Redis namespace of
//! its own, so the suite runs in parallel, and beside another run, on the host or in a container.

mod concurrency;
mod constraints;
mod health;
mod jsonb;
mod metrics;
mod migrations;
mod redis_store;
mod runtime;
mod search;
mod tls;
mod transactions;

use std::time::{Duration, Instant};

use genesis_api::health::{CheckStatus, Readiness, ReadyStatus};
use genesis_api::migrate::{self, MIGRATIONS, Migration};
use genesis_api::{MigrateError, Server};
use genesis_model::Env;
use genesis_settings::{Runtime, Scheme, ServiceUrl, Settings};
use genesis_test_support as support;
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{RedisNs, TestApp, TestDb};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

// Helpers shared by the topics.

async fn database() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    (db, client)
}

async fn readiness(app: &TestApp) -> (u16, Readiness) {
    let res = app.get("/health/ready", None).await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("a readiness body"))
}

/// Inserts a document and returns its id.
async fn document(client: &Client, title: &str, body: &str, metadata: &Value) -> i64 {
    client
        .query_one(
            "insert into documents (title, body, metadata) values ($1, $2, $3) returning id",
            &[&title, &body, metadata],
        )
        .await
        .expect("insert a document")
        .get(0)
}

/// A document's revision counter.
async fn revision(client: &Client, id: i64) -> i32 {
    client
        .query_one("select revision from documents where id = $1", &[&id])
        .await
        .expect("read a revision")
        .get(0)
}

/// Waits for every task (a panic in one fails the test) and returns their results.
async fn join_all<T: 'static>(mut tasks: tokio::task::JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.expect("a task of the test panicked"));
    }
    results
}

async fn ids(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<i64> {
    client
        .query(sql, params)
        .await
        .expect("query")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The SQLSTATE and constraint of a failed statement.
fn violation(err: tokio_postgres::Error) -> (SqlState, Option<String>) {
    let db = err.as_db_error().expect("an error from the server");
    (db.code().clone(), db.constraint().map(str::to_owned))
}

async fn user(client: &Client, email: &str) -> i64 {
    client
        .query_one(
            "insert into users (email, password_hash) values ($1, '$argon2id$test') returning id",
            &[&email],
        )
        .await
        .expect("insert a user")
        .get(0)
}

async fn count_users(client: &Client) -> i64 {
    client
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0)
}

/// `value.pipe(f)`: keeps a chain of calls readable.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}
