//! The Lambda API (issue 17): a warm `Invoke` through `/2015-03-31/functions/{name}/invocations`
//! (SigV4 signed here, verified by the server: key lookup, unsealing, the HMAC chain) next to
//! the native `POST /api/functions/{name}/execute` with a bearer token, on the same warm
//! function, connection kept alive, calls interleaved so drift hits both alike. The target is
//! a ratio ≤ 1.2.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{pct, round, summary, time_ms, Server};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The headers of a SigV4-signed POST of `body` to `path` (no query), as an SDK sends them.
fn sign(host: &str, path: &str, body: &[u8], akid: &str, secret: &str) -> Vec<(String, String)> {
    let now = chrono::Utc::now();
    let amz = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = &amz[..8];
    let payload = hex(&Sha256::digest(body));
    let canonical = format!("POST\n{path}\n\nhost:{host}\nx-amz-date:{amz}\n\nhost;x-amz-date\n{payload}");
    let scope = format!("{day}/us-east-1/lambda/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in ["us-east-1", "lambda", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    let sig = hex(&hmac(&k, to_sign.as_bytes()));
    vec![("x-amz-date".into(), amz), ("authorization".into(), format!("AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}"))]
}

/// The figures of this section (namespace tier, Python).
pub fn measure(bin: &Path, n: usize) -> Result<Value> {
    let s = Server::start(bin, "namespace")?;
    let token = s.register("lambda")?;
    let key = s.call("POST", "/api/keys", Some(&token), &json!({"name": "bench", "type": "aws"}))?;
    let akid = key["access_key_id"].as_str().context("access_key_id")?.to_string();
    let secret = key["secret_access_key"].as_str().context("secret_access_key")?.to_string();
    // A bearer API key too: the native route's other credential, which (as SigV4) costs a key
    // lookup in the store per request, where the access token costs an HMAC only.
    let api_key = s.call("POST", "/api/keys", Some(&token), &json!({"name": "bench-bearer"}))?["key"].as_str().context("key")?.to_string();
    s.call("POST", "/api/functions", Some(&token), &json!({"name": "lam", "runtime": "python3.11", "code": "def handler(event, context):\n    return {'i': event['i']}\n"}))?;
    let host = s.base.strip_prefix("http://").context("http base")?.to_string();
    let path = "/2015-03-31/functions/lam/invocations";
    let event = |i: usize| json!({"i": i}).to_string();
    let lambda_call = |i: usize| -> Result<()> {
        let body = event(i);
        let mut req = s.agent.post(&format!("{}{path}", s.base)).timeout(Duration::from_secs(60));
        for (k, v) in sign(&host, path, body.as_bytes(), &akid, &secret) {
            req = req.set(&k, &v);
        }
        match req.send_string(&body) {
            Ok(r) => {
                let v: Value = r.into_json()?;
                if v["i"] != json!(i) {
                    bail!("Invoke answered {v}");
                }
                Ok(())
            }
            Err(e) => bail!("Invoke: {e}"),
        }
    };
    let native_call = |i: usize, credential: &str| -> Result<()> {
        let e = s.call("POST", "/api/functions/lam/execute", Some(credential), &json!({"i": i}))?;
        if e["output"]["i"] != json!(i) {
            bail!("execute answered {e}");
        }
        Ok(())
    };
    for i in 0..20 {
        native_call(i, &token)?;
        native_call(i, &api_key)?;
        lambda_call(i)?;
    }
    let (mut native, mut native_key, mut lambda) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let mut err = None;
        native.push(time_ms(|| err = native_call(i, &token).err()));
        native_key.push(time_ms(|| err = err.take().or(native_call(i, &api_key).err())));
        lambda.push(time_ms(|| err = err.take().or(lambda_call(i).err())));
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(json!({
        "native_execute_warm": summary(&native),
        "native_execute_warm_api_key": summary(&native_key),
        "lambda_invoke_warm": summary(&lambda),
        "lambda_vs_native_p50": round(pct(&lambda, 50.0) / pct(&native, 50.0)),
        "lambda_vs_native_api_key_p50": round(pct(&lambda, 50.0) / pct(&native_key, 50.0)),
        "target": "<= 1.2 (vs the access token)",
    }))
}
