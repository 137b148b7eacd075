//! Measures what a cold start of a package costs on disk: unpacking a 1,000-file package into
//! a tree (once per node) and hard-linking it into an instance directory (every instance).
//! `cargo run --release -p voltrun-package --example unpack_link [files] [bytes-per-file]`

use std::collections::BTreeMap;
use std::time::Instant;

use voltrun_package::{tree::link_into, unpack_zip, zip_from_files, InstanceDir, InstanceFiles, Limits, Trees};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let files: BTreeMap<String, String> = (0..n).map(|i| (format!("pkg/m{}/f{i}.py", i % 20), format!("# {i}\n{}", "x = 1\n".repeat(size / 6)))).collect();
    let zip = zip_from_files(&files, &Limits::files()).expect("zip");
    let data = std::env::temp_dir().join(format!("voltrun-unpack-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let trees = Trees::new(&data);
    let sha = voltrun_package::sha256_hex(&zip);
    let t = Instant::now();
    voltrun_package::inspect_zip(&zip, &Limits::files()).expect("inspect");
    let inspect = t.elapsed();
    let t = Instant::now();
    let tree = trees.ensure(&sha, |p| unpack_zip(&zip, p, &Limits::files()).map(drop)).expect("unpack");
    let unpack = t.elapsed();
    let mut links = Vec::new();
    for i in 0..5 {
        let inst = InstanceDir::create(data.join(format!("i{i}"))).unwrap();
        let t = Instant::now();
        inst.materialise(&InstanceFiles { task: Some(tree.clone()), ..Default::default() }, false).unwrap();
        links.push(t.elapsed());
    }
    let t = Instant::now();
    let linked = link_into(&tree, &InstanceDir::create(data.join("last")).unwrap().task()).unwrap();
    let last = t.elapsed();
    println!("{n} files, {} bytes zipped, {} unpacked", zip.len(), files.values().map(|v| v.len()).sum::<usize>());
    println!("check only (decompress, write nothing): {:.1} ms; unpack into a tree: {:.1} ms", inspect.as_secs_f64() * 1e3, unpack.as_secs_f64() * 1e3);
    println!(
        "hard-link into an instance: {:?} ms (and {:.1} ms for {linked} files)",
        links.iter().map(|d| (d.as_secs_f64() * 1e4).round() / 10.0).collect::<Vec<_>>(),
        last.as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(&data).unwrap();
}
