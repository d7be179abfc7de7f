//! Full-text search: stemming, ranking, web search syntax, the search vector and its index.

use super::*;

const ARTICLES: [(&str, &str); 4] = [
    (
        "Running PostgreSQL in containers",
        "How the test database runs beside the API.",
    ),
    (
        "Caching with Redis",
        "Redis keeps sessions; PostgreSQL keeps everything else.",
    ),
    ("Gardening notes", "Tomatoes need sun, water and patience."),
    (
        "Release checklist",
        "Run the database migrations before deploying.",
    ),
];

async fn articles(client: &Client) -> Vec<i64> {
    let mut ids = Vec::new();
    for (title, body) in ARTICLES {
        ids.push(document(client, title, body, &json!({})).await);
    }
    ids
}

const SEARCH: &str = "select id from documents
    where search @@ websearch_to_tsquery('english', $1)
    order by ts_rank(search, websearch_to_tsquery('english', $1)) desc, id";

#[tokio::test]
async fn full_text_search_matches_stemmed_words() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    // "run" matches "Running", "runs" and "Run"; "databases" matches "database".
    let mut found = self::ids(&client, SEARCH, &[&"run"]).await;
    found.sort();
    assert_eq!(found, [ids[0], ids[3]]);
    let mut found = self::ids(&client, SEARCH, &[&"databases"]).await;
    found.sort();
    assert_eq!(found, [ids[0], ids[3]]);
    assert!(
        self::ids(&client, SEARCH, &[&"kubernetes"])
            .await
            .is_empty()
    );
    // Stop words alone match nothing rather than everything.
    assert!(self::ids(&client, SEARCH, &[&"the and"]).await.is_empty());
}

#[tokio::test]
async fn full_text_search_ranks_title_matches_first() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    // "redis" is in the title of article 1 and only in the body of none else;
    // "postgresql" is in the title of article 0 and the body of article 1.
    assert_eq!(
        self::ids(&client, SEARCH, &[&"postgresql"]).await,
        [ids[0], ids[1]]
    );
    assert_eq!(self::ids(&client, SEARCH, &[&"redis"]).await, [ids[1]]);
}

#[tokio::test]
async fn web_search_syntax_supports_phrases_or_and_exclusion() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    assert_eq!(
        self::ids(&client, SEARCH, &[&"postgresql -redis"]).await,
        [ids[0]]
    );
    assert_eq!(
        self::ids(&client, SEARCH, &[&"\"database migrations\""]).await,
        [ids[3]]
    );
    let mut either = self::ids(&client, SEARCH, &[&"tomatoes or sessions"]).await;
    either.sort();
    assert_eq!(either, [ids[1], ids[2]]);
}

#[tokio::test]
async fn the_search_vector_follows_updates_and_uses_its_index() {
    let (_db, client) = database().await;
    let ids = articles(&client).await;
    client
        .execute(
            "update documents set body = $2, revision = revision + 1 where id = $1",
            &[&ids[2], &"Compost and bees."],
        )
        .await
        .unwrap();
    assert!(self::ids(&client, SEARCH, &[&"tomatoes"]).await.is_empty());
    assert_eq!(self::ids(&client, SEARCH, &[&"bees"]).await, [ids[2]]);

    client
        .batch_execute("analyze documents; set enable_seqscan = off")
        .await
        .unwrap();
    let plan = support::texts(
        &client,
        "explain select id from documents where search @@ to_tsquery('english', 'bee')",
    )
    .await;
    assert!(plan.join("\n").contains("documents_search_idx"), "{plan:?}");
}
