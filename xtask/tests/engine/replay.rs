//! A start replayed through the engine (`services::replay`) makes the container compose made,
//! which compose then treats as its own; anything amiss goes back to compose.

use super::*;

/// `docker inspect` of the test stack's container of `service`.
fn inspect(service: &str) -> serde_json::Value {
    let id = service_status(service)["container"]
        .as_str()
        .unwrap_or_else(|| panic!("{service} has no container"))
        .to_owned();
    let sh = Shell::new().unwrap();
    let out = cmd!(sh, "docker inspect {id}").quiet().read().unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// What must be the same in two containers of one service, whoever made them.
fn made_as(c: &serde_json::Value) -> serde_json::Value {
    let mut labels = c["Config"]["Labels"].clone();
    // The run that started it is this run's.
    labels.as_object_mut().unwrap().remove("org.genesis.run");
    let id = c["Id"].as_str().unwrap();
    let networks: serde_json::Map<String, serde_json::Value> = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, endpoint)| {
            let mut aliases: Vec<&str> = endpoint["Aliases"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            aliases.retain(|a| !id.starts_with(a));
            aliases.sort();
            (name.clone(), serde_json::json!(aliases))
        })
        .collect();
    serde_json::json!({
        "name": c["Name"],
        "image": c["Config"]["Image"],
        "env": c["Config"]["Env"],
        "cmd": c["Config"]["Cmd"],
        "entrypoint": c["Config"]["Entrypoint"],
        "healthcheck": c["Config"]["Healthcheck"],
        "user": c["Config"]["User"],
        "labels": labels,
        "ports": c["HostConfig"]["PortBindings"],
        "mounts": c["HostConfig"]["Mounts"],
        "binds": c["HostConfig"]["Binds"],
        "tmpfs": c["HostConfig"]["Tmpfs"],
        "network_mode": c["HostConfig"]["NetworkMode"],
        "networks": networks,
    })
}

#[test]
fn a_replayed_start_makes_the_container_compose_made_and_compose_owns_it() {
    let _engine = engine();
    let records = root().join(format!("target/xtask/stacks/{}/replay", stack()));
    let _ = std::fs::remove_dir_all(&records);

    // Compose makes them, and what it made is recorded, owner-only (it holds the environment).
    xtask(&["db-up", "--with", "redis"]).ok();
    // One record per service, named with the compose flavour that made it (`test-db.v1.json`).
    let named = |service: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(&format!("{service}.v")) && name.ends_with(".json")
            })
            .collect()
    };
    let record = match named("test-db").as_slice() {
        [one] => one.clone(),
        other => panic!("expected one record of test-db: {other:?}"),
    };
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(named("redis").len(), 1);
    let by_compose = [made_as(&inspect("test-db")), made_as(&inspect("redis"))];
    let first_ids = [
        inspect("test-db")["Id"].clone(),
        inspect("redis")["Id"].clone(),
    ];
    xtask(&["db-down", "--all"]).ok();

    // Replayed: new containers, made the same way, that compose's own commands see.
    let replayed = xtask(&["db-up", "--with", "redis"]).ok();
    assert!(!replayed.stderr.contains("note:"), "{replayed:#?}");
    assert_eq!(psql(&test_url(), "select 1"), "1");
    assert_ne!(inspect("test-db")["Id"], first_ids[0]);
    assert_ne!(inspect("redis")["Id"], first_ids[1]);
    assert_eq!(made_as(&inspect("test-db")), by_compose[0]);
    assert_eq!(made_as(&inspect("redis")), by_compose[1]);
    let logs = xtask(&["db-logs", "test-db"]).ok();
    assert!(
        logs.stdout.contains("ready to accept connections"),
        "{logs:#?}"
    );
    xtask(&["db-down", "--all"]).ok();

    // A record the engine refuses goes back to compose, which records the container anew.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["name"] = serde_json::json!("not/a container name");
    std::fs::write(&record, json.to_string()).unwrap();
    let refused = xtask(&["db-up"]).ok();
    assert!(
        refused.stderr.contains("starting through compose instead"),
        "{refused:#?}"
    );
    assert_eq!(psql(&test_url(), "select 1"), "1");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(
        again["name"],
        by_compose[0]["name"]
            .as_str()
            .unwrap()
            .trim_start_matches('/')
    );
    xtask(&["db-down", "--all"]).ok();

    // A variable of the compose file that changes is a new key: compose starts it.
    let key = again["key"].clone();
    xtask_with(
        &["db-up"],
        &[("POSTGRES_PASSWORD", "another-dev-password")],
        None,
    )
    .ok();
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_ne!(after["key"], key);
    xtask(&["db-down", "--all"]).ok();
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
