//! Liveness and readiness. Readiness checks PostgreSQL (`select 1`) and Redis (`PING`), each
//! with a timeout. Under `STRICT_HEALTH_CHECKS=true` a failed dependency makes readiness answer
//! 503 (and start-up fail); otherwise readiness answers 200 with the status `degraded` and the
//! failed dependency named. The answer never carries the driver's message (which may name a
//! user or a host); that goes to the log, redacted.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use genesis_settings::redact;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::db::error_chain;

pub const POSTGRES: &str = "postgres";
pub const REDIS: &str = "redis";
pub const MIGRATIONS: &str = "migrations";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Up,
    Down,
}

/// The result of checking one dependency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub status: CheckStatus,
    pub latency_ms: u64,
    /// Why it is down, secrets redacted. For the log and the start-up error only: the
    /// unauthenticated readiness answer names the dependency, never the driver's message.
    #[serde(default, skip_serializing)]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Every dependency is up.
    Ok,
    /// Something is down and checks are not strict: the API serves what it can.
    Degraded,
    /// Something is down and checks are strict.
    Unavailable,
}

/// The body of `GET /health/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub strict: bool,
    /// The names of the failed checks.
    pub failed: Vec<String>,
    pub checks: BTreeMap<String, Check>,
}

impl Readiness {
    pub fn http_status(&self) -> StatusCode {
        match self.status {
            ReadyStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ReadyStatus::Ok | ReadyStatus::Degraded => StatusCode::OK,
        }
    }
}

/// Checks every dependency of `state`, concurrently.
pub async fn readiness(state: &AppState) -> Readiness {
    let (postgres, redis) = tokio::join!(check_postgres(state), check_redis(state));
    let mut checks = BTreeMap::from([(POSTGRES.to_owned(), postgres), (REDIS.to_owned(), redis)]);
    if !state.migrated() {
        checks.insert(
            MIGRATIONS.to_owned(),
            Check {
                status: CheckStatus::Down,
                latency_ms: 0,
                error: Some("pending: the database was unreachable at start-up".into()),
            },
        );
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, check)| check.status == CheckStatus::Down)
        .map(|(name, _)| name.clone())
        .collect();
    let strict = state.strict_health_checks();
    let status = match (failed.is_empty(), strict) {
        (true, _) => ReadyStatus::Ok,
        (false, true) => ReadyStatus::Unavailable,
        (false, false) => ReadyStatus::Degraded,
    };
    Readiness {
        status,
        strict,
        failed,
        checks,
    }
}

pub async fn check_postgres(state: &AppState) -> Check {
    timed(state.health_check_timeouts().postgres, async {
        let client = state.pool().get().await.map_err(|e| error_chain(&e))?;
        client
            .query_one("select 1", &[])
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(())
    })
    .await
}

pub async fn check_redis(state: &AppState) -> Check {
    timed(state.health_check_timeouts().redis, async {
        let conn = state
            .redis()
            .connection()
            .await
            .map_err(|e| error_chain(&e))?;
        // A failed command makes the connection manager reconnect, and the next command waits
        // for that: try twice, so that a Redis that came back is seen at once, not one
        // readiness call late.
        match ping(conn.clone()).await {
            Ok(()) => Ok(()),
            Err(_) => ping(conn).await,
        }
    })
    .await
}

async fn ping(mut conn: redis::aio::ConnectionManager) -> Result<(), String> {
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| error_chain(&e))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("unexpected reply to PING: {pong}"))
    }
}

async fn timed(limit: Duration, check: impl Future<Output = Result<(), String>>) -> Check {
    let start = Instant::now();
    let outcome = tokio::time::timeout(limit, check).await;
    let latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(redact(&err)),
        Err(_) => Some(format!("no answer within {} ms", limit.as_millis())),
    };
    Check {
        status: if error.is_none() {
            CheckStatus::Up
        } else {
            CheckStatus::Down
        },
        latency_ms,
        error,
    }
}

/// `GET /health`: the process is alive. Touches no dependency.
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /health/ready`.
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let readiness = readiness(&state).await;
    for name in &readiness.failed {
        let why = readiness.checks[name].error.as_deref().unwrap_or("down");
        tracing::warn!(dependency = %name, error = %redact(why), strict = readiness.strict, "not ready");
    }
    (readiness.http_status(), Json(readiness))
}
