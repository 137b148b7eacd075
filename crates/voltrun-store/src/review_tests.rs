//! Regression tests of the issue-15 security review's store findings (3, 5, 6, 9) and of later
//! reviews' store findings, each named
//! after what broke. They run on SQLite, and on PostgreSQL with `VOLTRUN_TEST_DATABASE=postgres`
//! (and `VOLTRUN_TEST_PG_URL`), where a NUL in a build log used to be refused.

use voltrun_core::{time, Function, FunctionStates, Quotas};

use crate::{BuildPhase, BuildRecord, DeleteLayer, NewLayer, Store};

/// A fresh store: a SQLite file, or a new PostgreSQL database when the suite runs on it.
struct TestDb {
    store: Store,
    dir: std::path::PathBuf,
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((base, name)) = &self.pg {
            psql(base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql").arg(url).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn test_db(tag: &str) -> TestDb {
    let dir = std::env::temp_dir().join(format!("voltrun-store-review-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if std::env::var("VOLTRUN_TEST_DATABASE").as_deref() == Ok("postgres") {
        let base = std::env::var("VOLTRUN_TEST_PG_URL").expect("VOLTRUN_TEST_PG_URL must name a PostgreSQL server (run scripts/pg-up)");
        let name = format!("voltrun_store_{tag}_{}", std::process::id());
        psql(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&base, &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", base.rsplit_once('/').expect("a URL with a database").0);
        let store = Store::open(&url).await.unwrap();
        return TestDb { store, dir, pg: Some((base, name)) };
    }
    let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
    TestDb { store, dir, pg: None }
}

async fn user(store: &Store, id: &str) {
    sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, 'n', 'h', 't')")
        .bind(id)
        .bind(format!("{id}@example.com"))
        .execute(&store.pool)
        .await
        .unwrap();
}

fn function(user: &str, name: &str, source: serde_json::Value) -> Function {
    let mut body = serde_json::json!({"name": name, "runtime": "python"});
    body.as_object_mut().unwrap().extend(source.as_object().unwrap().clone());
    let n: voltrun_core::NewFunction = serde_json::from_value(body).unwrap();
    n.into_function(voltrun_core::id::new_id("fn_"), user.into(), time::now()).unwrap()
}

fn code() -> serde_json::Value {
    serde_json::json!({"code": "def handler(e, c):\n    return 1"})
}

fn files(tag: &str) -> serde_json::Value {
    serde_json::json!({"files": {"main.py": format!("def handler(e, c):\n    return {tag:?}\n"), "requirements.txt": "six\n"}})
}

fn lease() -> String {
    time::in_seconds(30)
}

/// Finding 5: the claim took the lowest id, so one user's backlog took every slot while
/// another user's build waited (2 slots, 2 builds per user).
#[tokio::test]
async fn one_users_queued_builds_do_not_hold_every_build_slot() {
    let db = test_db("fair").await;
    let s = &db.store;
    user(s, "ua").await;
    user(s, "ub").await;
    let mut queued = Vec::new();
    for (u, name) in [("ua", "a1"), ("ua", "a2"), ("ua", "a3"), ("ub", "b1")] {
        let mut f = function(u, name, code());
        f.states = FunctionStates::first_build();
        let b = BuildRecord::queued(&f, 0, &time::now());
        s.insert_function_with_build(&f, &Quotas::default(), &b).await.unwrap();
        queued.push((u, b.id));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await; // ids grow with time
    }
    let first = s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().expect("a build");
    let second = s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().expect("a build");
    assert_eq!(first.user_id, "ua", "the oldest build goes first");
    assert_eq!(second.user_id, "ub", "the second slot goes to the user with none running, not to ua's backlog");
    let third = s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().expect("a build");
    assert_eq!(third.user_id, "ua");
    assert!(s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().is_none(), "ua is at its 2 builds");
}

/// Finding 6: PostgreSQL refuses NUL in text, so storing the end of a build whose log had
/// one failed for ever and the build stayed `building`, its lease renewed by the heartbeat.
#[tokio::test]
async fn a_build_log_with_a_nul_byte_does_not_leave_the_build_running_for_ever() {
    let db = test_db("nul").await;
    let s = &db.store;
    user(s, "u1").await;
    let mut f = function("u1", "nul", code());
    f.states = FunctionStates::first_build();
    s.insert_function_with_build(&f, &Quotas::default(), &BuildRecord::queued(&f, 0, &time::now())).await.unwrap();
    let mut b = s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().expect("queued");
    s.save_build_progress(&b.id, "n1", "Collecting bad\0name\n", false).await.unwrap();
    b.finish(Err("Invalid requirement: 'bad\0name'".into()), "Collecting bad\0name\nERROR\n".into(), false, false);
    let stored = s.finish_build(&b, "n1", &Quotas::default()).await.unwrap().expect("still ours");
    assert_eq!(stored.phase, BuildPhase::Failed);
    let latest = s.latest_build("u1", &f.id).await.unwrap().unwrap();
    assert_eq!(latest.phase, BuildPhase::Failed);
    assert!(!latest.logs.contains('\0') && latest.logs.contains("bad\u{fffd}name"), "{:?}", latest.logs);
    assert!(!latest.reason.unwrap().contains('\0'));
}

/// Finding 6: the heartbeat renewed every `building` row the node owned, also one whose
/// task had ended without storing its end; now only the builds its tasks still run.
#[tokio::test]
async fn a_build_whose_task_ended_is_not_renewed_by_the_heartbeat() {
    let db = test_db("hb").await;
    let s = &db.store;
    user(s, "u1").await;
    let mut ids = Vec::new();
    for name in ["h1", "h2"] {
        let mut f = function("u1", name, code());
        f.states = FunctionStates::first_build();
        s.insert_function_with_build(&f, &Quotas::default(), &BuildRecord::queued(&f, 0, &time::now())).await.unwrap();
        ids.push(s.claim_build("n1", &time::now(), &time::in_seconds(-5), 2).await.unwrap().expect("queued").id);
    }
    let held = s.heartbeat_builds("n1", &lease(), &ids[..1]).await.unwrap();
    assert_eq!(held, ids[..1].to_vec());
    assert!(s.heartbeat_builds("n1", &lease(), &[]).await.unwrap().is_empty());
    // The other one's lease ran out: the reaper queues it again.
    let (requeued, failed) = s.expire_build_leases(&time::now()).await.unwrap();
    assert_eq!((requeued, failed), (1, 0));
    assert_eq!(s.build_by_id(&ids[1]).await.unwrap().unwrap().phase, BuildPhase::Queued);
    assert_eq!(s.build_by_id(&ids[0]).await.unwrap().unwrap().phase, BuildPhase::Building);
}

/// Finding 3: deleting a function (or replacing its package) left the package blob stored
/// for ever.
#[tokio::test]
async fn deleting_a_function_frees_its_package_blob() {
    let db = test_db("free").await;
    let s = &db.store;
    user(s, "u1").await;
    let f = function("u1", "pkg", files("one"));
    let first = f.package.clone().unwrap().sha256;
    s.insert_function(&f, &Quotas::default()).await.unwrap();
    assert!(s.has_blob(&first).await.unwrap());
    // A second function with the same bytes keeps the blob while it lives.
    let twin = function("u1", "twin", files("one"));
    s.insert_function(&twin, &Quotas::default()).await.unwrap();
    // An update to another package frees the first only when no one else has it.
    let (next, changed) = voltrun_core::FunctionPatch {
        files: files("two")["files"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()),
        ..Default::default()
    }
    .apply(&f, time::now())
    .unwrap();
    assert!(changed);
    let second = next.package.clone().unwrap().sha256;
    assert!(s.update_function(&next, f.version, &Quotas::default()).await.unwrap());
    assert!(s.has_blob(&first).await.unwrap(), "the twin still has it");
    assert!(s.delete_function("u1", &twin.id).await.unwrap());
    // Versions keep their packages (SPEC §13): f's version 1 still runs the first.
    assert!(s.has_blob(&first).await.unwrap(), "f's version 1 still has it");
    assert!(s.delete_function("u1", &f.id).await.unwrap());
    assert!(!s.has_blob(&first).await.unwrap(), "no one has the first package now");
    assert!(!s.has_blob(&second).await.unwrap(), "the deleted function's package is gone");
    assert!(s.referenced_packages().await.unwrap().is_empty());
}

/// Finding 9: a queued update's package is referenced only by its build row, so deleting a
/// layer with the same bytes deleted the blob the build was about to read.
#[tokio::test]
async fn a_queued_updates_package_survives_deleting_a_layer_with_the_same_bytes() {
    let db = test_db("layer").await;
    let s = &db.store;
    user(s, "u1").await;
    let f = function("u1", "upd", code());
    s.insert_function(&f, &Quotas::default()).await.unwrap();
    let with_package = function("u1", "upd", files("x"));
    let zip = with_package.package_zip.clone().unwrap();
    let sha = with_package.package.clone().unwrap().sha256;
    let layer = NewLayer {
        user_id: "u1".into(),
        name: "same".into(),
        description: String::new(),
        size: zip.len() as u64,
        unpacked_size: 1,
        file_count: 2,
        sha256: sha.clone(),
        created_at: time::now(),
    };
    s.insert_layer(&layer, &zip, &Quotas::default()).await.unwrap();
    let mut next = f.clone();
    next.code = String::new();
    next.package = with_package.package.clone();
    next.package_zip = Some(zip.clone());
    next.handler = "main.handler".into();
    next.version += 1;
    let b = BuildRecord::queued(&next, f.version, &time::now());
    assert!(s.queue_update_build(&b).await.unwrap());
    assert!(matches!(s.delete_layer("u1", "same", 1).await.unwrap(), DeleteLayer::Deleted));
    assert!(s.has_blob(&sha).await.unwrap(), "the queued update still needs its package");
    assert!(s.referenced_packages().await.unwrap().contains(&sha));
    // Once the build failed, nothing has it: freed in the same transaction.
    let mut claimed = s.claim_build("n1", &time::now(), &lease(), 2).await.unwrap().expect("queued");
    claimed.finish(Err("no".into()), String::new(), false, false);
    s.finish_build(&claimed, "n1", &Quotas::default()).await.unwrap().expect("ours");
    assert!(!s.has_blob(&sha).await.unwrap());
}

/// Finding 9: a layer only a queued update mounts was deleted under it.
#[tokio::test]
async fn deleting_a_layer_a_queued_update_mounts_is_refused() {
    let db = test_db("mounts").await;
    let s = &db.store;
    user(s, "u1").await;
    let f = function("u1", "upd", code());
    s.insert_function(&f, &Quotas::default()).await.unwrap();
    let zip = voltrun_package::zip_from_files(&[("python/x.py".to_string(), "X = 1\n".to_string())].into(), &voltrun_package::Limits::files()).unwrap();
    let layer = NewLayer {
        user_id: "u1".into(),
        name: "lib_1".into(),
        description: String::new(),
        size: zip.len() as u64,
        unpacked_size: 6,
        file_count: 1,
        sha256: voltrun_package::sha256_hex(&zip),
        created_at: time::now(),
    };
    s.insert_layer(&layer, &zip, &Quotas::default()).await.unwrap();
    let mut next = f.clone();
    next.layers = vec!["lib_1:1".into()];
    next.version += 1;
    assert!(s.queue_update_build(&BuildRecord::queued(&next, f.version, &time::now())).await.unwrap());
    match s.delete_layer("u1", "lib_1", 1).await.unwrap() {
        DeleteLayer::InUse(names) => assert_eq!(names, vec!["upd".to_string()]),
        other => panic!("deleted a layer a queued update mounts: {other:?}"),
    }
}

/// Issue 16's review: on PostgreSQL, deleting one user's function freed the shared code row of
/// a code text that another user's version, being saved at the same moment (its row not yet
/// committed, so the DELETE could not see it), had just named: that version lost its code.
/// On SQLite one write transaction runs at a time, so the save and the free run one after the
/// other there, and the code must stay all the same.
#[tokio::test]
async fn a_version_saved_while_another_users_same_code_is_freed_keeps_its_code() {
    let db = test_db("codelock").await;
    let s = &db.store;
    user(s, "u1").await;
    user(s, "u2").await;
    let shared = serde_json::json!({"code": "def handler(e, c):\n    return 'shared'"});
    let mine = function("u1", "mine", shared.clone());
    s.insert_function(&mine, &Quotas::default()).await.unwrap();
    let theirs = function("u2", "theirs", code());
    s.insert_function(&theirs, &Quotas::default()).await.unwrap();
    let mut next = theirs.clone();
    next.code = mine.code.clone();
    next.version = theirs.version + 1;
    let sha = crate::versions::code_sha256(&mine.code);
    let codes = |s: &Store| {
        let (pool, sha) = (s.pool.clone(), sha.clone());
        async move { crate::get_i64(&sqlx::query("SELECT COUNT(*) AS n FROM version_code WHERE sha256 = $1").bind(sha).fetch_one(&pool).await.unwrap(), "n").unwrap() }
    };
    if db.pg.is_some() {
        // u2's version of the same code is saved (uncommitted) while u1 deletes the function
        // that was the code's only committed holder.
        let mut save = s.pool.begin().await.unwrap();
        s.snapshot_in(&mut save, &next).await.unwrap();
        assert!(s.delete_function("u1", &mine.id).await.unwrap());
        save.commit().await.unwrap();
    } else {
        assert!(s.delete_function("u1", &mine.id).await.unwrap());
        let mut save = s.pool.begin().await.unwrap();
        s.snapshot_in(&mut save, &next).await.unwrap();
        save.commit().await.unwrap();
    }
    assert_eq!(codes(s).await, 1, "u2's version names the code, so the code stays");
    // Frees still free: with u2's function gone, nothing names the code.
    assert!(s.delete_function("u2", &theirs.id).await.unwrap());
    assert_eq!(codes(s).await, 0);
}

/// CI: on SQLite a write transaction that read first (every function create and update
/// counts the user's functions before it writes) started DEFERRED, so when another
/// connection committed a write between its read and its write (a schedule's tick), SQLite
/// refused the write at once with SQLITE_BUSY, never waiting, and the request was a 503.
#[tokio::test]
async fn a_write_that_read_first_is_not_refused_when_another_write_commits_meanwhile() {
    let db = test_db("immediate").await;
    let s = &db.store;
    user(s, "u1").await;
    let mut tx = s.user_write("u1").await.unwrap();
    sqlx::query("SELECT COUNT(*) AS n FROM functions WHERE user_id = 'u1'").fetch_one(&mut *tx).await.unwrap();
    // Another connection writes meanwhile: it waits for this transaction (SQLite) or goes
    // ahead (PostgreSQL, another row); either way this transaction's write must succeed.
    let other = {
        let s = s.clone();
        tokio::spawn(async move { user(&s, "u2").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ('u3', 'u3@example.com', 'n', 'h', 't')").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    other.await.unwrap();
    let n = crate::get_i64(&sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(&s.pool).await.unwrap(), "n").unwrap();
    assert_eq!(n, 3);
}
