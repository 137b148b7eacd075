//! Layers (SPEC §10) through the public API: numbered immutable versions, the list of latest
//! versions, one version, delete refused while a function mounts it, privacy between users,
//! the limits, hostile zips refused naming the entry, and layers at work in every tier: a
//! Python function importing from a layer's `python/`, a Node function requiring from
//! `nodejs/node_modules/`, and a later layer winning over an earlier one.

use std::io::Write;

use serde_json::{json, Value};

use crate::harness::*;

/// A zip of `(name, text)` entries (deflated, in order).
pub fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Publishes a layer version and returns it (asserting 201).
pub fn publish(c: &Client, name: &str, entries: &[(&str, &str)]) -> Value {
    let (status, l) = c.post("/api/layers", &json!({"name": name, "zip": b64(&zip_of(entries))}));
    assert_eq!(status, 201, "{l}");
    l
}

#[test]
fn versions_are_numbered_immutable_and_listed() {
    let s = Server::start();
    let c = s.user();
    let (status, l1) = c.post("/api/layers", &json!({"name": "deps", "zip": b64(&zip_of(&[("python/a.py", "A = 1\n")])), "description": "first"}));
    assert_eq!(status, 201, "{l1}");
    assert_eq!((l1["name"].as_str(), l1["version"].as_i64(), l1["description"].as_str()), (Some("deps"), Some(1), Some("first")), "{l1}");
    assert_eq!(l1["sha256"].as_str().unwrap().len(), 64, "{l1}");
    assert_eq!((l1["file_count"].as_u64(), l1["unpacked_size"].as_u64()), (Some(1), Some(6)), "{l1}");
    assert!(l1["size"].as_u64().unwrap() > 0 && l1["created_at"].is_string(), "{l1}");
    let l2 = publish(&c, "deps", &[("python/a.py", "A = 2\n")]);
    assert_eq!(l2["version"], 2, "each upload of a name is its next version");
    assert_ne!(l1["sha256"], l2["sha256"]);
    publish(&c, "other-layer_x", &[("x.txt", "x")]);

    let (status, list) = c.get("/api/layers");
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let shown: Vec<(String, i64)> = items.iter().map(|l| (l["name"].as_str().unwrap().to_string(), l["version"].as_i64().unwrap())).collect();
    assert_eq!(shown, [("deps".to_string(), 2), ("other-layer_x".to_string(), 1)], "the latest version of each, by name");
    // Pages: one item each, the cursor carries a name with `-`.
    let (_, p1) = c.get("/api/layers?limit=1");
    assert_eq!(p1["items"][0]["name"], "deps");
    let (status, p2) = c.get(&format!("/api/layers?limit=1&cursor={}", p1["next_cursor"].as_str().unwrap()));
    assert_eq!(status, 200, "{p2}");
    assert_eq!(p2["items"][0]["name"], "other-layer_x", "{p2}");

    let (status, v) = c.get("/api/layers/deps/versions");
    assert_eq!(status, 200, "{v}");
    let versions: Vec<i64> = v["items"].as_array().unwrap().iter().map(|l| l["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);
    let (status, one) = c.get("/api/layers/deps/versions/1");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, l1, "a version is served as it was created");
    for missing in ["/api/layers/deps/versions/3", "/api/layers/deps/versions/0", "/api/layers/deps/versions/x", "/api/layers/nope/versions/1", "/api/layers/nope/versions"] {
        let (status, body) = c.get(missing);
        assert_error(status, &body, 404);
    }
}

#[test]
fn delete_is_refused_while_a_function_mounts_the_version() {
    let s = Server::start();
    let c = s.user();
    publish(&c, "deps", &[("python/a.py", "A = 1\n")]);
    publish(&c, "deps", &[("python/a.py", "A = 2\n")]);
    let f = c.create_function("uses-deps", "python3.11", "def handler(e, c):\n    return 1\n", json!({"layers": ["deps:1"]}));
    assert_eq!(f["layers"], json!(["deps:1"]), "{f}");
    let (_, got) = c.get("/api/functions/uses-deps");
    assert_eq!(got["layers"], json!(["deps:1"]));
    let (_, list) = c.get("/api/functions");
    assert_eq!(list["items"][0]["layers"], json!(["deps:1"]), "lists carry the layers too");

    let (status, body) = c.delete("/api/layers/deps/versions/1");
    assert_eq!(assert_error(status, &body, 409), "layer_in_use");
    assert!(body["error"]["message"].as_str().unwrap().contains("uses-deps"), "names the function: {body}");
    // Another version of the same name is not in use.
    let (status, body) = c.delete("/api/layers/deps/versions/2");
    assert_eq!(status, 204, "{body}");
    // A deleted number is never given again.
    assert_eq!(publish(&c, "deps", &[("python/a.py", "A = 3\n")])["version"], 3);

    let (status, f) = c.put("/api/functions/uses-deps", &json!({"layers": []}));
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["layers"], json!([]));
    let (status, body) = c.delete("/api/layers/deps/versions/1");
    assert_eq!(status, 204, "{body}");
    let (status, body) = c.get("/api/layers/deps/versions/1");
    assert_error(status, &body, 404);
    let (status, body) = c.delete("/api/layers/deps/versions/1");
    assert_error(status, &body, 404);
    // A function deleted no longer holds its layers.
    c.put("/api/functions/uses-deps", &json!({"layers": ["deps:3"]}));
    let (status, _) = c.delete("/api/functions/uses-deps");
    assert_eq!(status, 204);
    let (status, body) = c.delete("/api/layers/deps/versions/3");
    assert_eq!(status, 204, "{body}");
}

#[test]
fn layers_are_private_to_their_owner() {
    let s = Server::start();
    let alice = s.user();
    let bob = s.user();
    publish(&alice, "secret-deps", &[("python/s.py", "S = 1\n")]);
    for path in ["/api/layers/secret-deps/versions/1", "/api/layers/secret-deps/versions"] {
        let (status, body) = bob.get(path);
        assert_error(status, &body, 404);
    }
    let (status, body) = bob.delete("/api/layers/secret-deps/versions/1");
    assert_error(status, &body, 404);
    let (_, list) = bob.get("/api/layers");
    assert_eq!(list["items"], json!([]), "{list}");
    // Naming another user's layer is a 400 that names it, on create and on update.
    let (status, body) = bob.post("/api/functions", &json!({"name": "steal", "runtime": "python3.11", "code": "def handler(e, c):\n    return 1\n", "layers": ["secret-deps:1"]}));
    assert_eq!(assert_error(status, &body, 400), "validation_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("secret-deps:1"), "{body}");
    bob.create_function("steal", "python3.11", "def handler(e, c):\n    return 1\n", json!({}));
    let (status, body) = bob.put("/api/functions/steal", &json!({"layers": ["secret-deps:1"]}));
    assert_error(status, &body, 400);
    // Bob's own layer of the same name is his, numbered from 1.
    assert_eq!(publish(&bob, "secret-deps", &[("python/mine.py", "M = 1\n")])["version"], 1);
    let (_, a) = alice.get("/api/layers/secret-deps/versions/1");
    assert!(a["sha256"] != bob.get("/api/layers/secret-deps/versions/1").1["sha256"]);
}

#[test]
fn layer_limits_and_bad_input() {
    let s = Server::start_with(&temp_dir("layers-quota"), &["--quota-code-bytes", "3000"], true);
    let c = s.user();
    let zip = b64(&zip_of(&[("python/a.py", "A = 1\n")]));
    for (body, what) in [
        (json!({"name": "a.b", "zip": zip}), "name"),
        (json!({"name": "", "zip": zip}), "name"),
        (json!({"name": "x".repeat(65), "zip": zip}), "name"),
        (json!({"name": "ok", "zip": zip, "description": "d".repeat(257)}), "description"),
        (json!({"name": "ok", "zip": zip, "extra": 1}), "extra"),
        (json!({"name": "ok"}), "zip"),
    ] {
        let (status, b) = c.post("/api/layers", &body);
        assert_eq!(assert_error(status, &b, 400), "validation_failed", "{what}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(what), "{what}: {b}");
    }
    for i in 1..=6 {
        publish(&c, &format!("l{i}"), &[("python/a.py", "A = 1\n")]);
    }
    let code = "def handler(e, c):\n    return 1\n";
    for (layers, expect) in [
        (json!(["l1:1", "l2:1", "l3:1", "l4:1", "l5:1", "l6:1"]), "at most 5"),
        (json!(["l1:1", "l1:1"]), "twice"),
        (json!(["l1"]), "not name:version"),
        (json!(["l1:0"]), "not name:version"),
        (json!(["l1:2"]), "l1:2 does not exist"),
        (json!("l1:1"), "must be a list"),
    ] {
        let (status, b) = c.post("/api/functions", &json!({"name": "f", "runtime": "python3.11", "code": code, "layers": layers}));
        assert_eq!(assert_error(status, &b, 400), "validation_failed", "{layers}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(expect), "{layers}: {b} lacks {expect}");
    }
    let f = c.create_function("f", "python3.11", code, json!({"layers": ["l1:1", "l2:1", "l3:1", "l4:1", "l5:1"]}));
    assert_eq!(f["layers"].as_array().unwrap().len(), 5);
    // Layers count against the code quota (3000 bytes here), with the functions' code.
    // Letters from a linear congruential generator: a zip cannot shrink them much.
    let mut x: u64 = 42;
    let big: String = (0..6000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect();
    let (status, b) = c.post("/api/layers", &json!({"name": "big", "zip": b64(&zip_of(&[("python/big.py", &big)]))}));
    assert_eq!(assert_error(status, &b, 409), "quota_exceeded", "{b}");
    let (status, b) = c.get("/api/layers/big/versions");
    assert_error(status, &b, 404);
    let (status, b) = c.post("/api/functions", &json!({"name": "g", "runtime": "python3.11", "code": format!("# {}\n{code}", "x".repeat(2500))}));
    assert_eq!(assert_error(status, &b, 409), "quota_exceeded", "the layers' bytes count for functions' code too: {b}");
}

/// A zip whose second entry's name is replaced, byte for byte, in both its local header and
/// the central directory (the zip writer refuses such names itself).
fn renamed_zip(first: &str, second_placeholder: &str, second: &str) -> Vec<u8> {
    assert_eq!(second_placeholder.len(), second.len());
    let raw = zip_of(&[(first, "one\n"), (second_placeholder, "two\n")]);
    let (from, to) = (second_placeholder.as_bytes(), second.as_bytes());
    let mut out = raw.clone();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert_eq!(n, 2, "the name is in the local header and the central directory");
    out
}

#[test]
fn hostile_layer_zips_are_refused_naming_the_problem() {
    let s = Server::start();
    let c = s.user();
    let link = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.add_symlink("python/evil.py", "/etc/shadow", zip::write::SimpleFileOptions::default()).unwrap();
        w.finish().unwrap().into_inner()
    };
    let bomb = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("python/zeros.bin", zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)).unwrap();
        w.write_all(&vec![0u8; 8 << 20]).unwrap();
        w.finish().unwrap().into_inner()
    };
    let many = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for i in 0..20_001 {
            w.start_file(format!("f/{i}"), zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored)).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (b64(&renamed_zip("python/a.py", "abcdefghij", "../../evil")), 400, "../../evil"),
        (b64(&renamed_zip("python/a.py", "python/X.py", "/etc/passwd")), 400, "/etc/passwd"),
        (b64(&renamed_zip("python/a.py", "python/b.py", "python/a.py")), 400, "python/a.py"),
        (b64(&link), 400, "python/evil.py"),
        (b64(&bomb), 400, "python/zeros.bin"),
        (b64(&many), 413, "20000 files"),
        ("this is not base64!".into(), 400, "base64"),
        (b64(b"PK but not really a zip archive"), 400, "not a zip"),
    ];
    for (zip, status_want, names) in &cases {
        let t = std::time::Instant::now();
        let (status, b) = c.post("/api/layers", &json!({"name": "evil", "zip": zip}));
        let code = assert_error(status, &b, *status_want);
        assert!(code == "validation_failed" || code == "payload_too_large", "{b}");
        assert!(b["error"]["message"].as_str().unwrap().starts_with("zip: "), "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains(names), "{names}: {b}");
        // Refused archives are not kept, and no version number is spent on them.
        let (status, _) = c.get("/api/layers/evil/versions");
        assert_eq!(status, 404);
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "refused fast");
    }
    assert_eq!(publish(&c, "evil", &[("python/ok.py", "OK = 1\n")])["version"], 1);
    // Nothing of a refused zip was written under the data dir.
    let trees = s.data_dir.join("trees");
    if trees.exists() {
        for e in std::fs::read_dir(&trees).unwrap() {
            let e = e.unwrap();
            assert!(!e.path().join("python/evil.py").exists() && !e.path().join("python/zeros.bin").exists(), "{}", e.path().display());
        }
    }
}

fn output_of(c: &Client, name: &str) -> Value {
    let e = c.invoke(name, &json!({}));
    assert_eq!(e["status"], "success", "{e}");
    e["output"].clone()
}

#[test]
fn python_imports_a_module_from_a_layer() {
    let s = Server::start();
    let c = s.user();
    publish(
        &c,
        "pylib",
        &[("python/greet/__init__.py", "def hello(n):\n    return 'hello ' + n\n"), ("python/greet/data.txt", "from the layer\n"), ("README", "not on the path\n")],
    );
    // The instance's view of /opt: /opt in the isolated tiers, the instance's own directory
    // on the host in the process tier (VOLTRUN_OPT_ROOT says which).
    let code = "import os, sys, greet\n\
                def handler(event, context):\n    \
                    opt = os.environ.get('VOLTRUN_OPT_ROOT', '/opt')\n    \
                    here = os.path.dirname(greet.__file__)\n    \
                    data = open(os.path.join(here, 'data.txt')).read().strip()\n    \
                    writable = os.access(os.path.join(opt, 'python'), os.W_OK)\n    \
                    return {'msg': greet.hello('layer'), 'file': os.path.relpath(greet.__file__, opt), 'opt': opt, 'data': data, 'writable': writable, 'readme': os.path.exists(os.path.join(opt, 'README'))}\n";
    c.create_function("py-layer", "python3.11", code, json!({"layers": ["pylib:1"]}));
    let out = output_of(&c, "py-layer");
    assert_eq!(out["msg"], "hello layer", "{out}");
    assert_eq!(out["file"], "python/greet/__init__.py", "{out}");
    assert_eq!((out["data"].as_str(), out["readme"].as_bool()), (Some("from the layer"), Some(true)), "{out}");
    if sandbox() != "process" {
        // The process tier (development only) enforces no read-only mounts.
        assert_eq!((out["opt"].as_str(), out["writable"].as_bool()), (Some("/opt"), Some(false)), "layers are read-only under /opt: {out}");
    }
}

#[test]
fn node_requires_a_module_from_a_layer() {
    let s = Server::start();
    let c = s.user();
    publish(
        &c,
        "nodelib",
        &[
            ("nodejs/node_modules/greet/package.json", "{\"name\": \"greet\", \"main\": \"lib.js\"}"),
            ("nodejs/node_modules/greet/lib.js", "exports.hello = (n) => 'hello ' + n;\n"),
        ],
    );
    let code = "const path = require('path');\nconst greet = require('greet');\nconst opt = process.env.VOLTRUN_OPT_ROOT || '/opt';\nexports.handler = async () => ({ msg: greet.hello('node'), path: path.relative(opt, require.resolve('greet')), opt });\n";
    c.create_function("node-layer", "nodejs20", code, json!({"layers": ["nodelib:1"]}));
    let out = output_of(&c, "node-layer");
    assert_eq!(out["msg"], "hello node", "{out}");
    assert_eq!(out["path"], "nodejs/node_modules/greet/lib.js", "{out}");
    if sandbox() != "process" {
        assert_eq!(out["opt"], "/opt", "{out}");
    }
}

#[test]
fn a_later_layer_wins_over_an_earlier_one() {
    let s = Server::start();
    let c = s.user();
    publish(&c, "first", &[("python/which.py", "WHO = 'first'\n"), ("python/only_first.py", "X = 1\n")]);
    publish(&c, "second", &[("python/which.py", "WHO = 'second'\n")]);
    let code = "import which, only_first\ndef handler(e, c):\n    return {'who': which.WHO, 'x': only_first.X}\n";
    c.create_function("order", "python3.11", code, json!({"layers": ["first:1", "second:1"]}));
    assert_eq!(output_of(&c, "order"), json!({"who": "second", "x": 1}));
    // Reversed, the other file wins: the update reaches the next run.
    let (status, f) = c.put("/api/functions/order", &json!({"layers": ["second:1", "first:1"]}));
    assert_eq!(status, 200, "{f}");
    assert_eq!(output_of(&c, "order"), json!({"who": "first", "x": 1}));
    // A new version of a layer is a new tree; the function sees it once it names it.
    publish(&c, "first", &[("python/which.py", "WHO = 'first v2'\n"), ("python/only_first.py", "X = 2\n")]);
    c.put("/api/functions/order", &json!({"layers": ["second:1", "first:2"]}));
    assert_eq!(output_of(&c, "order"), json!({"who": "first v2", "x": 2}));
}

#[test]
fn a_function_and_its_layers_fit_in_250_mib_unpacked() {
    let s = Server::start();
    let c = s.user();
    // 126 files of 1 MiB of zeros: 126 MiB unpacked from a zip of some 130 KiB (files up to
    // 1 MiB may compress that well; a larger one would be refused as a bomb).
    let zip = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let mib = vec![0u8; 1 << 20];
        for i in 0..126 {
            let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).compression_level(Some(1));
            w.start_file(format!("python/blob{i}.bin"), opts).unwrap();
            w.write_all(&mib).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    for name in ["big1", "big2"] {
        let (status, l) = c.post("/api/layers", &json!({"name": name, "zip": b64(&zip)}));
        assert_eq!(status, 201, "{l}");
        assert_eq!(l["unpacked_size"], 126u64 << 20, "{l}");
    }
    let code = "def handler(e, c):\n    return 1\n";
    let (status, b) = c.post("/api/functions", &json!({"name": "heavy", "runtime": "python3.11", "code": code, "layers": ["big1:1", "big2:1"]}));
    assert_eq!(assert_error(status, &b, 413), "payload_too_large", "252 MiB of layers is past 250 MiB: {b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("250 MiB"), "{b}");
    c.create_function("heavy", "python3.11", code, json!({"layers": ["big1:1"]}));
    let (status, b) = c.put("/api/functions/heavy", &json!({"layers": ["big1:1", "big2:1"]}));
    assert_error(status, &b, 413);
    let (_, f) = c.get("/api/functions/heavy");
    assert_eq!(f["layers"], json!(["big1:1"]), "a refused update changes nothing");
}
