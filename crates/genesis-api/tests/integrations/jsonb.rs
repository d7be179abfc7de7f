//! JSONB storage and queries: round trips, containment, paths, in-place updates, the GIN index.

use super::*;

#[tokio::test]
async fn jsonb_round_trips_nested_values() {
    let (_db, client) = database().await;
    let metadata = json!({
        "tags": ["rust", "postgres"],
        "nested": {"depth": {"level": 3, "ok": true, "none": null}},
        "unicode": "héllo wörld ✓",
        "big": 9_007_199_254_740_993_i64,
        "ratio": 0.25,
    });
    let id = document(&client, "round trip", "", &metadata).await;
    let stored: Value = client
        .query_one("select metadata from documents where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, metadata);
}

#[tokio::test]
async fn jsonb_containment_and_key_queries() {
    let (_db, client) = database().await;
    let a = document(
        &client,
        "a",
        "",
        &json!({"tags": ["rust", "db"], "draft": true}),
    )
    .await;
    let b = document(&client, "b", "", &json!({"tags": ["rust"], "lang": "en"})).await;
    let c = document(&client, "c", "", &json!({"tags": ["go"], "lang": "fr"})).await;

    let contains = "select id from documents where metadata @> $1 order by id";
    assert_eq!(
        ids(&client, contains, &[&json!({"tags": ["rust"]})]).await,
        [a, b]
    );
    assert_eq!(
        ids(&client, contains, &[&json!({"tags": ["rust", "db"]})]).await,
        [a]
    );
    assert_eq!(ids(&client, contains, &[&json!({"lang": "fr"})]).await, [c]);
    assert!(
        ids(&client, contains, &[&json!({"tags": ["java"]})])
            .await
            .is_empty()
    );

    let has_key = "select id from documents where jsonb_exists(metadata, $1) order by id";
    assert_eq!(ids(&client, has_key, &[&"draft"]).await, [a]);
    assert_eq!(ids(&client, has_key, &[&"lang"]).await, [b, c]);
    let by_field = "select id from documents where metadata ->> 'lang' = $1";
    assert_eq!(ids(&client, by_field, &[&"en"]).await, [b]);
}

#[tokio::test]
async fn jsonb_path_queries() {
    let (_db, client) = database().await;
    let popular = document(
        &client,
        "popular",
        "",
        &json!({"stats": {"views": 250}, "authors": [{"name": "ada"}, {"name": "grace"}]}),
    )
    .await;
    document(
        &client,
        "quiet",
        "",
        &json!({"stats": {"views": 3}, "authors": [{"name": "alan"}]}),
    )
    .await;

    let over = "select id from documents where jsonb_path_exists(metadata, \
                '$.stats.views ? (@ > $min)', jsonb_build_object('min', $1::int)) order by id";
    assert_eq!(ids(&client, over, &[&100_i32]).await, [popular]);
    assert_eq!(ids(&client, over, &[&1000_i32]).await, Vec::<i64>::new());

    let row = client
        .query_one(
            "select jsonb_path_query_array(metadata, '$.authors[*].name'),
                    metadata #>> '{stats,views}'
             from documents where id = $1",
            &[&popular],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Value>(0), json!(["ada", "grace"]));
    assert_eq!(row.get::<_, String>(1), "250");
}

#[tokio::test]
async fn jsonb_updates_in_place_and_only_objects_are_accepted() {
    let (_db, client) = database().await;
    let id = document(
        &client,
        "edit",
        "",
        &json!({"a": 1, "b": {"c": 2}, "drop": true}),
    )
    .await;
    let updated: Value = client
        .query_one(
            "update documents
             set metadata = (jsonb_set(metadata, '{b,c}', $2) || $3) - 'drop'::text
             where id = $1 returning metadata",
            &[&id, &json!(20), &json!({"added": "yes"})],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated, json!({"a": 1, "b": {"c": 20}, "added": "yes"}));

    for not_an_object in [json!([1, 2]), json!("text"), json!(42)] {
        let err = client
            .execute(
                "insert into documents (title, metadata) values ('bad', $1)",
                &[&not_an_object],
            )
            .await
            .unwrap_err();
        assert_eq!(
            violation(err),
            (
                SqlState::CHECK_VIOLATION,
                Some("documents_metadata_object".into())
            )
        );
    }
}

#[tokio::test]
async fn jsonb_containment_is_served_by_the_gin_index() {
    let (_db, client) = database().await;
    for i in 0..50 {
        document(
            &client,
            &format!("doc {i}"),
            "",
            &json!({"n": i, "even": i % 2 == 0}),
        )
        .await;
    }
    client
        .batch_execute("analyze documents; set enable_seqscan = off")
        .await
        .unwrap();
    let plan = support::texts(
        &client,
        r#"explain select id from documents where metadata @> '{"n": 7}'"#,
    )
    .await;
    let plan = plan.join("\n");
    assert!(plan.contains("documents_metadata_idx"), "{plan}");
    let found = ids(
        &client,
        "select id from documents where metadata @> $1",
        &[&json!({"n": 7})],
    )
    .await;
    assert_eq!(found.len(), 1);
}
