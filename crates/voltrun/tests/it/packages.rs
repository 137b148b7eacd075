//! Packages (SPEC §10, issue 15): `files` and `zip` functions with `module.function` handlers,
//! served from `/var/task` (cwd) in every tier, by new instances and spares; the package
//! download; and hostile archives refused with the entry named, nothing left on disk.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::harness::{assert_error, Client, Server};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A zip of `(name, unix mode, content)` entries, deflated.
fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, data) in entries {
        let o = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(*mode);
        if mode & 0o170000 == 0o120000 {
            w.add_symlink(*name, std::str::from_utf8(data).unwrap(), o).unwrap();
        } else {
            w.start_file(*name, o).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` by `to` (same length): names the writer refuses.
fn patch(mut zip: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let hits: Vec<usize> = zip.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i).collect();
    assert!(!hits.is_empty());
    for i in hits {
        zip[i..i + from.len()].copy_from_slice(to);
    }
    zip
}

/// Sets the unix file type and mode of every central directory entry.
fn patch_mode(mut zip: Vec<u8>, mode: u32) -> Vec<u8> {
    let at: Vec<usize> = zip.windows(4).enumerate().filter(|(_, w)| *w == [0x50, 0x4b, 1, 2]).map(|(i, _)| i).collect();
    for i in at {
        zip[i + 5] = 3;
        zip[i + 38..i + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    }
    zip
}

/// A "better zip bomb": one compressed entry that `copies` central directory records (with
/// names `f00.bin`, `f01.bin`, …) all point at, so the archive stays small.
fn overlapping_bomb(entry: &[u8], copies: usize) -> Vec<u8> {
    let zip = zip_of(&[("f00.bin", 0o644, entry)]);
    let cd = zip.windows(4).position(|w| w == [0x50, 0x4b, 1, 2]).unwrap();
    let eocd = zip.windows(4).rposition(|w| w == [0x50, 0x4b, 5, 6]).unwrap();
    let record = &zip[cd..eocd];
    let mut out = zip[..cd].to_vec();
    for i in 0..copies {
        out.extend_from_slice(&patch(record.to_vec(), b"f00.bin", format!("f{i:02}.bin").as_bytes()));
    }
    let cd_size = (out.len() - cd) as u32;
    let mut end = zip[eocd..].to_vec();
    end[8..10].copy_from_slice(&(copies as u16).to_le_bytes());
    end[10..12].copy_from_slice(&(copies as u16).to_le_bytes());
    end[12..16].copy_from_slice(&cd_size.to_le_bytes());
    end[16..20].copy_from_slice(&(cd as u32).to_le_bytes());
    out.extend_from_slice(&end);
    out
}

fn files(entries: &[(&str, &str)]) -> Value {
    Value::Object(entries.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect())
}

fn create(c: &Client, body: Value) -> (u16, Value) {
    c.post("/api/functions", &body)
}

/// The run's output, asserting it succeeded.
fn output(c: &Client, name: &str, event: &Value) -> Value {
    let e = c.invoke(name, event);
    assert_eq!(e["status"], "success", "{e}");
    e["output"].clone()
}

const PY_MAIN: &str = "import os\nfrom pkg.sub.words import first_word\n\ndef handler(event, context):\n    with open('data/words.txt') as f:\n        text = f.read()\n    return {'first': first_word(text), 'cwd': os.getcwd(), 'root': os.environ['LAMBDA_TASK_ROOT'], 'event': event}\n";

#[test]
fn a_python_files_package_with_a_sub_package_reads_its_data_file_by_relative_path() {
    let s = Server::start();
    let c = s.user();
    let pkg = files(&[
        ("main.py", PY_MAIN),
        ("pkg/__init__.py", ""),
        ("pkg/sub/__init__.py", ""),
        ("pkg/sub/words.py", "def first_word(text):\n    return text.split()[0]\n"),
        ("data/words.txt", "volt run\n"),
    ]);
    let (status, f) = create(&c, json!({"name": "py-files", "runtime": "python", "files": pkg}));
    assert_eq!(status, 201, "{f}");
    assert_eq!((f["handler"].as_str(), f["code"].as_str()), (Some("main.handler"), Some("")), "{f}");
    assert_eq!(f["package"]["kind"], "files");
    assert_eq!(f["package"]["file_count"], 5);
    assert_eq!(f["package"]["unpacked_size"], pkg.as_object().unwrap().values().map(|v| v.as_str().unwrap().len()).sum::<usize>());
    assert_eq!(f["package"]["dependencies"], Value::Null);
    let out = output(&c, "py-files", &json!({"n": 1}));
    assert_eq!(out["first"], "volt");
    assert_eq!(out["cwd"], out["root"], "the package root is the working directory");
    if crate::harness::sandbox() != "process" {
        assert_eq!(out["cwd"], "/var/task");
    }
    // A second run is warm and the same.
    assert_eq!(output(&c, "py-files", &json!({"n": 2}))["event"]["n"], 2);
    if crate::harness::sandbox() != "process" {
        // The package, the dependency tree and the layers are read-only inside.
        let probe = "import os\ndef handler(e, c):\n    out = []\n    for p in ['/var/task/x', '/var/task/data/words.txt', '/var/deps/x', '/opt/x']:\n        try:\n            open(p, 'a').close()\n            out.append('written')\n        except OSError as err:\n            out.append(type(err).__name__)\n    return out\n";
        let (status, ro) = create(&c, json!({"name": "py-ro", "runtime": "python", "files": files(&[("main.py", probe), ("data/words.txt", "x")])}));
        assert_eq!(status, 201, "{ro}");
        let out = output(&c, "py-ro", &json!({}));
        assert!(out.as_array().unwrap().iter().all(|r| r != "written"), "{out}");
    }
    // Lists carry the package info, never code or files.
    let (_, list) = c.get("/api/functions");
    let item = list["items"].as_array().unwrap().iter().find(|i| i["name"] == "py-files").unwrap();
    assert_eq!(item["package"]["sha256"], f["package"]["sha256"]);
    assert_eq!(item["code_bytes"], f["package"]["size"]);
    assert!(item.get("files").is_none() && item.get("code").is_none(), "{item}");
    // An update with a new package replaces it (a new version); the same one again is no change.
    let v2 = files(&[("main.py", "def handler(e, c):\n    return 'v2'\n")]);
    let (status, u) = c.put("/api/functions/py-files", &json!({"files": v2}));
    assert_eq!((status, &u["version"]), (200, &json!(2)), "{u}");
    assert_eq!(output(&c, "py-files", &json!({})), "v2");
    let (_, same) = c.put("/api/functions/py-files", &json!({"files": v2}));
    assert_eq!(same["version"], 2, "{same}");
    // Back to a code function: the handler returns to `handler`.
    let (status, back) = c.put("/api/functions/py-files", &json!({"code": "def handler(e, c):\n    return 'code'\n"}));
    assert_eq!(status, 200, "{back}");
    assert_eq!((&back["handler"], &back["package"]), (&json!("handler"), &Value::Null));
    assert_eq!(output(&c, "py-files", &json!({})), "code");
}

#[test]
fn a_node_zip_package_in_commonjs_and_esm() {
    let s = Server::start();
    let c = s.user();
    let cjs = zip_of(&[
        ("index.js", 0o644, b"const { twice } = require('./lib/math');\nconst fs = require('fs');\nexports.handler = async (e) => ({ n: twice(e.n), data: fs.readFileSync('data.json', 'utf8').trim(), cwd: process.cwd() });\n"),
        ("lib/math.js", 0o644, b"exports.twice = (n) => n * 2;\n"),
        ("data.json", 0o644, b"{\"ok\":true}\n"),
    ]);
    let (status, f) = create(&c, json!({"name": "node-cjs", "runtime": "node", "zip": b64(&cjs)}));
    assert_eq!(status, 201, "{f}");
    assert_eq!((f["handler"].as_str(), f["package"]["kind"].as_str(), f["package"]["size"].as_u64()), (Some("index.handler"), Some("zip"), Some(cjs.len() as u64)));
    let out = output(&c, "node-cjs", &json!({"n": 21}));
    assert_eq!((&out["n"], &out["data"]), (&json!(42), &json!("{\"ok\":true}")), "{out}");
    let esm = zip_of(&[
        ("index.mjs", 0o644, b"import { greet } from './src/greet.mjs';\nexport const handler = async (e) => greet(e.name);\n"),
        ("src/greet.mjs", 0o644, b"export const greet = (n) => `hello ${n}`;\n"),
    ]);
    let (status, f) = create(&c, json!({"name": "node-esm", "runtime": "node", "zip": b64(&esm)}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(output(&c, "node-esm", &json!({"name": "volt"})), "hello volt");
    // A module in a directory, and package.json's "type": "module" for a .js file.
    let nested = zip_of(&[("package.json", 0o644, b"{\"type\":\"module\"}"), ("src/app.js", 0o644, b"export const main = async () => import.meta.url.endsWith('/src/app.js');\n")]);
    let (status, f) = create(&c, json!({"name": "node-nested", "runtime": "node", "zip": b64(&nested), "handler": "src/app.main"}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(output(&c, "node-nested", &json!({})), true);
}

#[test]
fn handler_defaults_and_bad_handlers() {
    let s = Server::start();
    let c = s.user();
    // Code functions keep `handler` as the export name.
    let f = c.create_function("code-fn", "python", "def handler(e, c):\n    return 1\n", json!({}));
    assert_eq!(f["handler"], "handler");
    assert_eq!(f["package"], Value::Null);
    let main = files(&[("main.py", "def handler(e, c):\n    return 1\n"), ("app.py", "def go(e, c):\n    return 'go'\n")]);
    for (handler, expect) in [("handler", "module.function"), ("nope.handler", "nope.py"), ("main.1x", "identifier"), ("my-mod.handler", "dotted")] {
        let (status, body) = create(&c, json!({"name": "bad-h", "runtime": "python", "files": main, "handler": handler}));
        assert_eq!(assert_error(status, &body, 400), "validation_failed");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("handler: ") && msg.contains(expect), "{handler}: {msg}");
    }
    // A module that exists but lacks the function fails at its first run, as on Lambda.
    let (status, f) = create(&c, json!({"name": "no-fn", "runtime": "python", "files": main, "handler": "app.absent"}));
    assert_eq!(status, 201, "{f}");
    let e = c.invoke("no-fn", &json!({}));
    assert_eq!(e["status"], "failed");
    assert!(e["error"]["message"].as_str().unwrap().contains("Handler 'absent' missing on module 'app'"), "{e}");
    let (status, f) = create(&c, json!({"name": "go-fn", "runtime": "python", "files": main, "handler": "app.go"}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(output(&c, "go-fn", &json!({})), "go");
    let (status, body) = create(&c, json!({"name": "no-index", "runtime": "node", "files": files(&[("main.js", "exports.handler = () => 1;")])}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("index.js or index.mjs or index.cjs"), "{body}");
    // Exactly one source.
    let (status, body) = create(&c, json!({"name": "two", "runtime": "node", "code": "x", "files": files(&[("index.js", "")])}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    let (status, body) = create(&c, json!({"name": "none", "runtime": "node"}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
}

/// Every class of hostile archive is refused with the problem named (400, 413 when too
/// large), fast, and nothing is left in the data directory's trees or their scratch area.
#[test]
fn hostile_archives_are_refused_naming_the_problem() {
    let s = Server::start();
    let c = s.user();
    let ok: &[u8] = b"exports.handler = async () => 1;\n";
    let zero8 = vec![0u8; 8 << 20];
    let mut noise = vec![0u8; 20 << 20];
    let mut x: u32 = 1;
    for (i, b) in noise.iter_mut().enumerate() {
        // Mostly runs of one byte with some noise: compresses about 100:1 (under the ratio limit).
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = if i % 64 == 0 { (x >> 24) as u8 } else { b'a' };
    }
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("dot-dot", patch(zip_of(&[("index.js", 0o644, ok), ("aa/evil.js", 0o644, b"x")]), b"aa/evil.js", b"../evil.js"), 400, "\"../evil.js\" escapes"),
        ("absolute", patch(zip_of(&[("index.js", 0o644, ok), ("xetc/passwd", 0o644, b"x")]), b"xetc/passwd", b"/etc/passwd"), 400, "\"/etc/passwd\" is an absolute path"),
        ("symlink", zip_of(&[("index.js", 0o644, ok), ("shadow", 0o120777, b"/etc/shadow")]), 400, "\"shadow\" is a symbolic link"),
        ("device", patch_mode(zip_of(&[("index.js", 0o644, ok)]), 0o020666), 400, "\"index.js\" is a device file"),
        ("fifo", patch_mode(zip_of(&[("index.js", 0o644, ok)]), 0o010644), 400, "\"index.js\" is a FIFO"),
        ("duplicate", patch(zip_of(&[("index.js", 0o644, ok), ("other.js", 0o644, b"x")]), b"other.js", b"index.js"), 400, "\"index.js\" is a duplicate"),
        ("not-utf8", patch(zip_of(&[("index.js", 0o644, ok), ("n-x.js", 0o644, b"x")]), b"n-x.js", b"n-\xff.js"), 400, "not UTF-8"),
        ("ratio-bomb", zip_of(&[("index.js", 0o644, ok), ("bomb.bin", 0o644, &zero8)]), 400, "\"bomb.bin\" unpacks to more than 200 times"),
        ("overlap-bomb", overlapping_bomb(&noise, 14), 413, "the unpacked package"),
        ("not-a-zip", b"this is plain text, not an archive".to_vec(), 400, "not a zip"),
    ];
    for (what, zip, want, expect) in cases {
        let t0 = Instant::now();
        let (status, body) = create(&c, json!({"name": format!("h-{what}"), "runtime": "node", "zip": b64(&zip)}));
        let code = assert_error(status, &body, want);
        assert_eq!(code, if want == 413 { "payload_too_large" } else { "validation_failed" }, "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("zip: ") && msg.contains(expect), "{what}: {msg}");
        eprintln!("hostile {what}: {status} in {:?}", t0.elapsed());
    }
    let (status, body) = create(&c, json!({"name": "h-b64", "runtime": "node", "zip": "%%% not base64 %%%"}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("base64"), "{body}");
    let many: BTreeMap<String, String> = (0..1001).map(|i| (format!("f{i}.js"), String::new())).collect();
    let (status, body) = create(&c, json!({"name": "h-many", "runtime": "node", "files": many}));
    assert_eq!(assert_error(status, &body, 413), "payload_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("more than 1000 files"), "{body}");
    let (status, body) = create(&c, json!({"name": "h-files", "runtime": "node", "files": files(&[("index.js", "x"), ("../up.js", "x")])}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"../up.js\" escapes"), "{body}");
    // None of it was kept: no function, no tree, nothing in the scratch area.
    let (_, list) = c.get("/api/functions");
    assert_eq!(list["items"], json!([]));
    let trees = s.data_dir.join("trees");
    let left: Vec<_> = std::fs::read_dir(&trees).map(|d| d.map(|e| e.unwrap().file_name()).filter(|n| n != ".tmp").collect()).unwrap_or_default();
    assert!(left.is_empty(), "trees left: {left:?}");
    let scratch: Vec<_> = std::fs::read_dir(trees.join(".tmp")).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(scratch.is_empty(), "scratch left: {scratch:?}");
}

#[test]
fn the_package_downloads_as_the_stored_zip() {
    let s = Server::start();
    let c = s.user();
    let zip = zip_of(&[("main.py", 0o644, b"def handler(e, c):\n    return 1\n"), ("requirements.txt", 0o644, b"# nothing to install\n")]);
    let (status, f) = create(&c, json!({"name": "dl-zip", "runtime": "python", "zip": b64(&zip)}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(f["package"]["dependencies"], Value::Null, "a requirements file without requirements needs no build");
    let r = c.raw("GET", "/api/functions/dl-zip/package", None, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    assert_eq!(r.body, zip, "a zip package comes back byte for byte");
    assert_eq!(voltrun_package::sha256_hex(&r.body), f["package"]["sha256"].as_str().unwrap());
    // A files package comes back as its canonical zip, which unpacks to the files.
    let (status, f) = create(&c, json!({"name": "dl-files", "runtime": "python", "files": files(&[("main.py", "def handler(e, c):\n    return 2\n"), ("a/b.txt", "bee")])}));
    assert_eq!(status, 201, "{f}");
    let r = c.raw("GET", &format!("/api/functions/{}/package", f["id"].as_str().unwrap()), None, &[]);
    assert_eq!(r.status, 200);
    let mut archive = zip::ZipArchive::new(Cursor::new(r.body)).unwrap();
    let mut text = String::new();
    archive.by_name("a/b.txt").unwrap().read_to_string(&mut text).unwrap();
    assert_eq!((archive.len(), text.as_str()), (2, "bee"));
    // Code functions have none; nor does another user see mine.
    c.create_function("dl-code", "python", "def handler(e, c):\n    return 1\n", json!({}));
    let r = c.raw("GET", "/api/functions/dl-code/package", None, &[]);
    assert_eq!(r.status, 404);
    let r = s.user().raw("GET", "/api/functions/dl-zip/package", None, &[]);
    assert_eq!(r.status, 404);
}

/// The spare gauge, from /metrics.
fn spares_ready(c: &Client) -> i64 {
    let m = String::from_utf8(c.raw("GET", "/metrics", None, &[]).body).unwrap();
    m.lines().find(|l| l.starts_with("voltrun_spare_instances")).and_then(|l| l.split_whitespace().last()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A spare is started before its function is known: its package is linked into the
/// directories it already binds. The process's initial environment tells a spare (the
/// function's variables arrive with the init frame) from a new instance (they are in it).
#[test]
fn a_spare_serves_a_package_function() {
    let s = Server::start_with(&crate::harness::temp_dir("srv"), &["--spares", "1"], true);
    let c = s.user();
    let until = Instant::now() + Duration::from_secs(60);
    while spares_ready(&c) < 2 {
        assert!(Instant::now() < until, "no spares after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let probe = "def spawned_for_me():\n    with open('/proc/self/environ', 'rb') as f:\n        return b'AWS_LAMBDA_FUNCTION_NAME=' in f.read()\n";
    let pkg = files(&[("app/__init__.py", ""), ("app/main.py", "from app.probe import spawned_for_me\nimport os\ndef handler(e, c):\n    return [open('VERSION').read().strip(), spawned_for_me(), os.getcwd() == os.environ['LAMBDA_TASK_ROOT']]\n"), ("app/probe.py", probe), ("VERSION", "7\n")]);
    let (status, f) = create(&c, json!({"name": "spare-pkg", "runtime": "python", "files": pkg, "handler": "app.main.handler"}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(output(&c, "spare-pkg", &json!({})), json!(["7", false, true]), "served by a spare");
    let nodepkg = zip_of(&[("index.mjs", 0o644, b"import { readFileSync } from 'fs';\nexport const handler = async () => [readFileSync('v.txt', 'utf8'), readFileSync('/proc/self/environ', 'utf8').includes('AWS_LAMBDA_FUNCTION_NAME=')];\n"), ("v.txt", 0o644, b"n1")]);
    let (status, f) = create(&c, json!({"name": "spare-node", "runtime": "node", "zip": b64(&nodepkg)}));
    assert_eq!(status, 201, "{f}");
    assert_eq!(output(&c, "spare-node", &json!({})), json!(["n1", false]), "served by a spare");
    // And a new instance (no spare left for a second concurrent cold start is not needed:
    // with spares off, the same package runs in a new instance).
    let s2 = Server::start_with(&crate::harness::temp_dir("srv"), &["--spares", "0"], true);
    let c2 = s2.user();
    let (status, _) = create(&c2, json!({"name": "new-pkg", "runtime": "python", "files": pkg, "handler": "app.main.handler"}));
    assert_eq!(status, 201);
    assert_eq!(output(&c2, "new-pkg", &json!({})), json!(["7", true, true]), "served by a new instance");
}

/// Package bytes count against the account's code quota.
#[test]
fn package_bytes_count_against_the_code_quota() {
    let s = Server::start_with(&crate::harness::temp_dir("srv"), &["--quota-code-bytes", "15000"], true);
    let c = s.user();
    let mut noise = String::new();
    let mut x: u32 = 7;
    for _ in 0..30_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        noise.push(char::from(b'a' + (x >> 27) as u8 % 26));
    }
    let (status, body) = create(&c, json!({"name": "big", "runtime": "python", "files": files(&[("main.py", "def handler(e, c):\n    return 1\n"), ("noise.txt", &noise)])}));
    assert_eq!(assert_error(status, &body, 409), "quota_exceeded", "{body}");
    let (status, body) = create(&c, json!({"name": "small", "runtime": "python", "files": files(&[("main.py", "def handler(e, c):\n    return 1\n")])}));
    assert_eq!(status, 201, "{body}");
}
