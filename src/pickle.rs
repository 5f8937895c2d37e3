//! Hand-written on purpose: serde-pickle has no persistent ids and forgets which function a call names,
//! repugnant-pickle (0.0.1) and candle read only zip files with `_rebuild_tensor_v2`, burn's needs all of burn.
//!
//! Reads the tensors of a PyTorch checkpoint (`.pth`/`.pt`/`.bin` written by `torch.save`) without libtorch,
//! which cannot read the pickled (Ordered)dicts that timm and DeiT save, and numpy arrays pickled on their
//! own ([`read_numpy`]).
//!
//! Two containers are understood:
//! - the zip archive written by `torch.save` since torch 1.6: `<archive>/data.pkl` is a pickle whose tensors
//!   point, through persistent ids, at raw little-endian storages in `<archive>/data/<key>`;
//! - the legacy stream (torch < 1.6 or `_use_new_zipfile_serialization=False`): a magic-number pickle, a
//!   protocol-version pickle, a sys-info pickle, the main pickle, a pickle of the storage keys, then each
//!   storage as an `i64` element count followed by its bytes.
//!
//! The pickle machine is small and safe: it never runs code. It rebuilds tensors, numpy arrays and the
//! containers around them; classes it does not know become opaque values, so extra entries (an
//! `argparse.Namespace`, optimizer states, numpy scalars) do not make a read fail. All containers are
//! reference-counted, as in Python, so a dict that is filled after being memoised is seen filled wherever it
//! is referenced, and cloning a memoised value is cheap.
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
/// What [`NumpyArray::to_array`] needs of an element type, and how it fails.
pub use ndarray_npy::{ReadDataError, ReadableElement};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The dtype of a `torch.<name>` global, as `_rebuild_tensor_v3` receives it.
    fn from_torch_name(name: &str) -> Option<DType> {
        Some(match name {
            "float64" | "double" => DType::F64,
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

/// A storage class named in a persistent id: its element size (needed to step over it in a legacy file even
/// when its dtype is unsupported) and its dtype, or torch's name of the dtype when this reader does not
/// support it. The module is not checked, so `torch.cuda.FloatStorage` from old GPU checkpoints reads like
/// `torch.FloatStorage`.
fn storage_class(name: &str) -> Option<(usize, std::result::Result<DType, &'static str>)> {
    Some(match name {
        "DoubleStorage" => (8, Ok(DType::F64)),
        "FloatStorage" => (4, Ok(DType::F32)),
        "HalfStorage" => (2, Ok(DType::F16)),
        "BFloat16Storage" => (2, Ok(DType::BF16)),
        "LongStorage" => (8, Ok(DType::I64)),
        "IntStorage" => (4, Ok(DType::I32)),
        "ShortStorage" => (2, Ok(DType::I16)),
        "CharStorage" => (1, Ok(DType::I8)),
        "ByteStorage" | "UntypedStorage" => (1, Ok(DType::U8)),
        "BoolStorage" => (1, Ok(DType::Bool)),
        "ComplexDoubleStorage" => (16, Err("complex128")),
        "ComplexFloatStorage" => (8, Err("complex64")),
        "QInt32Storage" => (4, Err("qint32")),
        "QInt8Storage" => (1, Err("qint8")),
        "QUInt8Storage" => (1, Err("quint8")),
        "QUInt4x2Storage" => (1, Err("quint4x2")),
        "QUInt2x4Storage" => (1, Err("quint2x4")),
        _ => return None,
    })
}

/// A tensor as stored in the checkpoint: little-endian bytes of its storage plus the view into it.
/// `shape`, `strides` and `storage_offset` count elements of `dtype`.
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub storage_offset: usize,
    pub storage: Arc<Vec<u8>>,
}

impl fmt::Debug for RawTensor {
    // Derived Debug would print every byte of the storage.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("strides", &self.strides)
            .field("storage_offset", &self.storage_offset)
            .field("storage_bytes", &self.storage.len())
            .finish()
    }
}

impl RawTensor {
    /// Number of elements (1 for a 0-dim tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor's elements in row-major (contiguous) order as little-endian bytes (handles non-contiguous
    /// strides, stride 0 and offsets).
    ///
    /// # Panics
    /// If the view reaches past the storage. `read_state_dict` checks every view it returns, so this only
    /// happens for a `RawTensor` built or edited by hand.
    pub fn contiguous_bytes(&self) -> Vec<u8> {
        let es = self.dtype.size();
        let n = self.numel();
        let mut out = Vec::with_capacity(n * es);
        if n == 0 {
            return out;
        }
        let dims = self.shape.len();
        let mut expected = 1;
        let contiguous = (0..dims).rev().all(|d| {
            let ok = self.shape[d] == 1 || self.strides[d] == expected;
            expected *= self.shape[d];
            ok
        });
        if contiguous {
            let start = self.storage_offset * es;
            out.extend_from_slice(&self.storage[start..start + n * es]);
            return out;
        }
        // Not contiguous, so at least one dim: copy the innermost dim row by row, stepping an odometer over
        // the outer dims.
        let (inner_len, inner_stride) = (self.shape[dims - 1], self.strides[dims - 1]);
        let mut index = vec![0usize; dims - 1];
        let mut base = self.storage_offset;
        loop {
            if inner_stride == 1 {
                out.extend_from_slice(&self.storage[base * es..(base + inner_len) * es]);
            } else {
                for j in 0..inner_len {
                    let at = (base + j * inner_stride) * es;
                    out.extend_from_slice(&self.storage[at..at + es]);
                }
            }
            let mut d = dims - 1;
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                index[d] += 1;
                base += self.strides[d];
                if index[d] < self.shape[d] {
                    break;
                }
                base -= self.strides[d] * self.shape[d];
                index[d] = 0;
            }
        }
    }
}

/// Why a checkpoint could not be read; every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("{}: cannot read the file: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy torch.save file)", .path.display())]
    NotCheckpoint { path: PathBuf },
    #[error("{}: legacy tar checkpoint (torch <= 0.3) is not supported; re-save it with a current torch: torch.save(torch.load(p, weights_only=False), p2)", .path.display())]
    LegacyTar { path: PathBuf },
    #[error("{}: cannot read the zip archive (truncated or corrupt file?): {source}", .path.display())]
    Zip { path: PathBuf, source: zip::result::ZipError },
    #[error("{}: file is truncated: {what}", .path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{}: the zip archive has no `<archive>/data.pkl` (a TorchScript archive or another zip file?)", .path.display())]
    MissingDataPkl { path: PathBuf },
    #[error("{}: checkpoint was written on a {order}-endian machine; only little-endian checkpoints are supported", .path.display())]
    ByteOrder { path: PathBuf, order: String },
    #[error("{}: missing storage record `{key}`", .path.display())]
    MissingRecord { path: PathBuf, key: String },
    #[error("{}: storage record `{key}` holds {actual} bytes but its pickle declares {expected}", .path.display())]
    ShortRecord { path: PathBuf, key: String, expected: u64, actual: u64 },
    #[error("{}: {source}", .path.display())]
    Data { path: PathBuf, source: DataError },
    #[error("{}: no state dict found: {why}", .path.display())]
    NoStateDict { path: PathBuf, why: String },
    #[error("{}: tensor `{key}`: {what} is not supported", .path.display())]
    UnsupportedTensor { path: PathBuf, key: String, what: String },
    #[error("{}: tensor `{key}`: its view ({view}) needs {needed} bytes but its storage holds {available}", .path.display())]
    StorageTooSmall { path: PathBuf, key: String, view: String, needed: u128, available: usize },
}

/// What is wrong with pickle data itself, wherever it was read from ([`PickleError::Data`] adds the file).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read the pickle: {0}")]
    Io(io::Error),
    #[error("the pickle data ends at byte {pos}, before its STOP (truncated?)")]
    Truncated { pos: u64 },
    #[error("unsupported pickle opcode {name} (0x{code:02x}) at byte {pos}")]
    UnsupportedOpcode { name: &'static str, code: u8, pos: u64 },
    #[error("malformed pickle: {0}")]
    Malformed(String),
    #[error("not a pickled numpy array: {0}")]
    NotNumpy(String),
}

type Result<T> = std::result::Result<T, PickleError>;
type DataResult<T> = std::result::Result<T, DataError>;

fn in_file(path: &Path) -> impl Fn(DataError) -> PickleError + '_ {
    move |source| PickleError::Data { path: path.to_path_buf(), source }
}

fn bad(path: &Path, what: impl Into<String>) -> PickleError {
    in_file(path)(DataError::Malformed(what.into()))
}

fn io_error(path: &Path, source: io::Error) -> PickleError {
    PickleError::Io { path: path.to_path_buf(), source }
}

/// Reads every tensor of the state dict in a torch.save file, in file order. The state dict is the top-level
/// dict, or the dict under key "model" or "state_dict" (first found, in that order) when the top level holds
/// such a key whose value is a dict of tensors. Keys are returned as stored (no prefix stripping).
/// Non-tensor values inside the state dict (e.g. ints, None) are skipped. Tensors that share a storage share
/// its `Arc`.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut head = Vec::with_capacity(512);
    (&mut file).take(512).read_to_end(&mut head).map_err(|e| io_error(path, e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| io_error(path, e))?;
    let (root, mut storages) = if head.starts_with(b"PK") {
        open_zip(path, file)?
    } else if head.first() == Some(&PROTO) {
        open_legacy(path, file)?
    } else if head.get(257..262) == Some(b"ustar") {
        return Err(PickleError::LegacyTar { path: path.to_path_buf() });
    } else {
        return Err(PickleError::NotCheckpoint { path: path.to_path_buf() });
    };
    let dict = select_state_dict(path, &root)?;
    let entries = dict.borrow();

    // Python dicts keep the first position of a key and its last value.
    let mut out: Vec<(String, RawTensor)> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut loaded: HashMap<Rc<str>, Arc<Vec<u8>>> = HashMap::new();
    for pair in entries.0.chunks_exact(2) {
        let key = match &pair[0] {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(bad(path, format!("state dict key is of type {}, not str", other.kind()))),
        };
        let t = match &pair[1] {
            Value::Tensor(t) => t,
            Value::Unsupported(what) => {
                return Err(PickleError::UnsupportedTensor { path: path.to_path_buf(), key, what: what.to_string() })
            }
            _ => continue,
        };
        let storage = match loaded.get(&t.storage.key) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(storages.load(path, &t.storage)?);
                loaded.insert(t.storage.key.clone(), s.clone());
                s
            }
        };
        let raw = RawTensor {
            dtype: t.dtype,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
            storage_offset: t.offset,
            storage,
        };
        check_view(path, &key, &raw)?;
        match position.get(&key) {
            Some(&i) => out[i].1 = raw,
            None => {
                position.insert(key.clone(), out.len());
                out.push((key, raw));
            }
        }
    }
    Ok(out)
}

/// Checks that every element of the view lies inside the storage, so `contiguous_bytes` cannot panic, and
/// that the contiguous copy fits in memory addressing.
fn check_view(path: &Path, key: &str, t: &RawTensor) -> Result<()> {
    let es = t.dtype.size() as u128;
    // u128 with saturation: pickled sizes are untrusted and may overflow usize.
    let numel = t.shape.iter().fold(1u128, |n, &s| n.saturating_mul(s as u128));
    let needed = if numel == 0 {
        0
    } else {
        let last = t.shape.iter().zip(&t.strides).fold(t.storage_offset as u128, |acc, (&s, &st)| {
            acc.saturating_add((s as u128 - 1).saturating_mul(st as u128))
        });
        last.saturating_add(1).saturating_mul(es)
    };
    if needed > t.storage.len() as u128 {
        return Err(PickleError::StorageTooSmall {
            path: path.to_path_buf(),
            key: key.to_string(),
            view: format!("offset {}, shape {:?}, strides {:?}", t.storage_offset, t.shape, t.strides),
            needed,
            available: t.storage.len(),
        });
    }
    // Stride-0 (expanded) views may describe far more elements than they store.
    if numel.saturating_mul(es) > isize::MAX as u128 {
        return Err(bad(path, format!("tensor `{key}` of shape {:?} is too large", t.shape)));
    }
    Ok(())
}

/// The state dict: `root["model"]` or `root["state_dict"]` when it is a dict holding tensors, else `root`.
fn select_state_dict(path: &Path, root: &Value) -> Result<Rc<RefCell<Items>>> {
    let no_dict = |why: String| PickleError::NoStateDict { path: path.to_path_buf(), why };
    let Value::Dict(top) = root else {
        return Err(no_dict(format!(
            "the pickled top-level value is of type {}, not dict (a whole pickled nn.Module? save model.state_dict())",
            root.kind()
        )));
    };
    for name in ["model", "state_dict"] {
        // The last value of a repeated key wins, as in Python.
        let found = top
            .borrow()
            .0
            .chunks_exact(2)
            .rev()
            .find(|p| matches!(&p[0], Value::Str(k) if &**k == name))
            .map(|p| p[1].clone());
        if let Some(Value::Dict(d)) = found {
            if holds_tensors(&d) {
                return Ok(d);
            }
        }
    }
    if holds_tensors(top) {
        return Ok(top.clone());
    }
    let keys: Vec<String> = top
        .borrow()
        .0
        .chunks_exact(2)
        .filter_map(|p| match &p[0] {
            Value::Str(k) => Some(format!("{k:?}")),
            _ => None,
        })
        .take(20)
        .collect();
    Err(no_dict(format!(
        "the top-level dict holds no tensors and no \"model\" or \"state_dict\" dict of tensors (keys: {})",
        keys.join(", ")
    )))
}

fn holds_tensors(dict: &RefCell<Items>) -> bool {
    dict.borrow().0.chunks_exact(2).any(|p| matches!(p[1], Value::Tensor(_) | Value::Unsupported(_)))
}

// ---------------------------------------------------------------------------------------------------------
// Numpy arrays

/// A numpy array as its pickle describes it.
#[derive(Clone)]
pub struct NumpyArray {
    /// numpy's type descriptor: byte order and type code, e.g. `<i8`, `|u1`, `>f4`.
    pub dtype: String,
    pub shape: Vec<usize>,
    /// The elements are stored column-major (Fortran order) rather than row-major.
    pub fortran_order: bool,
    /// The elements' bytes: exactly the shape's element count times the dtype's size (checked). Shared with
    /// the pickle's memo while it is read, so that a large array is not copied.
    pub data: Rc<Vec<u8>>,
}

impl fmt::Debug for NumpyArray {
    // Derived Debug would print every byte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NumpyArray")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("fortran_order", &self.fortran_order)
            .field("data_bytes", &self.data.len())
            .finish()
    }
}

impl NumpyArray {
    fn new(
        dtype: String,
        shape: Vec<usize>,
        fortran_order: bool,
        data: Rc<Vec<u8>>,
    ) -> std::result::Result<Self, String> {
        let item_size = item_size(&dtype).ok_or_else(|| format!("dtype {dtype} is not supported"))?;
        let expected = shape.iter().try_fold(item_size, |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            let expected = expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            return Err(format!("expected {expected} bytes for {dtype} {shape:?}, found {}", data.len()));
        }
        Ok(NumpyArray { dtype, shape, fortran_order, data })
    }

    /// The array with elements of type `T`, in its storage order (a Fortran-ordered array comes back in
    /// Fortran layout). ndarray-npy decodes the elements, as for an .npy file with this descriptor: `T` must
    /// match the dtype (e.g. `i64` for `<i8` or `>i8`).
    pub fn to_array<T: ReadableElement>(&self) -> std::result::Result<ArrayD<T>, ReadDataError> {
        let numel = self.shape.iter().product();
        let descriptor = py_literal::Value::String(self.dtype.clone());
        let values = T::read_to_end_exact_vec(self.data.as_slice(), &descriptor, numel)?;
        let shape = IxDyn(&self.shape).set_f(self.fortran_order);
        Ok(ArrayD::from_shape_vec(shape, values).expect("read_to_end_exact_vec returns one value per element"))
    }
}

/// Bytes per element of a numpy descriptor (`<f4`, `|b1`, `<U5`, ...); `None` for the types whose size the
/// code does not say (objects, datetimes with units, structured types).
fn item_size(dtype: &str) -> Option<usize> {
    let code = dtype.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = code.chars();
    let kind = chars.next()?;
    let count: usize = chars.as_str().parse().ok()?;
    match kind {
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'V' => Some(count),
        // UCS-4 text.
        'U' => count.checked_mul(4),
        _ => None,
    }
}

/// `numpy.dtype(code, align, copy)` as built so far.
struct NumpyDtype {
    code: String,
    /// `<`, `>`, `|` (not applicable) from the BUILD state; empty before it.
    order: String,
}

impl NumpyDtype {
    /// The dtype's `__setstate__` argument: `(version, byte_order, subarray, names, fields, ...)`.
    fn set_state(&mut self, state: &Value) {
        if let Value::Tuple(t) = state {
            if let [_, Value::Str(order), ..] = t.0.as_slice() {
                self.order = order.to_string();
            }
        }
    }
}

fn dtype_of(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::NumpyDtype(d) => {
            let d = d.borrow();
            Ok(format!("{}{}", d.order, d.code))
        }
        other => Err(format!("its dtype is a {}, not a numpy dtype", other.kind())),
    }
}

fn shape_of(v: &Value) -> std::result::Result<Vec<usize>, String> {
    let Value::Tuple(dims) = v else {
        return Err(format!("its shape is a {}, not a tuple", v.kind()));
    };
    dims.0
        .iter()
        .map(|d| match d {
            Value::Int(d) => usize::try_from(*d).map_err(|_| format!("its shape has the dimension {d}")),
            other => Err(format!("its shape holds a {}, not an int", other.kind())),
        })
        .collect()
}

/// The array from ndarray's `__setstate__` argument: `(version, shape, dtype, fortran_order, data)`, where
/// numpy writes version 1 and older numpy left the version out.
fn array_from_state(state: &Value) -> std::result::Result<NumpyArray, String> {
    let Value::Tuple(t) = state else {
        return Err(format!("its state is a {}, not a tuple", state.kind()));
    };
    let ([Value::Int(1), shape, dtype, fortran, data] | [shape, dtype, fortran, data]) = t.0.as_slice() else {
        return Err(format!("its state is a tuple of {}, not (1, shape, dtype, fortran_order, data)", t.0.len()));
    };
    let Value::Bool(fortran) = fortran else {
        return Err(format!("its fortran_order flag is a {}, not a bool", fortran.kind()));
    };
    let Value::Bytes(data) = data else {
        return Err(format!("its data is a {}, not bytes (an object array?)", data.kind()));
    };
    NumpyArray::new(dtype_of(dtype)?, shape_of(shape)?, *fortran, data.clone())
}

/// The array from `_frombuffer(data, dtype, shape, order)`, numpy's reduction for protocol 5.
fn array_from_buffer(args: &[Value]) -> std::result::Result<NumpyArray, String> {
    let [Value::Bytes(data), dtype, shape, Value::Str(order)] = args else {
        return Err("_frombuffer takes (bytes, dtype, shape, order)".into());
    };
    NumpyArray::new(dtype_of(dtype)?, shape_of(shape)?, &**order == "F", data.clone())
}

/// Rebuilds the numpy array that `bytes` pickle (`pickle.dumps(array)`, protocols 2 to 5), without running
/// any code. Plain `numpy.ndarray`s of fixed-size dtypes only; `bytes` must hold exactly one pickle.
pub fn read_numpy(bytes: &[u8]) -> DataResult<NumpyArray> {
    let mut vm = Vm::new(bytes);
    let root = vm.load()?;
    if !vm.input.is_empty() {
        return Err(DataError::Malformed(format!("{} bytes follow the pickle's STOP", vm.input.len())));
    }
    // The memo holds a second reference to the data.
    drop(vm);
    let Value::NdArray(array) = root else {
        return Err(DataError::NotNumpy(format!("the pickle holds a {}", root.kind())));
    };
    let array = Rc::try_unwrap(array).map_or_else(|shared| shared.borrow().clone(), RefCell::into_inner);
    array.map_err(DataError::NotNumpy)
}

// ---------------------------------------------------------------------------------------------------------
// Containers and storages

/// Where the storage bytes are.
enum Storages {
    Zip {
        archive: zip::ZipArchive<File>,
        prefix: String,
        file_len: u64,
    },
    /// The legacy file and, per storage key, where its bytes start and how many there are.
    Legacy {
        file: BufReader<File>,
        offsets: HashMap<Rc<str>, (u64, u64)>,
    },
}

impl Storages {
    fn load(&mut self, path: &Path, s: &StorageRef) -> Result<Vec<u8>> {
        let nbytes = s.numel.checked_mul(s.elem_size).ok_or_else(|| bad(path, "storage size overflows"))?;
        let short = |key: String, actual: u64| PickleError::ShortRecord {
            path: path.to_path_buf(),
            key,
            expected: nbytes as u64,
            actual,
        };
        match self {
            Storages::Zip { archive, prefix, file_len } => {
                let name = format!("{prefix}data/{}", s.key);
                let mut record = match archive.by_name(&name) {
                    Ok(r) => r,
                    Err(zip::result::ZipError::FileNotFound) => {
                        return Err(PickleError::MissingRecord { path: path.to_path_buf(), key: name })
                    }
                    Err(source) => return Err(PickleError::Zip { path: path.to_path_buf(), source }),
                };
                // Sizes in the archive and the pickle are untrusted: never reserve more than the file holds.
                let mut bytes = Vec::with_capacity(record.size().min(*file_len) as usize);
                // Reading to the end lets the zip crate verify the record's CRC.
                record
                    .read_to_end(&mut bytes)
                    .map_err(|e| PickleError::Zip { path: path.to_path_buf(), source: e.into() })?;
                if bytes.len() < nbytes {
                    return Err(short(name, bytes.len() as u64));
                }
                bytes.truncate(nbytes);
                Ok(bytes)
            }
            Storages::Legacy { file, offsets } => {
                let &(start, len) = offsets
                    .get(&s.key)
                    .ok_or_else(|| PickleError::MissingRecord { path: path.to_path_buf(), key: s.key.to_string() })?;
                if len < nbytes as u64 {
                    return Err(short(s.key.to_string(), len));
                }
                file.seek(SeekFrom::Start(start)).map_err(|e| io_error(path, e))?;
                // `len` was checked against the file length, so this reservation is bounded.
                let mut bytes = vec![0u8; nbytes];
                file.read_exact(&mut bytes).map_err(|e| io_error(path, e))?;
                Ok(bytes)
            }
        }
    }
}

fn open_zip(path: &Path, file: File) -> Result<(Value, Storages)> {
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let zip_err = |source| PickleError::Zip { path: path.to_path_buf(), source };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    // The archive folder is the file stem or "archive", depending on the torch version: take the top-level
    // folder holding data.pkl.
    let prefix = archive
        .file_names()
        .find_map(|n| n.strip_suffix("data.pkl").filter(|p| p.ends_with('/') && p.matches('/').count() == 1))
        .map(str::to_string)
        .ok_or_else(|| PickleError::MissingDataPkl { path: path.to_path_buf() })?;
    let mut read_record = |name: &str| -> Result<Option<Vec<u8>>> {
        let mut record = match archive.by_name(name) {
            Ok(r) => r,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(source) => return Err(zip_err(source)),
        };
        let mut bytes = Vec::new();
        record.read_to_end(&mut bytes).map_err(|e| zip_err(e.into()))?;
        Ok(Some(bytes))
    };
    // Files without a byteorder record predate it and are little-endian.
    if let Some(order) = read_record(&format!("{prefix}byteorder"))? {
        let order = String::from_utf8_lossy(&order).trim().to_string();
        if order != "little" {
            return Err(PickleError::ByteOrder { path: path.to_path_buf(), order });
        }
    }
    let pkl = read_record(&format!("{prefix}data.pkl"))?
        .ok_or_else(|| PickleError::MissingDataPkl { path: path.to_path_buf() })?;
    let root = Vm::new(pkl.as_slice()).load().map_err(in_file(path))?;
    Ok((root, Storages::Zip { archive, prefix, file_len }))
}

/// `torch.serialization.MAGIC_NUMBER`, the first pickle of a legacy file.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL_VERSION: i128 = 1001;

fn open_legacy(path: &Path, file: File) -> Result<(Value, Storages)> {
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let mut file = BufReader::new(file);
    let mut vm = Vm::new(&mut file);
    let not_checkpoint = || PickleError::NotCheckpoint { path: path.to_path_buf() };
    match vm.load() {
        Ok(Value::Int(LEGACY_MAGIC)) => {}
        Ok(_) | Err(DataError::UnsupportedOpcode { .. } | DataError::Malformed(_)) => return Err(not_checkpoint()),
        Err(e) => return Err(in_file(path)(e)),
    }
    if !matches!(vm.load().map_err(in_file(path))?, Value::Int(LEGACY_PROTOCOL_VERSION)) {
        return Err(bad(path, "unknown legacy protocol version"));
    }
    if let Value::Dict(info) = vm.load().map_err(in_file(path))? {
        let big_endian = info
            .borrow()
            .0
            .chunks_exact(2)
            .any(|p| matches!((&p[0], &p[1]), (Value::Str(k), Value::Bool(false)) if &**k == "little_endian"));
        if big_endian {
            return Err(PickleError::ByteOrder { path: path.to_path_buf(), order: "big".into() });
        }
    }
    let root = vm.load().map_err(in_file(path))?;
    let keys = vm.load().map_err(in_file(path))?;
    let elem_sizes = std::mem::take(&mut vm.elem_sizes);
    drop(vm);

    // The storages follow in the order of `keys`, each as an i64 element count and its bytes: step over
    // them to learn where each starts.
    let Value::List(keys) = keys else {
        return Err(bad(path, "legacy storage key list is missing"));
    };
    let mut offsets = HashMap::new();
    let mut pos = file.stream_position().map_err(|e| io_error(path, e))?;
    for key in keys.borrow().0.iter() {
        let Value::Str(key) = key else {
            return Err(bad(path, "legacy storage key is not a string"));
        };
        let &elem_size = elem_sizes
            .get(key)
            .ok_or_else(|| bad(path, format!("legacy storage `{key}` is listed but never referenced")))?;
        file.seek(SeekFrom::Start(pos)).map_err(|e| io_error(path, e))?;
        let mut count = [0u8; 8];
        file.read_exact(&mut count).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                PickleError::Truncated { path: path.to_path_buf(), what: format!("storage `{key}` is missing") }
            }
            _ => io_error(path, e),
        })?;
        let numel = u64::try_from(i64::from_le_bytes(count)).map_err(|_| bad(path, "negative storage size"))?;
        let start = pos + 8;
        let len = numel.checked_mul(elem_size as u64);
        pos = len.and_then(|n| n.checked_add(start)).filter(|&end| end <= file_len).ok_or_else(|| {
            PickleError::Truncated {
                path: path.to_path_buf(),
                what: format!("storage `{key}` ends past the end of the file ({file_len} bytes)"),
            }
        })?;
        offsets.insert(key.clone(), (start, pos - start));
    }
    Ok((root, Storages::Legacy { file, offsets }))
}

// ---------------------------------------------------------------------------------------------------------
// The pickle machine

/// A reference to a storage, from a persistent id.
#[derive(Clone)]
struct StorageRef {
    key: Rc<str>,
    elem_size: usize,
    dtype: DType,
    numel: usize,
}

/// A tensor as `_rebuild_tensor_v2`/`_v3` describes it; its storage is read later, and only if it is part
/// of the state dict.
struct TensorRef {
    storage: StorageRef,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// Values of a tuple or list, or the flattened key/value pairs of a dict.
#[derive(Default)]
struct Items(Vec<Value>);

impl Drop for Items {
    // Dropping nested containers recursively could overflow the stack on a hostile, deeply nested pickle;
    // unnest them into one flat work list instead.
    fn drop(&mut self) {
        let mut todo = std::mem::take(&mut self.0);
        while let Some(v) = todo.pop() {
            match v {
                Value::Tuple(rc) => {
                    if let Ok(mut items) = Rc::try_unwrap(rc) {
                        todo.append(&mut items.0);
                    }
                }
                Value::List(rc) | Value::Dict(rc) => {
                    if let Ok(cell) = Rc::try_unwrap(rc) {
                        todo.append(&mut cell.into_inner().0);
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    /// i128 holds the legacy magic number; larger ints become `Opaque`.
    Int(i128),
    Float,
    Str(Rc<str>),
    /// Shared, so that memoising a large buffer (a numpy array's data) does not copy it.
    Bytes(Rc<Vec<u8>>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<Items>>),
    /// `module`, `name` of a GLOBAL.
    Global(Rc<(String, String)>),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
    /// A tensor (or its storage) that this reader cannot decode, with what is unsupported.
    Unsupported(Rc<str>),
    /// `numpy.dtype(code, ...)`; its byte order comes with BUILD, so it is shared to be seen set.
    NumpyDtype(Rc<RefCell<NumpyDtype>>),
    /// A numpy array, or why it cannot be rebuilt; `_reconstruct` makes it empty and BUILD fills it.
    NdArray(Rc<RefCell<std::result::Result<NumpyArray, String>>>),
    /// Any other object.
    Opaque,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Unsupported(_) => "unsupported tensor",
            Value::NumpyDtype(_) => "numpy dtype",
            Value::NdArray(_) => "numpy array",
            Value::Opaque => "object",
        }
    }

    fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(Items(items)))
    }
}

const PROTO: u8 = 0x80;

/// Names of the opcodes this machine rejects, for the error message.
fn unsupported_opcode_name(code: u8) -> &'static str {
    match code {
        b'P' => "PERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "<unknown>",
    }
}

struct Vm<R> {
    input: R,
    /// Bytes consumed, for error messages.
    pos: u64,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Element size of every storage key seen, to step over legacy storages.
    elem_sizes: HashMap<Rc<str>, usize>,
}

impl<R: Read> Vm<R> {
    fn new(input: R) -> Self {
        Vm { input, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), elem_sizes: HashMap::new() }
    }

    fn bad(&self, what: impl fmt::Display) -> DataError {
        DataError::Malformed(format!("{what} (near byte {})", self.pos))
    }

    fn read_error(&self, e: io::Error) -> DataError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => DataError::Truncated { pos: self.pos },
            _ => DataError::Io(e),
        }
    }

    fn bytes<const N: usize>(&mut self) -> DataResult<[u8; N]> {
        let mut buf = [0u8; N];
        self.input.read_exact(&mut buf).map_err(|e| self.read_error(e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn byte(&mut self) -> DataResult<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u32(&mut self) -> DataResult<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> DataResult<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// `len` bytes; reading grows the buffer as data arrives, so a bogus length cannot allocate up front.
    fn blob(&mut self, len: u64) -> DataResult<Vec<u8>> {
        let mut buf = Vec::new();
        (&mut self.input).take(len).read_to_end(&mut buf).map_err(|e| self.read_error(e))?;
        self.pos += buf.len() as u64;
        if (buf.len() as u64) < len {
            return Err(self.read_error(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(buf)
    }

    /// A newline-terminated text argument, without the newline.
    fn line(&mut self) -> DataResult<String> {
        let mut buf = Vec::new();
        loop {
            match self.byte()? {
                b'\n' => return Ok(String::from_utf8_lossy(&buf).into_owned()),
                b => buf.push(b),
            }
        }
    }

    fn text(&mut self, len: u64) -> DataResult<Value> {
        // Lossy: Python may store lone surrogates, which Rust strings cannot hold.
        let bytes = self.blob(len)?;
        Ok(Value::Str(String::from_utf8_lossy(&bytes).into()))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> DataResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&mut self) -> DataResult<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        let last = self.stack.len() - 1; // > floor >= 0
        Ok(&mut self.stack[last])
    }

    fn pop_mark(&mut self) -> DataResult<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u32) -> DataResult<Value> {
        self.memo.get(&key).cloned().ok_or_else(|| self.bad(format!("memo key {key} is not set")))
    }

    fn memo_put(&mut self, key: u32) -> DataResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn int_from_le(&self, bytes: &[u8]) -> Value {
        // Two's complement, little-endian; ints wider than i128 are of no use here.
        if bytes.len() > 16 {
            return Value::Opaque;
        }
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut wide = [fill; 16];
        wide[..bytes.len()].copy_from_slice(bytes);
        Value::Int(i128::from_le_bytes(wide))
    }

    /// Runs one pickle up to its STOP and returns its value.
    fn load(&mut self) -> DataResult<Value> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        loop {
            let at = self.pos;
            let code = self.byte()?;
            match code {
                PROTO => {
                    let version = self.byte()?;
                    if version > 5 {
                        return Err(self.bad(format!("pickle protocol {version} is newer than 5")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // POP: Python pops the mark when the stack above it is empty.
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() > floor {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.bytes()?);
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.bytes()?);
                    self.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let len = if code == 0x8a { self.byte()?.into() } else { self.u32()?.into() };
                    let bytes = self.blob(len)?;
                    let v = self.int_from_le(&bytes);
                    self.push(v);
                }
                b'I' | b'L' => {
                    // Protocol 0 INT/LONG: decimal text; "01"/"00" are True/False.
                    let line = self.line()?;
                    let v = match line.as_str() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => s
                            .trim_end_matches('L')
                            .parse::<i128>()
                            .map(Value::Int)
                            .map_err(|_| self.bad(format!("bad integer {s:?}")))?,
                    };
                    self.push(v);
                }
                b'G' => {
                    self.bytes::<8>()?;
                    self.push(Value::Float);
                }
                b'F' => {
                    self.line()?;
                    self.push(Value::Float);
                }
                b'X' => {
                    let len = self.u32()?.into();
                    let v = self.text(len)?;
                    self.push(v);
                }
                0x8c | b'U' => {
                    let len = self.byte()?.into();
                    let v = self.text(len)?;
                    self.push(v);
                }
                0x8d => {
                    let len = self.u64()?;
                    let v = self.text(len)?;
                    self.push(v);
                }
                b'T' => {
                    let len = self.u32()?.into();
                    let v = self.text(len)?;
                    self.push(v);
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let len = match code {
                        b'C' => self.byte()?.into(),
                        b'B' => self.u32()?.into(),
                        _ => self.u64()?,
                    };
                    let bytes = self.blob(len)?;
                    self.push(Value::Bytes(Rc::new(bytes)));
                }
                b')' => self.push(Value::tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(code - 0x84);
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.bad("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::tuple(items));
                }
                b']' | 0x8f => self.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(Items(items)))));
                }
                0x91 => {
                    // FROZENSET: order does not matter here, a tuple will do.
                    let items = self.pop_mark()?;
                    self.push(Value::tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend(vec![v])?;
                }
                b'e' | 0x90 => {
                    // APPENDS, ADDITEMS (sets are kept as lists).
                    let items = self.pop_mark()?;
                    self.extend(items)?;
                }
                b'}' => self.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.bad("DICT with an odd number of items"));
                    }
                    self.push(Value::Dict(Rc::new(RefCell::new(Items(items)))));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.bad("SETITEMS with an odd number of items"));
                    }
                    self.set_items(items)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.bad(format!("bad memo key {line:?}")))?;
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'h' => {
                    let key = self.byte()?.into();
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'j' => {
                    let key = self.u32()?;
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'p' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.bad(format!("bad memo key {line:?}")))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.byte()?.into();
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).map_err(|_| self.bad("memo too large"))?;
                    self.memo_put(key)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.bad("STACK_GLOBAL needs two strings"));
                    };
                    self.push(Value::Global(Rc::new((module.to_string(), name.to_string()))));
                }
                b'R' | 0x81 => {
                    // REDUCE calls func(*args); NEWOBJ makes cls.__new__(cls, *args). Both are "build this
                    // class from these arguments" here.
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.push(v);
                }
                0x92 => {
                    // NEWOBJ_EX: cls, args, kwargs.
                    self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state. Only numpy's arrays and dtypes need theirs here; others
                    // (e.g. an OrderedDict's `_metadata`) are left as they are.
                    let state = self.pop()?;
                    match self.top()? {
                        Value::NdArray(array) => *array.borrow_mut() = array_from_state(&state),
                        Value::NumpyDtype(dtype) => dtype.borrow_mut().set_state(&state),
                        _ => {}
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v);
                }
                _ => return Err(DataError::UnsupportedOpcode { name: unsupported_opcode_name(code), code, pos: at }),
            }
        }
    }

    /// APPEND/APPENDS/ADDITEMS onto the list below; items added to any other object are dropped.
    fn extend(&mut self, mut items: Vec<Value>) -> DataResult<()> {
        match self.top()? {
            Value::List(list) => list.borrow_mut().0.append(&mut items),
            Value::Opaque => {}
            other => {
                let kind = other.kind();
                return Err(self.bad(format!("APPEND to a value of type {kind}")));
            }
        }
        Ok(())
    }

    /// SETITEM/SETITEMS onto the dict below (`items` are key/value pairs, flattened).
    fn set_items(&mut self, mut items: Vec<Value>) -> DataResult<()> {
        match self.top()? {
            Value::Dict(dict) => dict.borrow_mut().0.append(&mut items),
            Value::Opaque => {}
            other => {
                let kind = other.kind();
                return Err(self.bad(format!("SETITEM on a value of type {kind}")));
            }
        }
        Ok(())
    }

    /// `('storage', storage_class, key, location, numel[, view_metadata])` from torch.save.
    fn persistent_load(&mut self, pid: Value) -> DataResult<Value> {
        let Value::Tuple(pid) = pid else {
            return Err(self.bad(format!("persistent id is of type {}, not tuple", pid.kind())));
        };
        match pid.0.as_slice() {
            // Legacy files also record the source of pickled nn.Module classes.
            [Value::Str(kind), ..] if &**kind == "module" => Ok(Value::Opaque),
            [Value::Str(kind), Value::Global(class), Value::Str(key), _location, Value::Int(numel), rest @ ..]
                if &**kind == "storage" =>
            {
                let numel = usize::try_from(*numel).map_err(|_| self.bad("bad storage size"))?;
                let Some((elem_size, dtype)) = storage_class(&class.1) else {
                    return Ok(Value::Unsupported(format!("storage type {}.{}", class.0, class.1).into()));
                };
                self.elem_sizes.insert(key.clone(), elem_size);
                match (dtype, rest) {
                    (Ok(dtype), [] | [Value::None]) => {
                        Ok(Value::Storage(StorageRef { key: key.clone(), elem_size, dtype, numel }))
                    }
                    // Views into storages date from torch <= 0.3.
                    (Ok(_), _) => Ok(Value::Unsupported("a legacy storage view".into())),
                    (Err(dtype), _) => Ok(Value::Unsupported(
                        format!("dtype torch.{dtype} (storage type {}.{})", class.0, class.1).into(),
                    )),
                }
            }
            _ => Err(self.bad("persistent id is not ('storage', class, key, location, numel)")),
        }
    }

    /// The result of calling `func(*args)`: tensors and dicts for the functions torch.save uses, an opaque
    /// value for anything else.
    fn call(&self, mut func: Value, mut args: Value) -> DataResult<Value> {
        loop {
            let (Value::Global(global), Value::Tuple(items)) = (&func, &args) else {
                return Ok(Value::Opaque);
            };
            let a = items.0.as_slice();
            match (global.0.as_str(), global.1.as_str()) {
                ("collections", "OrderedDict" | "defaultdict") | ("builtins" | "__builtin__", "dict") => {
                    return Ok(Value::Dict(Rc::default()))
                }
                ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => return self.rebuild_tensor(a, None),
                ("torch._utils", "_rebuild_tensor_v3") => return self.rebuild_tensor(a, Some(a.get(6))),
                // nn.Parameter: the tensor is the first argument.
                ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                    return Ok(a.first().cloned().unwrap_or(Value::Opaque))
                }
                // A tensor with Python attributes: (rebuild function, type, its arguments, attributes). A loop,
                // not recursion, so nesting cannot overflow the stack.
                ("torch._tensor", "_rebuild_from_type" | "_rebuild_from_type_v2") => match a {
                    [f, _, inner, ..] => {
                        let (f, inner) = (f.clone(), inner.clone());
                        func = f;
                        args = inner;
                    }
                    _ => return Err(self.bad("_rebuild_from_type_v2 needs 4 arguments")),
                },
                ("torch._utils", name) if name.starts_with("_rebuild") => {
                    return Ok(Value::Unsupported(format!("torch._utils.{name} (sparse, quantized, ...)").into()))
                }
                // numpy 2 names its modules `numpy._core`, numpy 1 `numpy.core`. Protocols 2 to 4 pickle an array
                // as `_reconstruct(ndarray, ...)` + BUILD, protocol 5 as `_frombuffer(data, dtype, shape, order)`.
                ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                    // Subclasses (np.matrix, masked arrays) have other states.
                    let ndarray = matches!(a.first(), Some(Value::Global(g)) if g.0 == "numpy" && g.1 == "ndarray");
                    let empty = || Value::NdArray(Rc::new(RefCell::new(Err("it has no BUILD state".into()))));
                    return Ok(if ndarray { empty() } else { Value::Opaque });
                }
                ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => {
                    return Ok(Value::NdArray(Rc::new(RefCell::new(array_from_buffer(a)))))
                }
                ("numpy", "dtype") => match a {
                    [Value::Str(code), ..] => {
                        return Ok(Value::NumpyDtype(Rc::new(RefCell::new(NumpyDtype {
                            code: code.to_string(),
                            order: String::new(),
                        }))))
                    }
                    _ => return Ok(Value::Opaque),
                },
                // Protocol 2 pickles bytes as `_codecs.encode(text, "latin1")`, one char per byte...
                ("_codecs", "encode") => match a {
                    [Value::Str(text), Value::Str(encoding)] if matches!(&**encoding, "latin1" | "latin-1") => {
                        let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(c).ok()).collect();
                        let bytes = bytes.ok_or_else(|| self.bad("latin1 text with a char beyond U+00FF"))?;
                        return Ok(Value::Bytes(Rc::new(bytes)));
                    }
                    _ => return Ok(Value::Opaque),
                },
                // ...and empty bytes as `bytes()`.
                ("builtins" | "__builtin__", "bytes") if a.is_empty() => return Ok(Value::Bytes(Rc::default())),
                _ => return Ok(Value::Opaque),
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, or `_v3` whose 7th argument is the dtype
    /// (torch uses it for dtypes without a legacy storage class, with an untyped byte storage).
    fn rebuild_tensor(&self, a: &[Value], dtype: Option<Option<&Value>>) -> DataResult<Value> {
        let [storage, offset, size, stride, ..] = a else {
            return Err(self.bad("_rebuild_tensor_v2 needs at least 4 arguments"));
        };
        let storage = match storage {
            Value::Storage(s) => s.clone(),
            Value::Unsupported(what) => return Ok(Value::Unsupported(what.clone())),
            other => return Err(self.bad(format!("tensor storage is of type {}", other.kind()))),
        };
        let dtype = match dtype {
            None => storage.dtype,
            Some(Some(Value::Global(g))) => match DType::from_torch_name(&g.1) {
                Some(d) if g.0 == "torch" => d,
                _ => return Ok(Value::Unsupported(format!("dtype {}.{}", g.0, g.1).into())),
            },
            Some(_) => return Err(self.bad("_rebuild_tensor_v3 without a dtype")),
        };
        let usize_of = |v: &Value| match v {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        };
        let dims = |v: &Value| -> DataResult<Vec<usize>> {
            match v {
                Value::Tuple(t) => {
                    t.0.iter().map(|d| usize_of(d).ok_or_else(|| self.bad("bad tensor size or stride"))).collect()
                }
                _ => Err(self.bad(format!("tensor size or stride is of type {}", v.kind()))),
            }
        };
        let offset = usize_of(offset).ok_or_else(|| self.bad("bad tensor storage offset"))?;
        let (shape, strides) = (dims(size)?, dims(stride)?);
        if shape.len() != strides.len() {
            return Err(self.bad("tensor size and stride differ in length"));
        }
        Ok(Value::Tensor(Rc::new(TensorRef { storage, dtype, offset, shape, strides })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_numpy_refuses_other_pickles() {
        // pickle.dumps(5, protocol=4) is an int, not an array.
        let int = b"\x80\x04K\x05.";
        assert!(matches!(read_numpy(int), Err(DataError::NotNumpy(m)) if m.contains("int")));
        let trailing = b"\x80\x04K\x05.K";
        assert!(matches!(read_numpy(trailing), Err(DataError::Malformed(m)) if m.contains("1 bytes follow")));
        // numpy._core.multiarray._reconstruct(numpy.ndarray, ...) without its BUILD.
        let mut unbuilt = b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93".to_vec();
        unbuilt.extend(b"\x8c\x05numpy\x8c\x07ndarray\x93\x85R.");
        assert!(matches!(read_numpy(&unbuilt), Err(DataError::NotNumpy(m)) if m.contains("no BUILD state")));
    }
}
