//! Golden request/response pairs of the Lambda shapes (STYLE: golden files for formats):
//! each `tests/golden/lambda/<case>.request.json` beside its `<case>.response.json`. A request
//! goes through the same translation the server runs (AWS's request → our types → AWS's
//! response, or the error response), with a fixed id, user and clock. `VOLTRUN_BLESS=1`
//! rewrites the response files after a deliberate change (review the diff).

use std::path::PathBuf;

use axum::response::IntoResponse;
use serde_json::{json, Value};
use voltrun_core::execution::{ErrorKind, ExecError};

use super::errors::LambdaResult;
use super::functions::{configuration_patch, create_draft};
use super::{account_id, invoke, shapes, LambdaCaller};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lambda")
}

fn caller() -> LambdaCaller {
    LambdaCaller { user_id: "usr_golden".into(), region: "eu-west-1".into(), account_id: account_id("usr_golden") }
}

fn body_of(v: &Value) -> Vec<u8> {
    match v.get("raw") {
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        _ => serde_json::to_vec(&v["body"]).unwrap(),
    }
}

fn created(body: &[u8]) -> LambdaResult<voltrun_core::Function> {
    let draft = create_draft(body)?;
    Ok(draft.into_function("fn_golden".into(), "usr_golden".into(), "2026-01-01T00:00:00.000Z".into())?)
}

/// What the server would answer: `{status, headers?, body}`.
async fn answer(case: &Value) -> Value {
    let c = caller();
    let result: LambdaResult<(u16, Value)> = async {
        match case["operation"].as_str().unwrap() {
            "CreateFunction" => {
                let f = created(&body_of(case))?;
                Ok((201, shapes::configuration(&c, &f, "$LATEST", None)))
            }
            "UpdateFunctionConfiguration" => {
                let f = created(&serde_json::to_vec(&case["base"]).unwrap())?;
                let (patch, _) = configuration_patch(&body_of(case))?;
                let (f, _) = patch.apply(&f, "2026-01-02T00:00:00.000Z".into())?;
                Ok((200, shapes::configuration(&c, &f, "$LATEST", None)))
            }
            "InvokeError" => {
                let e: ExecError = serde_json::from_value(case["error"].clone()).unwrap();
                let kind: ErrorKind = e.kind;
                Ok((200, invoke::error_payload(kind, &e.message, e.stack.as_deref())))
            }
            other => panic!("unknown operation {other}"),
        }
    }
    .await;
    match result {
        Ok((status, body)) => json!({"status": status, "body": body}),
        Err(e) => {
            let resp = e.into_response();
            let status = resp.status().as_u16();
            let error_type = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            json!({"status": status, "headers": {"x-amzn-ErrorType": error_type}, "body": serde_json::from_slice::<Value>(&bytes).unwrap()})
        }
    }
}

#[tokio::test]
async fn lambda_shapes_match_their_golden_files() {
    let bless = std::env::var("VOLTRUN_BLESS").is_ok_and(|v| v == "1");
    let mut cases = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir()).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(case) = name.strip_suffix(".request.json") else { continue };
        let request: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let got = answer(&request).await;
        let expected_path = dir().join(format!("{case}.response.json"));
        if bless {
            std::fs::write(&expected_path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        }
        let expected: Value = serde_json::from_slice(&std::fs::read(&expected_path).unwrap_or_else(|e| panic!("{case}: {e} (run with VOLTRUN_BLESS=1 to write it)"))).unwrap();
        assert_eq!(got, expected, "{case}: the answer differs from {}", expected_path.display());
        cases += 1;
    }
    assert!(cases >= 8, "only {cases} golden cases were found");
}
