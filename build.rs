//! Compiles the C++ ops (cpp/) and the cxx bridge (src/ops/) into one static library linked whole, so the
//! TORCH_LIBRARY registrations survive linking; adds CUDA kernels when nvcc is found or the `cuda`
//! feature is on; links libtorch with an rpath so binaries and tests run without LD_LIBRARY_PATH.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sources(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// nvcc as scripts/find-nvcc.sh finds it; ROBUSTVIT_CUDA=0 turns CUDA off.
fn find_nvcc() -> Option<PathBuf> {
    if env::var("ROBUSTVIT_CUDA").is_ok_and(|v| v == "0") {
        return None;
    }
    let out = Command::new("bash").arg("scripts/find-nvcc.sh").output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

fn compile_cuda(nvcc: &Path, includes: &[PathBuf], out_dir: &Path) -> Vec<PathBuf> {
    let cuda_include = nvcc.parent().and_then(Path::parent).expect("nvcc lives in <cuda>/bin").join("include");
    sources("cpp", "cu")
        .iter()
        .map(|src| {
            let obj = out_dir.join(src.file_name().expect("file name")).with_extension("cu.o");
            let mut cmd = Command::new(nvcc);
            cmd.arg("-c").arg(src).arg("-o").arg(&obj);
            cmd.args(["-std=c++17", "-O2", "-Xcompiler", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1"]);
            cmd.args(["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]);
            for inc in includes.iter().chain([&cuda_include]) {
                cmd.arg("-I").arg(inc);
            }
            let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
            assert!(status.success(), "nvcc failed on {}", src.display());
            obj
        })
        .collect()
}

/// Build facts for run manifests: the git revision and libtorch's version.
fn provenance(torch_root: &Path) {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    // --no-optional-locks: a plain `git status` rewrites .git/index, which would make every next build dirty.
    let dirty = Command::new("git").args(["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).output().ok()
        .is_some_and(|o| !o.stdout.is_empty());
    println!("cargo:rustc-env=ROBUSTVIT_GIT_REV={rev}{}", if dirty { "-dirty" } else { "" });
    let torch = std::fs::read_to_string(torch_root.join("version.py")).unwrap_or_default();
    let version = torch
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ROBUSTVIT_LIBTORCH_VERSION={version}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}

fn main() {
    let torch_lib = PathBuf::from(env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report libtorch's lib folder; build through `make` (it sets LIBTORCH_USE_PYTORCH=1 \
         and the project's .venv)",
    ));
    let torch_root = torch_lib.parent().expect("libtorch lib folder has a parent");
    let includes = vec![torch_root.join("include"), torch_root.join("include/torch/csrc/api/include")];
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let nvcc = find_nvcc();
    let want_cuda = env::var("CARGO_FEATURE_CUDA").is_ok();
    assert!(!want_cuda || nvcc.is_some(), "feature `cuda` is on but no nvcc was found (run `make cuda-tools`)");

    let mut build = cxx_build::bridge("src/ops/mod.rs");
    build
        .files(sources("cpp", "cpp"))
        .file("src/ops/bridge.cc")
        .includes(&includes)
        .include("cpp")
        .std("c++17")
        // The CPU kernels' loops need -O3 to vectorise, whatever the cargo profile.
        .opt_level(3)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-Wno-unused-parameter")
        // ATen's at::parallel_for is inline OpenMP: without -fopenmp the CPU kernels run on one thread.
        .flag("-fopenmp")
        .link_lib_modifier("+whole-archive");
    if let Some(nvcc) = &nvcc {
        build.define("ROBUSTVIT_WITH_CUDA", None);
        for obj in compile_cuda(nvcc, &includes, &out_dir) {
            build.object(obj);
        }
    }
    build.compile("robustvit_ops");

    println!("cargo:rustc-link-search=native={}", torch_lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch_lib.display());
    // Without --no-as-needed the linker drops libtorch_cuda and CUDA is silently unavailable.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    // libgomp: torch's own copy in torch/lib (same soname as the one libtorch_cpu loads).
    for lib in ["torch", "torch_cpu", "c10", "gomp"] {
        println!("cargo:rustc-link-arg=-l{lib}");
    }
    if nvcc.is_some() {
        // The CUDA kernels call the CUDA runtime and c10_cuda; pip's runtime lives beside torch in
        // site-packages/nvidia/cu13/lib.
        let cudart = torch_root.parent().expect("torch lives in site-packages").join("nvidia/cu13/lib");
        println!("cargo:rustc-link-search=native={}", cudart.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cudart.display());
        for lib in ["-lc10_cuda", "-ltorch_cuda", "-l:libcudart.so.13"] {
            println!("cargo:rustc-link-arg={lib}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:rustc-check-cfg=cfg(robustvit_cuda)");
    if nvcc.is_some() {
        println!("cargo:rustc-cfg=robustvit_cuda");
    }
    for path in ["cpp", "src/ops/bridge.h", "src/ops/bridge.cc", "scripts/find-nvcc.sh"] {
        println!("cargo:rerun-if-changed={path}");
    }
    provenance(torch_root);
    println!("cargo:rerun-if-env-changed=ROBUSTVIT_CUDA");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
}
