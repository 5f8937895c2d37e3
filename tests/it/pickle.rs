//! The pickle reader against torch and numpy themselves (python/fixtures/pickles.py, run once into
//! target/fixtures/pickles): torch.save files in both containers, every supported dtype, strided views,
//! shared storages and `_rebuild_tensor_v3` read bit for bit as torch.load returns them; truncated files and
//! unsupported dtypes fail naming the file and the tensor; pickled numpy arrays (protocols 2 to 5) read as
//! numpy wrote them.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use robustvit::model::checkpoint;
use robustvit::pickle::{self, DType, NumpyArray, RawTensor};
use serde::Deserialize;
use serde_json::{json, Value};
use tch::Tensor;

use crate::support::made;

fn pickles() -> PathBuf {
    made("pickles")
}

/// One torch.save file: its expected tensors and its keys in torch.load's order, with their dtypes.
#[derive(Deserialize)]
struct Case {
    expected: String,
    keys: Vec<(String, String)>,
}

fn cases() -> BTreeMap<String, Case> {
    let text = std::fs::read_to_string(pickles().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// torch's name for each dtype.
fn torch_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "float64",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

/// The tensor's elements in row-major order as raw bytes.
fn bytes_of(t: &Tensor) -> Vec<u8> {
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.contiguous().copy_data_u8(&mut bytes, numel);
    bytes
}

fn expected(case: &Case) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(pickles().join(&case.expected)).unwrap().into_iter().collect()
}

fn read(file: &str) -> Vec<(String, RawTensor)> {
    pickle::read_state_dict(&pickles().join(file)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pickle_every_format_reads_as_torch_loads_it() {
    let cases = cases();
    let files: Vec<&str> = cases.keys().map(String::as_str).collect();
    // dtypes, views and shared in both containers; v3 in the zip one (torch cannot load it from a legacy file).
    assert_eq!(files.len(), 7, "{files:?}");
    for (file, case) in &cases {
        let want = expected(case);
        let ours = read(file);
        let keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        let torch_keys: Vec<&str> = case.keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, torch_keys, "{file}: keys or their order differ from torch.load's");
        for ((key, raw), (_, dtype)) in ours.iter().zip(&case.keys) {
            let t = &want[key];
            assert_eq!(torch_name(raw.dtype), dtype, "{file} {key}: dtype");
            let shape: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
            assert_eq!(shape, t.size(), "{file} {key}: shape");
            assert!(raw.contiguous_bytes() == bytes_of(t), "{file} {key}: elements differ from torch.load's");
        }
        // The same through the model loader's entry point, which makes tch tensors of them.
        let tensors = checkpoint::read_tensors(&pickles().join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tensors.len(), want.len(), "{file}");
        for (key, ours) in &tensors {
            let t = &want[key];
            assert_eq!((ours.kind(), ours.size()), (t.kind(), t.size()), "{file} {key}: read_tensors");
            assert!(bytes_of(ours) == bytes_of(t), "{file} {key}: read_tensors elements differ from torch.load's");
        }
    }
}

fn get<'a>(tensors: &'a [(String, RawTensor)], key: &str) -> &'a RawTensor {
    &tensors.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no tensor {key}")).1
}

#[test]
fn pickle_views_stay_views_of_shared_storages() {
    for container in ["zip", "legacy"] {
        // torch.save stores a view's whole storage with its offset and strides; the reader keeps them.
        let views = read(&format!("views.{container}.pth"));
        let view = |key: &str| {
            let t = get(&views, key);
            (t.storage_offset, t.strides.clone(), t.storage.len())
        };
        // base = arange(60.).reshape(6, 10) as float32 (240 bytes); views of it keep all of it.
        assert_eq!(view("transposed"), (0, vec![1, 10], 240), "{container}");
        assert_eq!(view("offset"), (23, vec![10, 1], 240), "{container}");
        assert_eq!(view("stepped"), (10, vec![10, 3], 240), "{container}");
        assert_eq!(view("expanded"), (0, vec![1, 0], 32), "{container}");
        assert_eq!(view("flat_offset"), (7, vec![1], 40), "{container}");

        let shared = read(&format!("shared.{container}.pth"));
        let storage = |key: &str| &get(&shared, key).storage;
        assert!(Arc::ptr_eq(storage("w"), storage("w_tail")), "{container}: w[1:] shares w's storage");
        assert!(Arc::ptr_eq(storage("w"), storage("w_t")), "{container}: w.t() shares w's storage");
        assert!(!Arc::ptr_eq(storage("w"), storage("other")), "{container}");
        assert_eq!(get(&shared, "w_tail").storage_offset, 6);
    }
    // _rebuild_tensor_v3: an untyped byte storage, the view counted in elements of the dtype argument.
    let v3 = read("v3.zip.pth");
    let view = get(&v3, "float32_view");
    assert_eq!((view.storage_offset, view.strides.clone(), view.storage.len()), (8, vec![1, 6], 120));
    assert!(Arc::ptr_eq(&view.storage, &get(&v3, "float32").storage));
}

fn read_err(file: &str) -> String {
    let path = pickles().join(file);
    let err = pickle::read_state_dict(&path).map(|_| ()).expect_err(file).to_string();
    assert!(err.contains(&path.display().to_string()), "error does not name the file: {err}");
    let loader = checkpoint::read_tensors(&path).map(|_| ()).expect_err(file).to_string();
    assert_eq!(loader, err, "read_tensors passes the reader's error on");
    err
}

#[test]
fn pickle_truncated_files_fail_naming_the_file() {
    for file in ["truncated.zip.pth", "truncated.legacy.pth"] {
        let err = read_err(file);
        assert!(err.contains("truncated"), "{file}: {err}");
    }
}

#[test]
fn pickle_unsupported_dtypes_fail_naming_key_and_dtype() {
    for (file, key, dtype) in [
        ("complex64.zip.pth", "spectrum", "torch.complex64"),
        ("complex64.legacy.pth", "spectrum", "torch.complex64"),
        // A real v3 file: torch 2.11 writes uint16 through _rebuild_tensor_v3.
        ("uint16.zip.pth", "counts", "torch.uint16"),
    ] {
        let err = read_err(file);
        assert!(err.contains(&format!("tensor `{key}`")) && err.contains(dtype), "{file}: {err}");
        assert!(err.contains("not supported"), "{file}: {err}");
    }
}

/// One pickled numpy array as numpy describes it: descriptor, shape, whether the pickle stores it in
/// Fortran order, and its values in row-major order (floats as their bit patterns).
#[derive(Deserialize)]
struct NumpyCase {
    dtype: String,
    shape: Vec<usize>,
    fortran: bool,
    values: Vec<Value>,
}

/// The array's values in row-major order, as the fixture writes them.
fn values_of(a: &NumpyArray) -> Vec<Value> {
    fn all<T: pickle::ReadableElement + Copy>(a: &NumpyArray, f: impl Fn(T) -> Value) -> Vec<Value> {
        a.to_array::<T>().unwrap_or_else(|e| panic!("{a:?}: {e}")).iter().map(|&v| f(v)).collect()
    }
    match &a.dtype[1..] {
        "u1" => all(a, |v: u8| json!(v)),
        "i4" => all(a, |v: i32| json!(v)),
        "i8" => all(a, |v: i64| json!(v)),
        "b1" => all(a, |v: bool| json!(v)),
        "f4" => all(a, |v: f32| json!(v.to_bits())),
        "f8" => all(a, |v: f64| json!(v.to_bits())),
        other => panic!("no test for dtype {other}"),
    }
}

#[test]
fn pickle_numpy_arrays_read_as_numpy_wrote_them() {
    let text = std::fs::read_to_string(pickles().join("numpy.json")).unwrap();
    let cases: BTreeMap<String, NumpyCase> = serde_json::from_str(&text).unwrap();
    for protocol in 2..=5 {
        assert!(cases.keys().any(|f| f.ends_with(&format!(".p{protocol}.pkl"))), "no protocol {protocol} case");
    }
    assert!(cases.values().any(|c| c.fortran), "no Fortran-ordered case");
    for (file, case) in &cases {
        let bytes = std::fs::read(pickles().join(file)).unwrap();
        let a = pickle::read_numpy(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((&a.dtype, &a.shape, a.fortran_order), (&case.dtype, &case.shape, case.fortran), "{file}");
        assert!(values_of(&a) == case.values, "{file}: values differ from numpy's");
        assert!(a.to_array::<i16>().is_err(), "{file}: decoded as i16");
    }
}
