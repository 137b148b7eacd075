//! An instance's files (SPEC §10): the instance directory on the host holds three
//! directories, each bound read-only into the sandbox (by `voltrun-sandbox`'s root, in every
//! isolating tier):
//!
//! | host (in the instance dir) | inside        | what                                              |
//! |----------------------------|---------------|---------------------------------------------------|
//! | `task/`                    | `/var/task`   | the package (or the one `code` file); the cwd     |
//! | `deps/`                    | `/var/deps`   | the built dependency tree                         |
//! | `opt/`                     | `/opt`        | the layers, in order, later ones winning          |
//!
//! Module paths: Python `/var/task`, `/var/deps`, `/opt/python`; Node finds the dependencies as
//! `/var/task/node_modules`, a relative symlink (`../deps/node_modules`) that this module makes
//! when the package has no `node_modules/` of its own (so CommonJS `require` and ESM `import`
//! both resolve them, and a dependency's own imports resolve among its siblings), and layers
//! through `NODE_PATH=/opt/nodejs/node_modules`. A Node dependency tree therefore holds a
//! `node_modules/` directory at its root; a Python one is the `pip --target` directory itself.
//!
//! The directories exist (empty) from the instance's start, so a spare started before its
//! function was known gets its files afterwards: [`InstanceDir::materialise`] hard-links the
//! trees into directories the sandbox already binds. The process tier (no isolation) sees the
//! host paths; the runtime bootstraps read them from `LAMBDA_TASK_ROOT`, `VOLTRUN_DEPS_ROOT`
//! and `VOLTRUN_OPT_ROOT`.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where the package appears inside an instance.
pub const TASK_ROOT: &str = "/var/task";
/// Where the dependency tree appears inside an instance.
pub const DEPS_ROOT: &str = "/var/deps";
/// Where the layers appear inside an instance.
pub const OPT_ROOT: &str = "/opt";

/// The name of the three directories in an instance directory.
const TASK: &str = "task";
const DEPS: &str = "deps";
const OPT: &str = "opt";

/// The trees that make up an instance's files (each an unpacked tree, usually under
/// [`crate::Trees`]); `None`/empty for what the function does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFiles {
    /// The package's tree (`None` for a `code` function: its one file is written instead).
    pub task: Option<PathBuf>,
    /// The built dependency tree.
    pub deps: Option<PathBuf>,
    /// The layers' trees, in the function's order (later wins).
    pub opt: Vec<PathBuf>,
}

/// An instance directory on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDir {
    root: PathBuf,
}

impl InstanceDir {
    /// The instance directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> InstanceDir {
        InstanceDir { root: root.into() }
    }

    /// Makes `root` and its three empty directories (0755).
    pub fn create(root: impl Into<PathBuf>) -> io::Result<InstanceDir> {
        let dir = InstanceDir::new(root);
        let mut b = fs::DirBuilder::new();
        b.mode(0o755).recursive(true);
        for d in [dir.task(), dir.deps(), dir.opt()] {
            b.create(d)?;
        }
        Ok(dir)
    }

    /// The instance directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host side of `/var/task`.
    pub fn task(&self) -> PathBuf {
        self.root.join(TASK)
    }

    /// The host side of `/var/deps`.
    pub fn deps(&self) -> PathBuf {
        self.root.join(DEPS)
    }

    /// The host side of `/opt`.
    pub fn opt(&self) -> PathBuf {
        self.root.join(OPT)
    }

    /// The (host, inside) pairs the sandbox binds read-only, in mount order.
    pub fn binds(&self) -> [(PathBuf, &'static str); 3] {
        [(self.task(), TASK_ROOT), (self.deps(), DEPS_ROOT), (self.opt(), OPT_ROOT)]
    }

    /// Hard-links `files` into the (existing, possibly bound) directories: the package into
    /// `task/`, the dependencies into `deps/`, each layer into `opt/` in order. With `node`
    /// and a dependency tree, `task/node_modules` becomes a link to it unless the package
    /// has its own. Returns the number of files linked.
    pub fn materialise(&self, files: &InstanceFiles, node: bool) -> io::Result<u64> {
        let mut n = 0;
        if let Some(t) = &files.task {
            n += crate::tree::link_into(t, &self.task())?;
        }
        if let Some(d) = &files.deps {
            // The dependency builder's Node tree is the node_modules directory itself: it goes
            // to deps/node_modules, so that a module's real path lies under a directory named
            // node_modules and Node finds its siblings (sharp requiring detect-libc).
            let into = if node && !d.join("node_modules").is_dir() {
                let nm = self.deps().join("node_modules");
                fs::DirBuilder::new().mode(0o755).recursive(true).create(&nm)?;
                nm
            } else {
                self.deps()
            };
            n += crate::tree::link_into(d, &into)?;
            let link = self.task().join("node_modules");
            if node && link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("../deps/node_modules", &link)?;
            }
        }
        for layer in &files.opt {
            n += crate::tree::link_into(layer, &self.opt())?;
        }
        Ok(n)
    }

    /// Removes the instance directory and everything in it (the trees keep their files).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::scratch;

    #[test]
    fn an_instance_dir_gets_its_package_deps_and_layers() {
        let data = scratch();
        let (pkg, deps, l1, l2) = (data.join("pkg"), data.join("deps"), data.join("l1"), data.join("l2"));
        fs::create_dir_all(&pkg).unwrap();
        fs::write(pkg.join("index.js"), "").unwrap();
        fs::create_dir_all(deps.join("node_modules/zod")).unwrap();
        fs::write(deps.join("node_modules/zod/index.js"), "").unwrap();
        for (l, v) in [(&l1, "1"), (&l2, "2")] {
            fs::create_dir_all(l.join("nodejs/node_modules/x")).unwrap();
            fs::write(l.join("nodejs/node_modules/x/v"), v).unwrap();
        }
        let inst = InstanceDir::create(data.join("i1")).unwrap();
        let files = InstanceFiles { task: Some(pkg), deps: Some(deps), opt: vec![l1, l2] };
        assert_eq!(inst.materialise(&files, true).unwrap(), 4);
        assert!(inst.task().join("node_modules/zod/index.js").is_file(), "deps visible as task/node_modules");
        assert_eq!(fs::read_link(inst.task().join("node_modules")).unwrap(), Path::new("../deps/node_modules"));
        assert_eq!(fs::read_to_string(inst.opt().join("nodejs/node_modules/x/v")).unwrap(), "2");
        assert_eq!(inst.binds()[0], (data.join("i1/task"), "/var/task"));
        inst.remove().unwrap();
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_package_that_vendors_node_modules_keeps_them() {
        let data = scratch();
        let pkg = data.join("pkg");
        fs::create_dir_all(pkg.join("node_modules/own")).unwrap();
        fs::create_dir_all(data.join("deps/node_modules")).unwrap();
        let inst = InstanceDir::create(data.join("i")).unwrap();
        inst.materialise(&InstanceFiles { task: Some(pkg), deps: Some(data.join("deps")), opt: vec![] }, true).unwrap();
        assert!(inst.task().join("node_modules/own").is_dir());
        assert!(!inst.task().join("node_modules").symlink_metadata().unwrap().file_type().is_symlink());
        fs::remove_dir_all(&data).unwrap();
    }
}
