//! The harness binary's build facts: libtorch's link arguments and rpath (from the robustvit crate), and
//! the git revision that run manifests record; and a check that the robustvit crate's C++ and tch were built
//! against one libtorch (each locates it on its own). Only this small crate reruns on git activity; the C++ ops
//! are compiled by the robustvit crate and never rebuilt for a commit.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// tch's libtorch (torch-sys's build facts) and the one the ops were compiled against must be the same
/// folder: a binary linking two would load one of them under the other's headers.
fn same_libtorch() {
    let lib = |var: &str| {
        let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set by its crate's build script"));
        std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"))
    };
    let (tch, ops) = (lib("DEP_TCH_LIBTORCH_LIB"), lib("DEP_ROBUSTVIT_OPS_LIBTORCH_LIB"));
    assert!(
        tch == ops,
        "tch links libtorch in {} but the robustvit ops were compiled against {}: set LIBTORCH, or build \
         through `make` (the project's .venv torch)",
        tch.display(),
        ops.display()
    );
}

fn main() {
    // The robustvit crate's link recipe (libtorch, its rpath): link arguments do not pass to dependents.
    let link = std::env::var("DEP_ROBUSTVIT_OPS_LINK_ARGS").expect("the robustvit crate reports its link arguments");
    for arg in link.split('\t') {
        println!("cargo:rustc-link-arg={arg}");
    }
    same_libtorch();
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // --no-optional-locks: a plain `git status` rewrites the index, which would make every next build dirty.
    let dirty =
        git(&["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!("cargo:rustc-env=ROBUSTVIT_GIT_REV={revision}{}", if dirty { "-dirty" } else { "" });
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{branch}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
