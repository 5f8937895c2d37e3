//! Fashion-MNIST (Zalando Research, 2017): 70,000 grey 28x28 photos of clothing in 10 classes, 7,000 a
//! class, read from the files Debian's `dataset-fashion-mnist` package installs (scripts/system-deps.sh
//! installs it).
//!
//! The package puts the four files of the original distribution in [`DIR`], gzip'd as they were published:
//! `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz` (60,000 images), `t10k-images-idx3-ubyte.gz`
//! and `t10k-labels-idx1-ubyte.gz` (10,000). Each inflates to an IDX file: a big-endian header (magic
//! `0x00000803` then the count, rows and columns for images; magic `0x00000801` then the count for labels)
//! followed by one byte per pixel, image after image, or one byte per label. The magic numbers, the 28x28
//! size, that a file holds exactly the bytes its header announces, that the images and labels of a split
//! are as many, and that every label is below 10 are checked, so a different or damaged file fails with an
//! error naming it instead of yielding garbage.
//!
//! [`load`] keeps the training images, then the test images, and removes exact copies as Animal-MNIST's
//! loader does (the first occurrence stays; copies with different labels all go). The Debian files
//! (0.0~git20200523.55506a9-1) hold none: all 70,000 images are distinct (measured with numpy, and checked
//! by the tests), so nothing is removed.
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3};

use crate::data::animal_mnist::{deduplicate, Objects, CLASSES, PIXELS, SIDE};

/// Where Debian's `dataset-fashion-mnist` installs the files.
pub const DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Class names in label order (the data set's README).
pub const CLASS_NAMES: [&str; CLASSES] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];
/// The training images (60,000) and their labels.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// The test images (10,000) and their labels.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// IDX magic numbers: unsigned bytes in 3 dimensions (images), in 1 dimension (labels).
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const INSTALL: &str = "install Debian's dataset-fashion-mnist (scripts/system-deps.sh does)";
const REINSTALL: &str = "reinstall it: apt-get install --reinstall dataset-fashion-mnist";

#[derive(Debug, thiserror::Error)]
pub enum FashionMnistError {
    #[error("no Fashion-MNIST folder {}: {INSTALL}", path.display())]
    DirMissing { path: PathBuf },
    #[error("{} is missing: {INSTALL}", path.display())]
    FileMissing { path: PathBuf },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} is not valid gzip (expected a gzip'd IDX file; {REINSTALL}): {source}", path.display())]
    Gzip { path: PathBuf, source: io::Error },
    #[error("{}: magic number 0x{found:08x}, expected 0x{expected:08x} (IDX {what}); {REINSTALL}", path.display())]
    Magic { path: PathBuf, what: &'static str, expected: u32, found: u32 },
    #[error("{}: images of {rows}x{cols} pixels, expected {SIDE}x{SIDE}", path.display())]
    Size { path: PathBuf, rows: u32, cols: u32 },
    #[error(
        "{} inflates to {found} bytes; its header ({header}) announces {expected} bytes: the file is {}; {REINSTALL}",
        path.display(), if found < expected { "truncated" } else { "longer than announced" }
    )]
    Length { path: PathBuf, header: String, expected: u64, found: u64 },
    #[error("{} holds {images} images but {} holds {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch { images_path: PathBuf, labels_path: PathBuf, images: usize, labels: usize },
    #[error("{}: label {label} of image {index} is outside 0..{CLASSES}", path.display())]
    LabelOutOfRange { path: PathBuf, index: usize, label: u8 },
}

/// All 70,000 images and labels (training then test) in file order, before de-duplication: images
/// `[n, 28, 28]`, labels in `0..10`.
pub fn read(dir: &Path) -> Result<(Array3<u8>, Array1<i64>), FashionMnistError> {
    if !dir.is_dir() {
        return Err(FashionMnistError::DirMissing { path: dir.into() });
    }
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (images_file, labels_file) in [(TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)] {
        let (images_path, labels_path) = (dir.join(images_file), dir.join(labels_file));
        let pixels = read_idx(&images_path, IMAGES_MAGIC)?;
        let split_labels = read_idx(&labels_path, LABELS_MAGIC)?;
        let n = pixels.len() / PIXELS;
        if n != split_labels.len() {
            return Err(FashionMnistError::CountMismatch {
                images_path,
                labels_path,
                images: n,
                labels: split_labels.len(),
            });
        }
        if let Some(index) = split_labels.iter().position(|&l| l as usize >= CLASSES) {
            return Err(FashionMnistError::LabelOutOfRange { path: labels_path, index, label: split_labels[index] });
        }
        images.extend_from_slice(&pixels);
        labels.extend(split_labels.iter().map(|&l| i64::from(l)));
    }
    let images = Array3::from_shape_vec((labels.len(), SIDE, SIDE), images).expect("whole images");
    Ok((images, Array1::from(labels)))
}

/// Reads the four files in `dir` (usually [`DIR`]) and removes duplicate images.
pub fn load(dir: &Path) -> Result<Objects, FashionMnistError> {
    let (images, labels) = read(dir)?;
    Ok(deduplicate(images.as_slice().expect("built in standard order"), &labels))
}

/// The data after the header of the gzip'd IDX file at `path`, whose magic number must be `magic`
/// (images: 28x28 checked here) and whose length must be what the header announces.
fn read_idx(path: &Path, magic: u32) -> Result<Vec<u8>, FashionMnistError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => FashionMnistError::FileMissing { path: path.into() },
        _ => FashionMnistError::Open { path: path.into(), source },
    })?;
    let mut idx = flate2::read::MultiGzDecoder::new(BufReader::new(file));
    let (what, header_len) = if magic == IMAGES_MAGIC { ("images", 16) } else { ("labels", 8) };
    let mut header = Vec::new();
    read_some(&mut idx, header_len, &mut header, path)?;
    let word = |k: usize| header.get(4 * k..4 * k + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
    let found = word(0).unwrap_or(0);
    if header.len() >= 4 && found != magic {
        return Err(FashionMnistError::Magic { path: path.into(), what, expected: magic, found });
    }
    if header.len() < header_len as usize {
        return Err(FashionMnistError::Length {
            path: path.into(),
            header: format!("an IDX {what} header"),
            expected: header_len,
            found: header.len() as u64,
        });
    }
    let count = word(1).unwrap();
    let (per_item, header_text) = if magic == IMAGES_MAGIC {
        let (rows, cols) = (word(2).unwrap(), word(3).unwrap());
        if (rows, cols) != (SIDE as u32, SIDE as u32) {
            return Err(FashionMnistError::Size { path: path.into(), rows, cols });
        }
        (PIXELS as u64, format!("{count} images of {rows}x{cols}"))
    } else {
        (1, format!("{count} labels"))
    };
    let expected = u64::from(count) * per_item;
    let mut data = Vec::new();
    // One byte more than announced is enough to tell a longer file.
    read_some(&mut idx, expected + 1, &mut data, path)?;
    if data.len() as u64 != expected {
        return Err(FashionMnistError::Length {
            path: path.into(),
            header: header_text,
            expected: header_len + expected,
            found: header_len + data.len() as u64,
        });
    }
    Ok(data)
}

/// Up to `limit` more inflated bytes of `path` into `out` (fewer at the end of the data).
fn read_some<R: Read>(reader: &mut R, limit: u64, out: &mut Vec<u8>, path: &Path) -> Result<(), FashionMnistError> {
    reader.take(limit).read_to_end(out).map_err(|source| FashionMnistError::Gzip { path: path.into(), source })?;
    Ok(())
}
