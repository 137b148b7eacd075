//! The OpenAPI document: what the server serves is what `voltrun openapi` prints and what
//! `web/openapi.json` (the dashboard's types are generated from it) holds; a real validator
//! accepts it as OpenAPI 3.1; and every operation it describes is answered by a route of the
//! running server. (That every route is documented is a unit test of voltrun-api, which reads
//! the routes from the axum router itself.)

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/openapi.json")
}

fn served(server: &Server) -> String {
    let r = server.anon().raw("GET", "/api/openapi.json", None, &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
    String::from_utf8(r.body).expect("UTF-8")
}

#[test]
fn served_document_is_the_printed_one_and_the_committed_copy() {
    let server = Server::start();
    let doc = served(&server);
    let out = Command::new(env!("CARGO_BIN_EXE_voltrun")).arg("openapi").output().expect("run voltrun openapi");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), doc, "`voltrun openapi` differs from GET /api/openapi.json");
    let committed = std::fs::read_to_string(committed_path()).expect("read web/openapi.json");
    assert!(
        committed == doc,
        "web/openapi.json is not the document the server generates: run `cargo run -p voltrun -- openapi > web/openapi.json` \
         (then `cd web && npm run build` regenerates the dashboard's types from it)"
    );
}

#[test]
fn document_is_valid_openapi_3_1() {
    let server = Server::start();
    let doc = served(&server);
    let v: Value = serde_json::from_str(&doc).expect("JSON");
    assert_eq!(v["openapi"], "3.1.0", "{}", &doc[..200.min(doc.len())]);
    let dir = temp_dir("openapi");
    let file = dir.join("openapi.json");
    std::fs::write(&file, &doc).unwrap();
    let has_validator = Command::new("python3").args(["-c", "import openapi_spec_validator"]).status().is_ok_and(|s| s.success());
    assert!(has_validator, "the validator is missing: `python3 -m pip install openapi-spec-validator` (scripts/test installs it)");
    let out =
        Command::new("python3").args(["-m", "openapi_spec_validator", "--schema", "3.1", "--validation-errors", "all"]).arg(&file).output().expect("run openapi-spec-validator");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("OK"), "openapi-spec-validator refused the document:\n{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_documented_operation_reaches_a_route() {
    let server = Server::start();
    let user = server.user();
    let doc: Value = serde_json::from_str(&served(&server)).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        // Every path parameter gets a value no resource has.
        let concrete: String = path.split('/').map(|seg| if seg.starts_with('{') && seg.ends_with('}') { "openapi-probe" } else { seg }).collect::<Vec<_>>().join("/");
        for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = method.to_ascii_uppercase();
            let r = user.raw(&m, &concrete, None, &[]);
            let body = String::from_utf8_lossy(&r.body);
            assert_ne!(r.status, 405, "{m} {concrete} (documented as {path}) has no route: {body}");
            // The router's own 404 for an unknown path; the trigger answers the same words for
            // a missing function route, which is its documented answer there.
            let no_route = r.status == 404 && body.contains("route not found");
            assert!(!no_route || path.starts_with("/api/execute"), "{m} {concrete} (documented as {path}) has no route: {body}");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} operations were probed");
}
