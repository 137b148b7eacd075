//! The Lambda API (SPEC §14, issue 17) with real clients nobody here wrote: boto3, the AWS
//! CLI v1 and the AWS JS SDK v3, installed from PyPI and npm into target/ by this test when
//! missing (never skipped), driven by lambda_api/boto_suite.py (which runs js_suite.js)
//! against the real binary on 127.0.0.1. Plus the key endpoints themselves over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use crate::harness::*;

/// The workspace's target directory (where the clients are installed once).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The clients: a venv with boto3 and awscli, and a node_modules with
/// @aws-sdk/client-lambda. Installed once per target dir (held under a lock so two tests do
/// not install at once).
struct Clients {
    python: PathBuf,
    aws: PathBuf,
    js_dir: PathBuf,
}

fn clients() -> &'static Clients {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    CLIENTS.get_or_init(|| {
        let venv = target_dir().join("lambda-venv");
        let python = venv.join("bin/python");
        let aws = venv.join("bin/aws");
        let has_boto = python.exists() && Command::new(&python).args(["-c", "import boto3, awscli"]).output().is_ok_and(|o| o.status.success());
        if !has_boto || !aws.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
            run(Command::new(venv.join("bin/pip")).args(["install", "-q", "boto3", "awscli"]), "pip install boto3 awscli");
        }
        let js_dir = target_dir().join("lambda-js");
        if !js_dir.join("node_modules/@aws-sdk/client-lambda/package.json").exists() {
            std::fs::create_dir_all(&js_dir).unwrap();
            std::fs::write(js_dir.join("package.json"), r#"{"name": "lambda-js", "private": true}"#).unwrap();
            run(Command::new("npm").args(["install", "--no-audit", "--no-fund", "@aws-sdk/client-lambda"]).current_dir(&js_dir), "npm install @aws-sdk/client-lambda");
        }
        Clients { python, aws, js_dir }
    })
}

/// An `aws` key of the user behind `c`: (id, access key id, secret).
fn aws_key(c: &Client, name: &str) -> (String, String, String) {
    let (status, k) = c.post("/api/keys", &json!({"name": name, "type": "aws"}));
    assert_eq!(status, 201, "{k}");
    let akid = k["access_key_id"].as_str().unwrap().to_string();
    let secret = k["secret_access_key"].as_str().unwrap().to_string();
    assert!(akid.len() == 20 && akid.starts_with("AKIA") && akid.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{akid}");
    assert!(secret.len() == 40 && secret.bytes().all(|b| b.is_ascii_alphanumeric()), "a 40-character secret");
    assert_eq!(k["type"], "aws");
    assert!(k.get("key").is_none(), "an aws key has no bearer key: {k}");
    (k["id"].as_str().unwrap().to_string(), akid, secret)
}

fn bearer(c: &Client) -> String {
    c.auth.as_ref().unwrap().1.strip_prefix("Bearer ").unwrap().to_string()
}

/// `POST /api/keys {"type": "aws"}` shows the secret once; lists never do; the secret is not
/// in the database file in the clear; an unknown type is a 400.
#[test]
fn aws_keys_show_the_secret_once_and_store_it_sealed() {
    // On PostgreSQL this test holds its database, to dump it.
    let pg = (std::env::var("VOLTRUN_TEST_DATABASE").as_deref() == Ok("postgres")).then(PgDatabase::create);
    let s = match &pg {
        Some(db) => Server::spawn(&temp_dir("lambda-keys"), &["--database-url".to_string(), db.url.clone()], true),
        None => Server::start(),
    };
    let u = s.user();
    let (id, akid, secret) = aws_key(&u, "ci");
    let (status, list) = u.get("/api/keys");
    assert_eq!(status, 200);
    let row = list["items"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).cloned().unwrap();
    assert_eq!((row["type"].as_str(), row["access_key_id"].as_str()), (Some("aws"), Some(akid.as_str())));
    assert!(row.get("secret_access_key").is_none() && !list.to_string().contains(&secret), "{list}");
    let (status, body) = u.post("/api/keys", &json!({"name": "x", "type": "gcp"}));
    assert_error(status, &body, 400);
    // The secret is nowhere in the database in the clear (SQLite: the database file and WAL
    // in the data dir; PostgreSQL: pg_dump).
    let absent = |bytes: &[u8], what: &str| assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is in the clear in {what}");
    let mut read = 0;
    if let Some(db) = &pg {
        let dump = Command::new("pg_dump").arg(&db.url).output().expect("pg_dump runs");
        assert!(dump.status.success() && String::from_utf8_lossy(&dump.stdout).contains(&akid), "pg_dump saw the key row");
        absent(&dump.stdout, "pg_dump");
        read += 1;
    }
    for e in std::fs::read_dir(&s.data_dir).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            absent(&std::fs::read(e.path()).unwrap(), &format!("{:?}", e.path()));
            read += 1;
        }
    }
    assert!(read > 0, "nothing was searched");
    // An aws key is not a bearer key: its access key id or secret authenticates nothing natively.
    for cred in [&akid, &secret] {
        let (status, _) = s.anon().with_header("authorization", &format!("Bearer {cred}")).get("/api/functions");
        assert_eq!(status, 401);
    }
}

/// boto3, the AWS CLI and the JS SDK against the Lambda API: the whole suite of
/// boto_suite.py (create from a zip, waiters, invoke RequestResponse/Event/DryRun with Tail
/// and a handler error, updates, pagination, publish, account settings, AWS's error codes,
/// another user's function, a wrong secret, an unknown, revoked or expired key, unsigned
/// requests, a native function through boto3 and the reverse, delete).
#[test]
fn real_aws_clients_drive_the_lambda_api() {
    let cl = clients();
    let s = Server::start();
    let u = s.user();
    let other = s.user();
    let (_, akid, secret) = aws_key(&u, "boto");
    let (_, other_akid, other_secret) = aws_key(&other, "other");
    let (revoked_id, revoked_akid, revoked_secret) = aws_key(&u, "revoked");
    let (status, _) = u.delete(&format!("/api/keys/{revoked_id}"));
    assert_eq!(status, 204);
    let native = "nat-fn";
    u.create_function(native, "python3.11", "def handler(event, context):\n    return {'double': event['n'] * 2}\n", json!({}));
    let tmp = temp_dir("lambda-suite");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/lambda_api");
    let out = Command::new(&cl.python)
        .arg(dir.join("boto_suite.py"))
        .env("VR_ENDPOINT", &s.base)
        .env("VR_PREFIX", "lam")
        .env("VR_AKID", &akid)
        .env("VR_SECRET", &secret)
        .env("VR_OTHER_AKID", &other_akid)
        .env("VR_OTHER_SECRET", &other_secret)
        .env("VR_REVOKED_AKID", &revoked_akid)
        .env("VR_REVOKED_SECRET", &revoked_secret)
        .env("VR_TOKEN", bearer(&u))
        .env("VR_NATIVE", native)
        .env("VR_TMP", &tmp)
        .env("VR_AWS", &cl.aws)
        .env("VR_JS_DIR", &cl.js_dir)
        .env("VR_JS_SCRIPT", dir.join("js_suite.js"))
        // No client may look for credentials or a region anywhere else (no metadata address).
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .expect("run boto_suite.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(out.status.success() && stdout.contains("LAMBDA SUITE OK"), "boto_suite.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The functions boto3 made are rows of the native API.
    let (status, f) = u.get("/api/functions/lam-py");
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["description"], "edited natively");
    let (status, _) = other.get("/api/functions/lam-py");
    assert_eq!(status, 404);
}

/// Unknown Lambda operations answer AWS-style 4xx, never a 500 or our native 404, and
/// the unsigned request is refused before anything else is looked at.
#[test]
fn unknown_operations_and_unsigned_requests_answer_in_aws_words() {
    let s = Server::start();
    for (method, path) in [("GET", "/2015-03-31/functions/x/policy"), ("POST", "/2015-03-31/event-source-mappings/"), ("GET", "/2016-08-19/account-settings/")] {
        let r = s.anon().raw(method, path, None, &[]);
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.header("x-amzn-errortype"), Some("UnrecognizedClientException"));
        let body: Value = r.json();
        assert_eq!(body["Type"], "User");
    }
    // A body declared past the 6 MB limit is refused as too large before it is read.
    use std::io::{Read, Write};
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(conn, "POST /2015-03-31/functions/x/invocations HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", 6 * 1024 * 1024 + 1).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413") && head.contains("x-amzn-errortype: requesttoolargeexception"), "{head}");
}

/// A key that was used (and so is held opened in the SQLite node's key cache) stops at once
/// when revoked: the next signed request is refused, not served from the cache.
#[test]
fn a_used_key_stops_at_once_when_revoked() {
    let cl = clients();
    let s = Server::start();
    let u = s.user();
    let (id, akid, secret) = aws_key(&u, "used");
    let list = |what: &str| {
        let code = format!(
            "import boto3, botocore\n\
             c = boto3.client('lambda', endpoint_url='{}', aws_access_key_id='{akid}', aws_secret_access_key='{secret}', region_name='eu-west-1',\n\
                 config=botocore.config.Config(retries={{'max_attempts': 1}}))\n\
             try:\n    c.list_functions(); print('ok')\n\
             except botocore.exceptions.ClientError as e:\n    print(e.response['Error']['Code'], e.response['ResponseMetadata']['HTTPStatusCode'])\n",
            s.base
        );
        let out = Command::new(&cl.python).args(["-c", &code]).output().unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(list("before"), "ok");
    assert_eq!(list("again, from the cache"), "ok");
    let (status, body) = u.delete(&format!("/api/keys/{id}"));
    assert_eq!(status, 204, "{body}");
    assert_eq!(list("after the revocation"), "UnrecognizedClientException 403");
}
