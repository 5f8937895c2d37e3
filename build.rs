//! Compiles the C++ ops (cpp/) once, with one set of flags, and links those objects twice by one recipe:
//! into this crate (a whole archive, so the TORCH_LIBRARY registrations survive linking) and into
//! `librobustvit_ops.so` beside the binaries, which Python and TorchScript load. CUDA kernels are built
//! only with the `cuda` feature (explicit, and a rebuild trigger). Nothing here reads git: committing
//! never recompiles the C++.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// nvcc targets: SASS for Ampere and Hopper, plus Hopper PTX that newer GPUs JIT-compile.
const GENCODE: [&str; 6] = [
    "-gencode",
    "arch=compute_80,code=sm_80",
    "-gencode",
    "arch=compute_90,code=sm_90",
    "-gencode",
    "arch=compute_90,code=compute_90",
];

fn sources(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// libtorch as torch-sys finds it (the project's .venv torch with LIBTORCH_USE_PYTORCH=1, or $LIBTORCH), located
/// here rather than read from torch-sys's build facts: depending on torch-sys would hold this script, and so
/// the C++ compile below, until torch-sys has compiled its own C++ (about 90 s of a cold build). harness's
/// build script checks that both found the same libtorch.
struct Libtorch {
    lib: PathBuf,
    includes: Vec<PathBuf>,
    /// `torch.__version__`, recorded in run manifests.
    version: String,
}

impl Libtorch {
    fn locate() -> Libtorch {
        for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        // torch-sys's order: the Python package first, then $LIBTORCH.
        let root = if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
            torch_package()
        } else if let Some(root) = env::var_os("LIBTORCH") {
            PathBuf::from(root)
        } else {
            panic!(
                "libtorch not found: build through `make` (it sets LIBTORCH_USE_PYTORCH=1 and the project's .venv) \
                 or set LIBTORCH to a libtorch folder"
            )
        };
        let version = std::fs::read_to_string(root.join("version.py"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = "))
            .map_or_else(|| "unknown".into(), |v| v.trim_matches(|c| c == '\'' || c == '"').to_string());
        let includes = vec![root.join("include"), root.join("include/torch/csrc/api/include")];
        Libtorch { lib: root.join("lib"), includes, version }
    }
}

/// The installed torch package's folder, by the interpreter torch-sys asks (`python` inside a virtual
/// environment, else `python3`), without importing torch (seconds).
fn torch_package() -> PathBuf {
    let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = Command::new(python)
        .args(["-c", "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0])"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find torch: {e}"));
    assert!(
        out.status.success(),
        "{python} has no torch ({}): run `make bootstrap`, or set LIBTORCH",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// What the ops link against: library folders (each also an rpath entry) and libraries. Both the shared
/// library and every Rust binary link by [`LinkRecipe::args`].
struct LinkRecipe {
    dirs: Vec<PathBuf>,
    libs: Vec<&'static str>,
}

impl LinkRecipe {
    fn new(torch: &Libtorch, cuda: Option<&Path>) -> LinkRecipe {
        // libgomp: torch's own copy in torch/lib (the soname libtorch_cpu loads).
        let mut recipe = LinkRecipe { dirs: vec![torch.lib.clone()], libs: vec!["torch", "torch_cpu", "c10", "gomp"] };
        if cuda.is_some() {
            // pip's CUDA runtime lives beside torch in site-packages/nvidia/cu13/lib, versioned only.
            let site = torch.lib.parent().and_then(Path::parent).expect("torch lives in site-packages");
            recipe.dirs.push(site.join("nvidia/cu13/lib"));
            recipe.libs.extend(["c10_cuda", "torch_cuda", ":libcudart.so.13"]);
        }
        recipe
    }

    /// Linker arguments. `--no-as-needed`: libtorch must be linked even where no symbol of it is referenced,
    /// or libtorch_cuda is dropped and CUDA is silently unavailable.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for dir in &self.dirs {
            args.push(format!("-L{}", dir.display()));
            args.push(format!("-Wl,-rpath,{}", dir.display()));
        }
        args.push("-Wl,--no-as-needed".into());
        args.extend(self.libs.iter().map(|l| format!("-l{l}")));
        args.push("-Wl,--as-needed".into());
        args
    }
}

/// nvcc from $NVCC, $CUDA_HOME/bin, PATH or pip's nvidia-cuda-nvcc in .venv (scripts/find-nvcc.sh).
fn find_nvcc() -> PathBuf {
    let out = Command::new("bash").arg("scripts/find-nvcc.sh").output().expect("run scripts/find-nvcc.sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "feature `cuda` is on but no nvcc was found: run `make cuda-tools` or set NVCC"
    );
    PathBuf::from(path)
}

fn compile_cuda(nvcc: &Path, torch: &Libtorch, out_dir: &Path) -> Vec<PathBuf> {
    let cuda_include = nvcc.parent().and_then(Path::parent).expect("nvcc lives in <cuda>/bin").join("include");
    sources("cpp", "cu")
        .iter()
        .map(|src| {
            let obj = out_dir.join(src.file_name().expect("file name")).with_extension("cu.o");
            let mut cmd = Command::new(nvcc);
            cmd.arg("-c").arg(src).arg("-o").arg(&obj);
            cmd.args(["-std=c++17", "-O2", "-Xcompiler", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1"]).args(GENCODE);
            for inc in torch.includes.iter().chain([&cuda_include]) {
                cmd.arg("-I").arg(inc);
            }
            let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
            assert!(status.success(), "nvcc failed on {}", src.display());
            obj
        })
        .collect()
}

/// The C++ objects of cpp/: one flag set for every consumer. The sources compile as one translation unit
/// (each parsed the torch headers on its own: 131 s of CPU for four files, 52 s together).
fn compile_cpp(torch: &Libtorch, out_dir: &Path) -> Vec<PathBuf> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut unity = String::from("// Generated by build.rs: every cpp/*.cpp, compiled as one translation unit.\n");
    for src in sources("cpp", "cpp") {
        unity.push_str(&format!("#include \"{}\"\n", root.join(src).display()));
    }
    let unity_path = out_dir.join("robustvit_ops.cpp");
    std::fs::write(&unity_path, unity).unwrap_or_else(|e| panic!("writing {}: {e}", unity_path.display()));
    cc::Build::new()
        .cpp(true)
        .file(&unity_path)
        .includes(&torch.includes)
        .std("c++17")
        // The CPU kernels' loops need -O3 to vectorise, whatever the cargo profile; no debug info (the
        // torch headers make it slow to produce and nobody steps through these loops in gdb).
        .opt_level(3)
        .debug(false)
        .pic(true)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-Wno-unused-parameter")
        // ATen's at::parallel_for is inline OpenMP: without -fopenmp the CPU kernels run on one thread.
        .flag("-fopenmp")
        // Lets GCC turn the kernels' float selects (`w >= 0 ? x : 0`, whose comparison may raise an FP
        // exception nobody reads) into vector blends; values are unchanged. Without it the backward loop
        // stayed scalar, branching on the random sign of G*A: 10x its memory floor (docs/performance.md).
        .flag("-fno-trapping-math")
        .compile_intermediates()
}

/// `librobustvit_ops.so` for `torch.ops.load_library`, linked from `objects` by `recipe`.
fn link_shared(objects: &[PathBuf], recipe: &LinkRecipe, out: &Path) {
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.arg("-shared").arg("-o").arg(out).args(objects).args(recipe.args());
    let status = cmd.status().expect("run the C++ compiler to link librobustvit_ops.so");
    assert!(status.success(), "linking {} failed", out.display());
}

/// `target/<profile>`, where cargo puts the binaries.
fn profile_dir(out_dir: &Path) -> &Path {
    // OUT_DIR is target/<profile>/build/<package>-<hash>/out.
    out_dir.ancestors().nth(3).expect("OUT_DIR lies four levels below the target folder")
}

fn main() {
    let torch = Libtorch::locate();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var_os("CARGO_FEATURE_CUDA").map(|_| find_nvcc());

    // The cxx bridge (Rust-only, not in the .so) compiles beside the ops rather than after them: each is
    // mostly one compiler process parsing the torch headers.
    let bridge = cxx_build::bridge("src/ops/mod.rs")
        .file("src/ops/bridge.cc")
        .includes(&torch.includes)
        .include("cpp")
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-Wno-unused-parameter")
        .clone();
    let (mut objects, bridge_objects) = std::thread::scope(|s| {
        let bridge = s.spawn(|| bridge.compile_intermediates());
        let ops = compile_cpp(&torch, &out_dir);
        (ops, bridge.join().expect("compiling the cxx bridge failed (its error is above)"))
    });
    if let Some(nvcc) = &nvcc {
        objects.extend(compile_cuda(nvcc, &torch, &out_dir));
    }
    let recipe = LinkRecipe::new(&torch, nvcc.as_deref());

    let shared = out_dir.join("librobustvit_ops.so");
    link_shared(&objects, &recipe, &shared);
    let published = profile_dir(&out_dir).join("librobustvit_ops.so");
    std::fs::copy(&shared, &published).unwrap_or_else(|e| panic!("copying to {}: {e}", published.display()));

    // The same objects, whole, into this crate, and the bridge beside them.
    cc::Build::new().objects(&objects).link_lib_modifier("+whole-archive").compile("robustvit_ops");
    cc::Build::new().cpp(true).objects(&bridge_objects).compile("robustvit_bridge");

    // Link arguments reach only this package's binaries; crates that link this one (harness) forward
    // DEP_ROBUSTVIT_OPS_LINK_ARGS (tab-separated) to theirs.
    let args = recipe.args();
    for arg in &args {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:link_args={}", args.join("\t"));
    println!("cargo:shared_library={}", published.display());
    println!("cargo:libtorch_lib={}", torch.lib.display());
    println!("cargo:rustc-env=ROBUSTVIT_LIBTORCH_VERSION={}", torch.version);

    for path in ["cpp", "src/ops/bridge.h", "src/ops/bridge.cc", "scripts/find-nvcc.sh"] {
        println!("cargo:rerun-if-changed={path}");
    }
    for var in ["NVCC", "CUDA_HOME", "CXX", "CXXFLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}
