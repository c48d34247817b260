//! Adopting a deployment of the original key service: its documents and
//! plain-set indexes, written here exactly as that service writes them,
//! served in place; `keyward migrate`; data keyward cannot read; and an audit
//! trail that a flood of anonymous denials cannot flush.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use fred::prelude::Pool;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, random_id, raw, Binary, TestApp, TestRedis, ADMIN_TOKEN, MIGRATOR_PASSWORD,
};

/// Argon2id as the original service hashes: m=64 MiB, t=3, p=1.
const ORIGINAL_COST: (u32, u32, u32) = (65536, 3, 1);
/// Cheaper, for most fixture keys: verification follows each hash's own
/// parameters, so this changes only the fixture's cost.
const CHEAP_COST: (u32, u32, u32) = (1024, 1, 1);
/// Stands in for content that must never reach a log or an answer.
const CONTENT: &str = "SECRET-CONTENT";

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn cmd(pool: &Pool, command: &'static str, a: &[&str]) -> fred::types::Value {
    raw(pool, command, args(a))
        .await
        .unwrap_or_else(|e| panic!("{command} {a:?}: {e}"))
}

fn now() -> f64 {
    keyward::store::now()
}

/// `k_` and 7 alphanumerics, as the original service makes key ids.
fn legacy_key_id() -> String {
    format!("k_{}", Alphanumeric.sample_string(&mut rand::rng(), 7))
}

/// 32 characters of `[A-Za-z0-9_-]`, as the original service makes secrets.
fn legacy_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// An Argon2id PHC string made with the `argon2` crate, as the original did.
fn phc(secret: &str, (m, t, p): (u32, u32, u32)) -> String {
    let params = Params::new(m, t, p, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string()
}

/// A key the original service minted.
#[derive(Debug, Clone)]
struct LegacyKey {
    key_id: String,
    api_key: String,
}

/// The original service's project document.
async fn legacy_project(ops: &Pool, project: &str) {
    let doc = json!({ "project_id": project, "label": "Legacy", "owner": "team-l", "created_at": 1_690_000_000.5 });
    cmd(
        ops,
        "JSON.SET",
        &[&format!("project:{project}"), "$", &doc.to_string()],
    )
    .await;
}

/// A key document exactly as the original service writes it (no
/// `server_name`, no `rate_limit_per_minute`, `metadata` a string,
/// `expires_at` a float or null), `tweak`ed, added to the project's SET
/// index with SADD, with its usage hash.
async fn legacy_key(
    ops: &Pool,
    project: &str,
    cost: (u32, u32, u32),
    tweak: impl FnOnce(&mut Value),
) -> LegacyKey {
    let (key_id, secret) = (legacy_key_id(), legacy_secret());
    let mut doc = json!({
        "key_id": key_id,
        "project_id": project,
        "owner": "legacy-owner",
        "metadata": "{\"server\":\"s1\"}",
        "secret_hash": phc(&secret, cost),
        "disabled": false,
        "created_at": 1_700_000_000.25,
        "expires_at": null,
    });
    tweak(&mut doc);
    let doc_key = format!("apikey:{project}:{key_id}");
    cmd(ops, "JSON.SET", &[&doc_key, "$", &doc.to_string()]).await;
    cmd(
        ops,
        "SADD",
        &[&format!("apiprojectkeys:{project}"), &key_id],
    )
    .await;
    cmd(
        ops,
        "HSET",
        &[
            &format!("apimeta:{project}:{key_id}"),
            "usage_count",
            "3",
            "last_used",
            "1700000100.5",
        ],
    )
    .await;
    LegacyKey {
        api_key: format!("sk-proj.{project}.{key_id}.{secret}"),
        key_id,
    }
}

/// An audit entry as the original service wrote it: no `reason`.
async fn legacy_audit_entry(ops: &Pool, project: &str, key_id: &str) {
    cmd(
        ops,
        "XADD",
        &[
            "audit:keylookup",
            "*",
            "ts",
            "1700000100.5",
            "project_id",
            project,
            "key_id",
            key_id,
            "result",
            "ok",
            "client",
            "legacy",
        ],
    )
    .await;
}

/// A project of the original service with `n` keys (cheap hashes).
async fn legacy_project_with_keys(ops: &Pool, n: usize) -> (String, Vec<LegacyKey>) {
    let project = random_id("legacy");
    legacy_project(ops, &project).await;
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(legacy_key(ops, &project, CHEAP_COST, |_| {}).await);
    }
    (project, keys)
}

/// Walks list-keys from the start with pages of `limit`; every id in order.
async fn walk(app: &TestApp, project: &str, limit: u64) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut path = format!("/v1/list-keys?project_id={project}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = app.admin_get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let page: Value = r.json().await.unwrap();
        let page_items = page["items"].as_array().unwrap();
        assert!(page_items.len() as u64 <= limit);
        items.extend(page_items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("list-keys never ended");
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["key_id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

async fn key_type(ops: &Pool, key: &str) -> String {
    cmd(ops, "TYPE", &[key]).await.as_string().unwrap()
}

async fn doc(ops: &Pool, project: &str, key_id: &str) -> Value {
    let raw = cmd(ops, "JSON.GET", &[&format!("apikey:{project}:{key_id}")]).await;
    serde_json::from_str(&raw.as_string().unwrap()).unwrap()
}

async fn zset_members(ops: &Pool, key: &str) -> BTreeMap<String, String> {
    let v = cmd(ops, "ZRANGE", &[key, "0", "-1", "WITHSCORES"]).await;
    let flat: Vec<String> = v.convert().unwrap();
    flat.chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

#[tokio::test]
async fn legacy_keys_validate_with_the_routing_data_the_original_service_stored() {
    let app = TestApp::spawn().await;
    let ops = app.redis().ops().await;
    let project = random_id("legacy");
    legacy_project(&ops, &project).await;
    let original = legacy_key(&ops, &project, ORIGINAL_COST, |_| {}).await;
    let until = (now() + 3_600.0).floor() + 0.5;
    let expiring = legacy_key(&ops, &project, CHEAP_COST, |d| {
        d["expires_at"] = json!(until)
    })
    .await;
    let revoked = legacy_key(&ops, &project, CHEAP_COST, |d| d["disabled"] = json!(true)).await;
    let expired = legacy_key(&ops, &project, CHEAP_COST, |d| {
        d["expires_at"] = json!(1_600_000_000.5)
    })
    .await;
    legacy_audit_entry(&ops, &project, &original.key_id).await;

    let r = app.validate_response(&original.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["project_id"], project);
    assert_eq!(body["key_id"], original.key_id);
    assert_eq!(body["owner"], "legacy-owner");
    assert_eq!(body["server_name"], "", "no server_name reads as \"\"");
    assert_eq!(
        body["metadata"], "{\"server\":\"s1\"}",
        "a string metadata comes back as that string"
    );
    assert!(body["expires_at"].is_null());
    assert_eq!(app.last_audit(&original.key_id).await["reason"], "ok");

    let r = app.validate_response(&expiring.api_key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["expires_at"], json!(until));

    app.assert_denied(&revoked.api_key, &revoked.key_id, "disabled")
        .await;
    app.assert_denied(&expired.api_key, &expired.key_id, "expired")
        .await;
    let wrong = format!(
        "{}.{}",
        original.api_key.rsplit_once('.').unwrap().0,
        legacy_secret()
    );
    app.assert_denied(&wrong, &original.key_id, "bad_secret")
        .await;

    // The original service's usage hash is counted on.
    app.usage_is(&project, &original.key_id, 4).await;
}

#[tokio::test]
async fn a_set_index_is_listed_once_in_order_with_cursors_and_minting_keeps_it_a_set() {
    let app = TestApp::spawn().await;
    let ops = app.redis().ops().await;
    let (project, keys) = legacy_project_with_keys(&ops, 7).await;
    let index = format!("apiprojectkeys:{project}");

    let items = walk(&app, &project, 3).await;
    assert_eq!(
        ids_of(&items),
        sorted(keys.iter().map(|k| k.key_id.clone())),
        "every key once, in byte order"
    );
    let item = &items[0];
    assert_eq!(item["server_name"], "");
    assert_eq!(item["metadata"], "{\"server\":\"s1\"}");
    assert_eq!(item["owner"], "legacy-owner");
    assert_eq!(item["usage_count"], 3);
    assert!(item["rate_limit_per_minute"].is_null());
    assert!(item.get("unreadable").is_none());

    // The old service keeps running: it adds a key after keyward listed,
    // and while a walk is under way.
    let late = legacy_key(&ops, &project, CHEAP_COST, |_| {}).await;
    let r = app
        .admin_get(&format!("/v1/list-keys?project_id={project}&limit=2"))
        .await;
    let first: Value = r.json().await.unwrap();
    let cursor = first["next"].as_str().unwrap().to_owned();
    let during = legacy_key(&ops, &project, CHEAP_COST, |_| {}).await;
    let mut rest = Vec::new();
    let mut next = Some(cursor.clone());
    while let Some(c) = next {
        let r = app
            .admin_get(&format!(
                "/v1/list-keys?project_id={project}&limit=2&cursor={c}"
            ))
            .await;
        let page: Value = r.json().await.unwrap();
        rest.extend(ids_of(page["items"].as_array().unwrap()));
        next = page["next"].as_str().map(str::to_owned);
    }
    let mut seen = ids_of(first["items"].as_array().unwrap());
    seen.extend(rest);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice: {seen:?}");
    for k in keys.iter().chain([&late]) {
        assert!(seen.contains(&k.key_id), "{} listed", k.key_id);
    }
    // A key added during the walk is listed if it sorts after the cursor.
    assert_eq!(seen.contains(&during.key_id), during.key_id > cursor);

    // Minting adds to the set as a set: the old service can go on using it.
    let minted = app.mint(&project, json!({})).await;
    assert_eq!(key_type(&ops, &index).await, "set");
    let member = cmd(&ops, "SISMEMBER", &[&index, &minted.key_id]).await;
    assert_eq!(member.as_i64(), Some(1));
    app.validate(&minted.api_key, StatusCode::OK).await;
    app.validate(&late.api_key, StatusCode::OK).await;

    let all = ids_of(&walk(&app, &project, 100).await);
    let mut expected: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    expected.extend([late.key_id, during.key_id, minted.key_id]);
    assert_eq!(all, sorted(expected));
}

#[tokio::test]
async fn admin_calls_on_legacy_documents_write_single_fields_and_keep_the_rest() {
    let app = TestApp::spawn().await;
    let ops = app.redis().ops().await;
    let project = random_id("legacy");
    legacy_project(&ops, &project).await;
    let key = legacy_key(&ops, &project, CHEAP_COST, |d| {
        d["legacy_extra"] = json!({ "kept": true })
    })
    .await;
    let query = format!("project_id={project}&key_id={}", key.key_id);

    let r = app.admin_get(&format!("/v1/get-key?{query}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["server_name"], "");
    assert_eq!(got["metadata"], "{\"server\":\"s1\"}");
    assert_eq!(got["created_at"], 1_700_000_000.25);

    let body = json!({ "project_id": project, "key_id": key.key_id, "owner": "new-owner" });
    let r = app.admin_post("/v1/update-key", &body).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let stored = doc(&ops, &project, &key.key_id).await;
    assert_eq!(stored["owner"], "new-owner");
    assert_eq!(stored["metadata"], "{\"server\":\"s1\"}");
    assert_eq!(stored["legacy_extra"], json!({ "kept": true }));
    assert!(
        stored.get("server_name").is_none(),
        "update writes only what it names"
    );

    let body = json!({ "project_id": project, "key_id": key.key_id, "grace_seconds": 600 });
    let r = app.admin_post("/v1/rotate-key", &body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let rotated: Value = r.json().await.unwrap();
    let new_key = rotated["api_key"].as_str().unwrap();
    app.validate(new_key, StatusCode::OK).await;
    app.validate(&key.api_key, StatusCode::OK).await;
    assert_eq!(
        app.last_audit(&key.key_id).await["reason"],
        "previous_secret"
    );
    assert_eq!(
        doc(&ops, &project, &key.key_id).await["legacy_extra"],
        json!({ "kept": true })
    );

    let body = json!({ "project_id": project, "key_id": key.key_id });
    let r = app.admin_post("/v1/revoke-key", &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.assert_denied(new_key, &key.key_id, "disabled").await;
    app.assert_denied(&key.api_key, &key.key_id, "disabled")
        .await;
}

/// Enables the template's `migrator` user (shipped off) with a password.
async fn enable_migrator(redis: &TestRedis) {
    let ops = redis.ops().await;
    cmd(
        &ops,
        "ACL",
        &[
            "SETUSER",
            "migrator",
            "on",
            &format!(">{MIGRATOR_PASSWORD}"),
        ],
    )
    .await;
}

/// Runs `keyward migrate` with `extra` arguments as the migrator user;
/// (exit code, stdout, stderr).
async fn migrate(redis: &TestRedis, extra: &[&str]) -> (i32, String, String) {
    let url = redis.url("migrator", MIGRATOR_PASSWORD);
    let extra = args(extra);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("migrate")
            .args(extra)
            .env("KEYWARD_MIGRATE_REDIS_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

/// Every key and its `DUMP` serialization: equal dumps, equal data.
/// Every key's `DUMP` but the webhook delivery's streams, which the
/// keyward instance beside the migration reads (and so changes) as it runs.
async fn dump(ops: &Pool) -> BTreeMap<String, String> {
    let keys: Vec<String> = cmd(ops, "KEYS", &["*"]).await.convert().unwrap();
    let mut all = BTreeMap::new();
    for key in keys.into_iter().filter(|k| !k.starts_with("webhook")) {
        let value = cmd(ops, "DUMP", &[&key]).await;
        all.insert(key, format!("{value:?}"));
    }
    all
}

#[tokio::test]
async fn migrate_dry_run_changes_nothing_then_apply_upgrades_in_place_once() {
    let redis = Arc::new(TestRedis::start());
    enable_migrator(&redis).await;
    let app = TestApp::spawn_with(redis.clone(), |_| {}).await;
    let ops = redis.ops().await;
    let (project, keys) = legacy_project_with_keys(&ops, 5).await;
    let index = format!("apiprojectkeys:{project}");
    legacy_audit_entry(&ops, &project, &keys[0].key_id).await;
    let native = app.project().await;
    let native_key = app.mint(&native, json!({ "metadata": { "a": 1 } })).await;

    let before = dump(&ops).await;
    let (code, out, err) = migrate(&redis, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{index}: a set of 5 ids; would become a sorted set"
        )),
        "{out}"
    );
    assert!(
        out.contains("5 of 5 key documents would get their absent fields"),
        "{out}"
    );
    assert!(out.contains("server_name (5)"), "{out}");
    assert!(
        out.contains("dry run: would change 1 index and 5 key documents"),
        "{out}"
    );
    assert_eq!(dump(&ops).await, before, "a dry run writes nothing");

    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{index}: now a sorted set of 5 ids")),
        "{out}"
    );
    assert!(
        out.contains("migrated: changed 1 index and 5 key documents in 2 projects"),
        "{out}"
    );
    assert_eq!(key_type(&ops, &index).await, "zset");
    let members = zset_members(&ops, &index).await;
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        sorted(keys.iter().map(|k| k.key_id.clone()))
    );
    assert!(members.values().all(|score| score == "0"));
    let working: Vec<String> = cmd(&ops, "KEYS", &["migrate:*"]).await.convert().unwrap();
    assert!(working.is_empty(), "no working keys left: {working:?}");
    let upgraded = doc(&ops, &project, &keys[0].key_id).await;
    assert_eq!(upgraded["server_name"], "");
    assert_eq!(
        upgraded["metadata"], "{\"server\":\"s1\"}",
        "kept as it was"
    );
    assert_eq!(upgraded["owner"], "legacy-owner");
    assert_eq!(upgraded["created_at"], 1_700_000_000.25);
    assert!(upgraded["rate_limit_per_minute"].is_null());
    assert_eq!(upgraded["scopes"], json!([]));
    let full = doc(&ops, &native, &native_key.key_id).await;
    let names = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&upgraded), names(&full), "the full shape");
    let admin_audit: Vec<(String, HashMap<String, String>)> =
        fred::prelude::StreamsInterface::xrange(&ops, "audit:admin", "-", "+", None)
            .await
            .unwrap();
    assert!(admin_audit
        .iter()
        .any(|(_, e)| e["action"] == "migrate" && e["project_id"] == project));

    // Everything works on the migrated layout.
    for key in &keys {
        let r = app.validate_response(&key.api_key).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.json::<Value>().await.unwrap()["metadata"],
            "{\"server\":\"s1\"}"
        );
    }
    app.validate(&native_key.api_key, StatusCode::OK).await;
    let minted = app.mint(&project, json!({})).await;
    let mut expected: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    expected.push(minted.key_id.clone());
    assert_eq!(ids_of(&walk(&app, &project, 2).await), sorted(expected));
    assert_eq!(key_type(&ops, &index).await, "zset");

    let before = dump(&ops).await;
    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("nothing to change: 2 projects and 7 keys"),
        "{out}"
    );
    assert_eq!(dump(&ops).await, before, "a second --apply changes nothing");
}

#[tokio::test]
async fn migrate_resumes_an_interrupted_conversion_without_losing_an_id() {
    let redis = Arc::new(TestRedis::start());
    enable_migrator(&redis).await;
    let app = TestApp::spawn_with(redis.clone(), |_| {}).await;
    let ops = redis.ops().await;
    let (project, keys) = legacy_project_with_keys(&ops, 4).await;
    let index = format!("apiprojectkeys:{project}");
    let backup = format!("migrate:apiprojectkeys:{project}:set");
    let building = format!("migrate:apiprojectkeys:{project}:zset");

    // As if a run had copied two ids, moved the set aside and crashed before
    // putting the sorted set in its place; meanwhile an id reached the old
    // set after the copy, and a writer put a new plain set at the index.
    cmd(
        &ops,
        "ZADD",
        &[&building, "0", &keys[0].key_id, "0", &keys[1].key_id],
    )
    .await;
    let after_copy = legacy_key(&ops, &project, CHEAP_COST, |_| {}).await;
    cmd(&ops, "RENAME", &[&index, &backup]).await;
    let straggler = legacy_key(&ops, &project, CHEAP_COST, |_| {}).await;
    assert_eq!(key_type(&ops, &index).await, "set");

    let before = dump(&ops).await;
    let (code, out, err) = migrate(&redis, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("an interrupted conversion"), "{out}");
    assert_eq!(dump(&ops).await, before);

    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(key_type(&ops, &index).await, "zset");
    let mut expected: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    expected.extend([after_copy.key_id, straggler.key_id]);
    let members = zset_members(&ops, &index).await;
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        sorted(expected.clone())
    );
    for gone in [&backup, &building] {
        assert_eq!(key_type(&ops, gone).await, "none", "{gone}");
    }
    assert_eq!(ids_of(&walk(&app, &project, 3).await), sorted(expected));
    let (_, out, _) = migrate(&redis, &["--apply"]).await;
    assert!(out.contains("nothing to change"), "{out}");

    // Crashed after the set was moved aside, and keyward minted into the
    // project meanwhile: its mint found no index and created a sorted set.
    let (project, keys) = legacy_project_with_keys(&ops, 3).await;
    let index = format!("apiprojectkeys:{project}");
    let backup = format!("migrate:apiprojectkeys:{project}:set");
    let building = format!("migrate:apiprojectkeys:{project}:zset");
    let mut a = vec![building.clone()];
    for k in &keys {
        a.extend(["0".to_owned(), k.key_id.clone()]);
    }
    raw(&ops, "ZADD", a).await.unwrap();
    cmd(&ops, "RENAME", &[&index, &backup]).await;
    let minted = app.mint(&project, json!({})).await;
    assert_eq!(key_type(&ops, &index).await, "zset");
    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mut expected: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    expected.push(minted.key_id);
    let members = zset_members(&ops, &index).await;
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        sorted(expected)
    );
    for gone in [&backup, &building] {
        assert_eq!(key_type(&ops, gone).await, "none", "{gone}");
    }
}

#[tokio::test]
async fn migrate_while_keyward_mints_into_the_project_loses_no_id() {
    let redis = Arc::new(TestRedis::start());
    enable_migrator(&redis).await;
    let app = Arc::new(TestApp::spawn_with(redis.clone(), |_| {}).await);
    let ops = redis.ops().await;
    let (project, keys) = legacy_project_with_keys(&ops, 2).await;
    let index = format!("apiprojectkeys:{project}");
    // A large index (ids without documents are not keys, but they must
    // survive the conversion all the same).
    let filler: Vec<String> = (0..30_000).map(|i| format!("k_fill{i:07}")).collect();
    for chunk in filler.chunks(5_000) {
        let mut a = vec![index.clone()];
        a.extend(chunk.iter().cloned());
        raw(&ops, "SADD", a).await.unwrap();
    }

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let minter = tokio::spawn({
        let (app, project, done) = (app.clone(), project.clone(), done.clone());
        async move {
            let mut minted = Vec::new();
            let mut after = 0;
            while after < 3 {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    after += 1;
                }
                let body = json!({ "project_id": project, "owner": "o", "server_name": "s" });
                let r = app.admin_post("/v1/mint-key", &body).await;
                assert_eq!(
                    r.status(),
                    StatusCode::CREATED,
                    "{}",
                    r.text().await.unwrap()
                );
                let v: Value = r.json().await.unwrap();
                minted.push(v["key_id"].as_str().unwrap().to_owned());
            }
            minted
        }
    });
    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let minted = minter.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(minted.len() > 3, "mints ran during the migration");

    assert_eq!(key_type(&ops, &index).await, "zset");
    let members = zset_members(&ops, &index).await;
    for id in filler
        .iter()
        .chain(&minted)
        .chain(keys.iter().map(|k| &k.key_id))
    {
        assert!(members.contains_key(id), "{id} survived the conversion");
    }
    let working: Vec<String> = cmd(&ops, "KEYS", &["migrate:*"]).await.convert().unwrap();
    assert!(working.is_empty(), "{working:?}");
}

#[tokio::test]
async fn the_migrator_may_delete_only_its_own_working_keys() {
    let redis = TestRedis::start();
    enable_migrator(&redis).await;
    let migrator = redis.client("migrator", MIGRATOR_PASSWORD).await;
    for key in [
        "apikey:p:k_abcdefg",
        "project:p",
        "apiprojectkeys:p",
        "audit:keylookup",
    ] {
        let err = raw(&migrator, "DEL", args(&[key])).await.expect_err(key);
        assert!(err.starts_with("NOPERM"), "DEL {key}: {err}");
    }
    for (command, a) in [
        ("KEYS", vec!["*"]),
        ("XRANGE", vec!["audit:keylookup", "-", "+"]),
        ("EVAL", vec!["return 1", "0"]),
    ] {
        let err = raw(&migrator, command, args(&a)).await.expect_err(command);
        assert!(err.starts_with("NOPERM"), "{command}: {err}");
    }
    raw(&migrator, "DEL", args(&["migrate:apiprojectkeys:p:set"]))
        .await
        .unwrap();
    raw(&migrator, "SCAN", args(&["0", "MATCH", "project:*"]))
        .await
        .unwrap();
    // The manager may read a plain-set index but still delete nothing.
    let manager = redis
        .client("manager", crate::helpers::MANAGER_PASSWORD)
        .await;
    raw(&manager, "SMEMBERS", args(&["apiprojectkeys:p"]))
        .await
        .unwrap();
    let err = raw(&manager, "DEL", args(&["apiprojectkeys:p"]))
        .await
        .unwrap_err();
    assert!(err.starts_with("NOPERM"), "{err}");

    // Without the migrator's credentials, migrate says what is missing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("migrate")
        .env_remove("KEYWARD_MIGRATE_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYWARD_MIGRATE_REDIS_URL"));
}

#[tokio::test]
async fn unreadable_data_is_401_unreadable_for_validation_and_409_for_admin_never_5xx() {
    let redis = Arc::new(TestRedis::start());
    enable_migrator(&redis).await;
    let ops = redis.ops().await;
    let mut bin = Binary::start(&redis, &[("KEYWARD_LOG", "warn")]).await;
    let project = random_id("legacy");
    legacy_project(&ops, &project).await;
    let good = legacy_key(&ops, &project, CHEAP_COST, |_| {}).await;

    // Each case: a key of the project's set index whose document keyward
    // cannot read, with CONTENT somewhere it must never be echoed from.
    let mut cases: Vec<(&str, LegacyKey)> = Vec::new();
    let json_key = |tweak: fn(&mut Value)| {
        let ops = &ops;
        let project = &project;
        async move { legacy_key(ops, project, CHEAP_COST, tweak).await }
    };
    cases.push((
        "wrong types",
        json_key(|d| d["disabled"] = json!(CONTENT)).await,
    ));
    cases.push((
        "missing secret_hash",
        json_key(|d| {
            d.as_object_mut().unwrap().remove("secret_hash");
            d["owner"] = json!(CONTENT);
        })
        .await,
    ));
    let replaced = |kind: &'static str| {
        let ops = &ops;
        let project = &project;
        async move {
            let key = legacy_key(ops, project, CHEAP_COST, |_| {}).await;
            let doc_key = format!("apikey:{project}:{}", key.key_id);
            cmd(ops, "DEL", &[&doc_key]).await;
            match kind {
                "string" => cmd(ops, "SET", &[&doc_key, &format!("{CONTENT} not JSON")]).await,
                "hash" => cmd(ops, "HSET", &[&doc_key, "secret_hash", CONTENT]).await,
                _ => {
                    let json = format!("\"{CONTENT}\"");
                    cmd(ops, "JSON.SET", &[&doc_key, "$", &json]).await
                }
            };
            key
        }
    };
    cases.push(("not JSON (a string key)", replaced("string").await));
    cases.push(("a hash at apikey:", replaced("hash").await));
    cases.push((
        "a JSON string, not an object",
        replaced("json-string").await,
    ));

    let admin_get = |path: String| {
        let bin = &bin;
        async move {
            bin.http
                .get(format!("{}{path}", bin.base))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
        }
    };
    for (what, key) in &cases {
        assert_eq!(
            bin.status(&key.api_key).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
        let query = format!("project_id={project}&key_id={}", key.key_id);
        let r = admin_get(format!("/v1/get-key?{query}")).await;
        assert_error(r, StatusCode::CONFLICT, "unreadable_data").await;
        let by_id = json!({ "project_id": project, "key_id": key.key_id });
        for path in ["/v1/revoke-key", "/v1/rotate-key"] {
            let r = bin.post(path, &by_id, Some(ADMIN_TOKEN)).await;
            assert_eq!(r.status(), StatusCode::CONFLICT, "{what} {path}");
        }
        let update = json!({ "project_id": project, "key_id": key.key_id, "owner": "x" });
        let r = bin.post("/v1/update-key", &update, Some(ADMIN_TOKEN)).await;
        assert_error(r, StatusCode::CONFLICT, "unreadable_data").await;
    }
    // Audit: one `unreadable` entry per case.
    let entries: Vec<(String, HashMap<String, String>)> =
        fred::prelude::StreamsInterface::xrange(&ops, "audit:keylookup", "-", "+", None)
            .await
            .unwrap();
    for (what, key) in &cases {
        let entry = entries
            .iter()
            .rev()
            .find(|(_, e)| e.get("key_id") == Some(&key.key_id))
            .unwrap_or_else(|| panic!("an audit entry for {what}"));
        assert_eq!(entry.1["reason"], "unreadable", "{what}");
    }

    // A hash that is no PHC string: the document reads, the hash does not.
    // Validation denies it as unreadable; rotate-key repairs it.
    let corrupt = legacy_key(&ops, &project, CHEAP_COST, |d| {
        d["secret_hash"] = json!(format!("$argon2id${CONTENT}"))
    })
    .await;
    bin.validate(&corrupt.api_key, StatusCode::UNAUTHORIZED)
        .await;
    let by_id = json!({ "project_id": project, "key_id": corrupt.key_id });
    let r = bin.post("/v1/rotate-key", &by_id, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let repaired: Value = r.json().await.unwrap();
    bin.validate(repaired["api_key"].as_str().unwrap(), StatusCode::OK)
        .await;

    // The listing loses no key: unreadable ones are marked, not dropped.
    let r = admin_get(format!("/v1/list-keys?project_id={project}&limit=100")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Value = r.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), cases.len() + 2, "{listed}");
    for (what, key) in &cases {
        let item = items
            .iter()
            .find(|i| i["key_id"] == key.key_id.as_str())
            .unwrap_or_else(|| panic!("{what} listed"));
        assert_eq!(item["unreadable"], true, "{what}");
        assert_eq!(item["disabled"], true, "{what}");
    }
    let good_item = items
        .iter()
        .find(|i| i["key_id"] == good.key_id.as_str())
        .unwrap();
    assert!(good_item.get("unreadable").is_none());

    // Indexes and project documents of the wrong type or shape.
    let odd_projects = [
        (
            "an index that is a string",
            "SET",
            "apiprojectkeys:{p}",
            vec![CONTENT],
        ),
        (
            "an index that is a list",
            "RPUSH",
            "apiprojectkeys:{p}",
            vec![CONTENT],
        ),
        (
            "a project that is a hash",
            "HSET",
            "project:{p}",
            vec!["label", CONTENT],
        ),
    ];
    for (what, command, pattern, values) in odd_projects {
        let p = random_id("odd");
        if !pattern.starts_with("project:") {
            legacy_project(&ops, &p).await;
        }
        let mut a = vec![pattern.replace("{p}", &p)];
        a.extend(values.iter().map(|v| v.to_string()));
        raw(&ops, command, a).await.unwrap();
        let r = admin_get(format!("/v1/list-keys?project_id={p}")).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{what}: list");
        let mint = json!({ "project_id": p, "owner": "o", "server_name": "s" });
        let r = bin.post("/v1/mint-key", &mint, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{what}: mint");
    }
    let p = random_id("odd");
    let shape = json!({ "project_id": p, "label": 5, "owner": CONTENT });
    cmd(
        &ops,
        "JSON.SET",
        &[&format!("project:{p}"), "$", &shape.to_string()],
    )
    .await;
    let r = admin_get(format!("/v1/admin/projects/{p}")).await;
    assert_error(r, StatusCode::CONFLICT, "unreadable_data").await;

    assert!(bin.metric("keyward_unreadable_documents_total").await >= 8.0);
    let five_xx: Vec<String> = bin
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("keyward_http_requests_total") && l.contains("status=\"5"))
        .map(str::to_owned)
        .collect();
    assert!(five_xx.is_empty(), "no 5xx at all: {five_xx:?}");

    // Stop it and read its log: each unreadable document is named by its
    // Redis key, and nothing of its content appears.
    let logs = bin.stop_and_read_logs();
    for (what, key) in &cases {
        let redis_key = format!("apikey:{project}:{}", key.key_id);
        assert!(logs.contains(&redis_key), "{what} logged: {logs}");
    }
    assert!(!logs.contains(CONTENT), "content never logged: {logs}");

    // migrate reports all of it, changes none of it, and exits 3.
    let (code, out, err) = migrate(&redis, &["--apply"]).await;
    assert_eq!(code, 3, "{out}{err}");
    for (what, key) in &cases {
        assert!(
            out.contains(&format!("apikey:{project}:{}: cannot be read", key.key_id)),
            "{what}: {out}"
        );
    }
    assert!(!out.contains(CONTENT), "{out}");
}

/// Issue #37, finding 2: `keyward migrate` prints what it finds in Redis
/// escaped (no escape sequence, bell or carriage return reaches the
/// terminal), and index members that are not key ids are reported and
/// never copied, so the migrated index lists as before (no 409 page).
#[tokio::test]
async fn migrate_escapes_hostile_names_and_copies_no_member_that_is_not_a_key_id() {
    let redis = Arc::new(TestRedis::start());
    enable_migrator(&redis).await;
    let app = TestApp::spawn_with(redis.clone(), |_| {}).await;
    let ops = redis.ops().await;
    let (project, keys) = legacy_project_with_keys(&ops, 2).await;
    let index = format!("apiprojectkeys:{project}");
    let junk = ["\u{1b}]52;c;ZXZpbA==\u{7}", "k_\u{1b}[2K\rforged"];
    for member in junk {
        cmd(&ops, "SADD", &[&index, member]).await;
    }
    let raw_text = |out: &str| out.chars().any(|c| c.is_control() && c != '\n');
    for apply in [false, true] {
        let extra: &[&str] = if apply { &["--apply"] } else { &[] };
        let (code, out, err) = migrate(&redis, extra).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(!raw_text(&out), "printed raw: {out:?}");
        assert!(
            out.contains(&format!("{index}: 2 members are not key ids")),
            "{out}"
        );
    }
    let members = zset_members(&ops, &index).await;
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        sorted(keys.iter().map(|k| k.key_id.clone())),
        "only key ids copied"
    );
    assert_eq!(ids_of(&walk(&app, &project, 1).await).len(), 2);
}
