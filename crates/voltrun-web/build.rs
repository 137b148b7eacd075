//! Builds the dashboard (`web/`, Vite + React) into `web/dist` when it is missing or older
//! than its sources, so that a fresh clone's `cargo build` embeds a current UI:
//! `npm ci` when `web/node_modules` is missing (or older than the lock file), then
//! `npm run build` (which first generates `web/src/api-types.ts` from the committed
//! `web/openapi.json`, the document `voltrun openapi` prints). The folder to embed is passed on as `VOLTRUN_WEB_DIST`.
//!
//! `VOLTRUN_WEB_SKIP_BUILD=1` never runs npm: it embeds `web/dist` as it is, or a placeholder
//! page when there is none (for machines without Node.js).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What the build reads, relative to `web/`.
const SOURCES: &[&str] = &["src", "public", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json", "openapi.json"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let web = web.canonicalize().unwrap_or(web);
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", web.join(s).display());
    }
    // A removed or rebuilt dist is noticed too.
    println!("cargo:rerun-if-changed={}", web.join("dist/index.html").display());
    println!("cargo:rerun-if-env-changed=VOLTRUN_WEB_SKIP_BUILD");

    let dist = web.join("dist");
    let skip = env::var("VOLTRUN_WEB_SKIP_BUILD").is_ok_and(|v| !v.is_empty() && v != "0");
    let embed = if skip {
        if dist.join("index.html").is_file() {
            dist
        } else {
            placeholder()
        }
    } else {
        if stale(&web, &dist) {
            build(&web);
        }
        dist
    };
    println!("cargo:rustc-env=VOLTRUN_WEB_DIST={}", embed.display());
}

/// The newest modification time of a file or of anything under a directory.
fn newest(p: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(p).ok()?;
    let mut t = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in fs::read_dir(p).ok()?.flatten() {
            if let Some(u) = newest(&entry.path()) {
                t = t.max(u);
            }
        }
    }
    Some(t)
}

fn stale(web: &Path, dist: &Path) -> bool {
    let Some(built) = fs::metadata(dist.join("index.html")).and_then(|m| m.modified()).ok() else {
        return true;
    };
    SOURCES.iter().filter_map(|s| newest(&web.join(s))).any(|t| t > built)
}

fn npm(web: &Path, args: &[&str]) {
    let npm = env::var("NPM").unwrap_or_else(|_| "npm".into());
    let out = Command::new(&npm).args(args).current_dir(web).output().unwrap_or_else(|e| {
        panic!(
            "voltrun-web: cannot run `{npm} {}` in {} ({e}). The dashboard is built with Node.js 20+ and npm; \
             install them, or set VOLTRUN_WEB_SKIP_BUILD=1 to embed a placeholder page.",
            args.join(" "),
            web.display()
        )
    });
    if !out.status.success() {
        panic!(
            "voltrun-web: `{npm} {}` in {} failed ({}):\n{}\n{}",
            args.join(" "),
            web.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn build(web: &Path) {
    let modules = web.join("node_modules");
    let installed = fs::metadata(modules.join(".package-lock.json")).and_then(|m| m.modified()).ok();
    let locked = fs::metadata(web.join("package-lock.json")).and_then(|m| m.modified()).ok();
    let outdated = match (installed, locked) {
        (Some(i), Some(l)) => l > i,
        _ => true,
    };
    if !modules.is_dir() || outdated {
        npm(web, &["ci", "--no-audit", "--no-fund"]);
    }
    // Build beside dist and swap it in, so that another build reading dist (a parallel cargo
    // on another profile) never sees it half written.
    let tmp = web.join(format!(".dist-{}", std::process::id()));
    let tmp_arg = tmp.to_string_lossy().into_owned();
    npm(web, &["run", "build", "--", "--outDir", &tmp_arg, "--emptyOutDir"]);
    let dist = web.join("dist");
    let old = web.join(format!(".dist-old-{}", std::process::id()));
    if dist.exists() {
        fs::rename(&dist, &old).expect("move the old web/dist aside");
    }
    fs::rename(&tmp, &dist).expect("move the new build to web/dist");
    let _ = fs::remove_dir_all(&old);
}

fn placeholder() -> PathBuf {
    let dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("placeholder");
    fs::create_dir_all(&dir).expect("create the placeholder dir");
    fs::write(
        dir.join("index.html"),
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>VoltRun</title>\
         <body style=\"font-family:system-ui;max-width:40em;margin:4em auto;padding:0 1em\">\
         <h1>VoltRun</h1><p>This binary was built without its dashboard (VOLTRUN_WEB_SKIP_BUILD). \
         The API is served at <code>/api</code>; rebuild with Node.js 20+ and npm to embed the dashboard.</p></body></html>\n",
    )
    .expect("write the placeholder page");
    dir
}
