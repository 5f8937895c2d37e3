//! Animal-MNIST (PyPI `animal-mnist` 0.4): 10,000 grey 28x28 animal silhouettes in 10 classes, read
//! straight from the package's wheel without Python.
//!
//! The wheel is a zip archive; two of its members are gzip'd pickles (protocol 4) of numpy arrays: `u1`
//! images `[10000, 28, 28]` and `<i8` labels `[10000]`, sorted by class. [`pickle::read_numpy`] rebuilds
//! them; the structure, shape, dtype and byte length are checked, so a different file fails with an error
//! that says what was expected instead of yielding garbage.
//!
//! 284 of the images are exact copies of others; [`load`] keeps the first occurrence of each distinct image
//! so that no image can land in both a training and a test split.
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3, ArrayView2, Axis, Ix1};

use crate::pickle::{self, NumpyArray};

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
    /// Grey values, `[len(), 28, 28]`.
    pub images: Array3<u8>,
    /// Labels in `0..CLASSES`, one per image.
    pub labels: Array1<i64>,
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

    /// The 28x28 grey values of image `i`. Panics if `i >= len()`, like indexing.
    pub fn image(&self, i: usize) -> ArrayView2<'_, u8> {
        self.images.index_axis(Axis(0), i)
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
    #[error("member {member} of {}: unexpected pickle content: {source}", path.display())]
    Pickle { path: PathBuf, member: &'static str, source: pickle::DataError },
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
    let labels = labels.to_array::<i64>().expect("checked above: <i8").into_dimensionality::<Ix1>().expect("and 1-d");
    if let Some(index) = labels.iter().position(|l| !(0..CLASSES as i64).contains(l)) {
        return Err(ObjectsError::LabelOutOfRange { path: wheel.into(), index, label: labels[index] });
    }
    // `|u1` data in C order are the grey values themselves, image after image.
    Ok(deduplicate(&images.data, &labels))
}

/// Inflates one gzip'd pickle of the wheel and rebuilds the numpy array in it.
fn read_array<R: Read + io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    wheel: &Path,
    member: &'static str,
) -> Result<NumpyArray, ObjectsError> {
    let gzipped = read_member(archive, wheel, member)?;
    let mut pickle = Vec::new();
    flate2::read::MultiGzDecoder::new(gzipped.as_slice())
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut pickle)
        .map_err(|source| ObjectsError::Gzip { path: wheel.into(), member, source })?;
    if pickle.len() as u64 > MAX_MEMBER_BYTES {
        return Err(ObjectsError::TooLarge { path: wheel.into(), member });
    }
    pickle::read_numpy(&pickle).map_err(|source| ObjectsError::Pickle { path: wheel.into(), member, source })
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
    array: &NumpyArray,
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

/// Keeps the first occurrence of every distinct image; an image whose copies disagree on the label is
/// dropped with all its copies, since no label for it can be trusted.
pub(crate) fn deduplicate(images: &[u8], labels: &Array1<i64>) -> Objects {
    let mut copies: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, image) in images.chunks_exact(PIXELS).enumerate() {
        copies.entry(image).or_default().push(i);
    }
    let (mut kept_images, mut kept_labels) = (Vec::new(), Vec::new());
    let (mut duplicates_removed, mut conflicting_removed) = (0, 0);
    // Walking the images in file order (not the map's) keeps the result independent of hashing.
    for (i, image) in images.chunks_exact(PIXELS).enumerate() {
        let group = &copies[image];
        if group[0] != i {
            continue;
        }
        if group.iter().all(|&j| labels[j] == labels[i]) {
            kept_images.extend_from_slice(image);
            kept_labels.push(labels[i]);
            duplicates_removed += group.len() - 1;
        } else {
            conflicting_removed += group.len();
        }
    }
    Objects {
        images: Array3::from_shape_vec((kept_labels.len(), SIDE, SIDE), kept_images).expect("whole images"),
        labels: Array1::from(kept_labels),
        duplicates_removed,
        conflicting_removed,
    }
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
        assert_eq!(objects.labels.to_vec(), [3]);
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
            assert!(pickle::read_numpy(&labels[..end]).is_err(), "truncated at {end}");
        }
        assert!(pickle::read_numpy(&labels).is_ok());
    }
}
