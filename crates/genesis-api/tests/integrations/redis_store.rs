//! Redis: values and expiry, atomic increments and pipelines, per-test namespaces.

use super::*;

#[tokio::test]
async fn redis_set_get_and_expiry() {
    let mut ns = RedisNs::new().await;
    let (kept, fleeting) = (ns.key("kept"), ns.key("fleeting"));
    let () = ns.conn.set_ex(&kept, "value", 60).await.unwrap();
    let () = ns.conn.pset_ex(&fleeting, "soon gone", 150).await.unwrap();
    let got: Option<String> = ns.conn.get(&kept).await.unwrap();
    assert_eq!(got.as_deref(), Some("value"));
    // An expiry of at most 150 ms, or already expired (-2) on a slow machine; never none (-1).
    let ttl: i64 = ns.conn.pttl(&fleeting).await.unwrap();
    assert!(ttl == -2 || (1..=150).contains(&ttl), "pttl {ttl}");
    // Gone once it expired: polled, so no sleep has to outlast the expiry on a loaded machine.
    let deadline = Instant::now() + support::EFFECT_WAIT;
    loop {
        let left: Option<String> = ns.conn.get(&fleeting).await.unwrap();
        if left.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "{fleeting} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ttl: i64 = ns.conn.pttl(&kept).await.unwrap();
    assert!(
        (1..=60_000).contains(&ttl),
        "the kept key lost its expiry: pttl {ttl}"
    );
    let missing: Option<String> = ns.conn.get(ns.key("never-set")).await.unwrap();
    assert_eq!(missing, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_incr_is_atomic_across_tasks() {
    let ns = RedisNs::new().await;
    let key = ns.key("hits");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut conn = ns.conn.clone();
        let key = key.clone();
        tasks.spawn(async move {
            for _ in 0..25 {
                let _: i64 = conn.incr(&key, 1).await.unwrap();
            }
        });
    }
    join_all(tasks).await;
    let mut conn = ns.conn.clone();
    let total: i64 = conn.get(&key).await.unwrap();
    assert_eq!(total, 200);
}

#[tokio::test]
async fn redis_atomic_pipelines_apply_together() {
    let mut ns = RedisNs::new().await;
    let (name, count, profile) = (ns.key("name"), ns.key("count"), ns.key("profile"));
    // HMSET answers OK, not a count.
    let (set, incremented, fields): ((), i64, ()) = redis::pipe()
        .atomic()
        .set_ex(&name, "genesis", 60)
        .incr(&count, 5)
        .hset_multiple(&profile, &[("lang", "rust"), ("db", "postgres")])
        .query_async(&mut ns.conn)
        .await
        .unwrap();
    assert_eq!((set, incremented, fields), ((), 5, ()));
    let size: i64 = ns.conn.hlen(&profile).await.unwrap();
    assert_eq!(size, 2);
    let profile_map: std::collections::BTreeMap<String, String> =
        ns.conn.hgetall(&profile).await.unwrap();
    assert_eq!(profile_map["db"], "postgres");
    let () = ns.conn.expire(&count, 60).await.unwrap();
    let () = ns.conn.expire(&profile, 60).await.unwrap();
    assert_eq!(ns.keys().await, {
        let mut all = vec![count, name, profile];
        all.sort();
        all
    });
}

#[tokio::test]
async fn redis_namespaces_keep_tests_apart_and_are_cleaned_up() {
    let mut first = RedisNs::new().await;
    let mut second = RedisNs::new().await;
    assert_ne!(first.prefix, second.prefix);
    let () = first
        .conn
        .set_ex(first.key("shared"), "first", 60)
        .await
        .unwrap();
    let () = second
        .conn
        .set_ex(second.key("shared"), "second", 60)
        .await
        .unwrap();
    let got: String = second.conn.get(second.key("shared")).await.unwrap();
    assert_eq!(got, "second");
    assert_eq!(first.keys().await, [first.key("shared")]);

    let first_key = first.key("shared");
    drop(first);
    let gone: Option<String> = second.conn.get(&first_key).await.unwrap();
    assert_eq!(gone, None, "dropping a namespace deletes its keys");
}
