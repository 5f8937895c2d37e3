//! The Fashion-MNIST loader: small gzip'd IDX files written here byte by byte come back as written (copies
//! removed as Animal-MNIST's are), damaged ones fail with errors naming the file; on the files Debian's
//! dataset-fashion-mnist installs, what the loader reads equals what numpy parses from them on its own.
use std::io::Write;
use std::path::Path;
use std::process::Command;

use robustvit::data::fashion_mnist::{self, DIR, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

use crate::support::{python, scratch};

const PIXELS: usize = 28 * 28;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An IDX images file: magic 0x00000803, count, rows, columns (big-endian), then the pixels.
fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = [0x803, count, rows, cols].iter().flat_map(|w: &u32| w.to_be_bytes()).collect();
    bytes.extend_from_slice(pixels);
    bytes
}

/// An IDX labels file: magic 0x00000801, count, then the labels.
fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = [0x801, labels.len() as u32].iter().flat_map(|w: &u32| w.to_be_bytes()).collect();
    bytes.extend_from_slice(labels);
    bytes
}

/// Image `k` of the fixture: every pixel a different function of `k`.
fn image(k: usize) -> Vec<u8> {
    (0..PIXELS).map(|p| ((k * 53 + p * 7 + p / 28) % 256) as u8).collect()
}

/// Three training and three test images: test 0 copies training 1 with its label (a duplicate), test 2
/// copies training 2 with another label (a conflict: both go).
fn fixture() -> [(&'static str, Vec<u8>); 4] {
    let train: Vec<u8> = [image(0), image(1), image(2)].concat();
    let test: Vec<u8> = [image(1), image(3), image(2)].concat();
    [
        (TRAIN_IMAGES, idx_images(3, 28, 28, &train)),
        (TRAIN_LABELS, idx_labels(&[9, 4, 0])),
        (TEST_IMAGES, idx_images(3, 28, 28, &test)),
        (TEST_LABELS, idx_labels(&[4, 7, 1])),
    ]
}

/// A folder with the fixture's four files, gzip'd, `replaced` (name, uncompressed bytes) swapped in.
fn folder(name: &str, replaced: Option<(&str, Vec<u8>)>) -> std::path::PathBuf {
    let dir = scratch(&format!("fashion_mnist/{name}"));
    for (file, bytes) in fixture() {
        std::fs::write(dir.join(file), gzip(&bytes)).unwrap();
    }
    if let Some((file, bytes)) = replaced {
        std::fs::write(dir.join(file), gzip(&bytes)).unwrap();
    }
    dir
}

#[test]
fn fashion_mnist_reads_written_idx_files_back_and_removes_copies() {
    let dir = folder("good", None);
    let (images, labels) = fashion_mnist::read(&dir).unwrap();
    assert_eq!(images.shape(), [6, 28, 28]);
    for (i, k) in [0, 1, 2, 1, 3, 2].into_iter().enumerate() {
        assert!(images.slice(ndarray::s![i, .., ..]).iter().eq(&image(k)), "image {i} is not fixture image {k}");
    }
    assert_eq!(labels.to_vec(), [9, 4, 0, 4, 7, 1]);

    let objects = fashion_mnist::load(&dir).unwrap();
    assert_eq!((objects.duplicates_removed, objects.conflicting_removed), (1, 2));
    assert_eq!(objects.labels.to_vec(), [9, 4, 7]);
    assert_eq!(objects.images.shape(), [3, 28, 28]);
    for (i, k) in [0, 1, 3].into_iter().enumerate() {
        assert!(objects.image(i).iter().eq(&image(k)), "kept image {i} is not fixture image {k}");
    }
}

/// The error `load` gives on the fixture with `file` replaced by `bytes` (gzip'd); it names the file.
fn error(name: &str, file: &str, bytes: Vec<u8>) -> String {
    let dir = folder(name, Some((file, bytes)));
    let message = fashion_mnist::load(&dir).unwrap_err().to_string();
    assert!(message.contains(&dir.join(file).display().to_string()), "{message}");
    message
}

#[test]
fn fashion_mnist_damaged_files_fail_naming_the_file() {
    let [_, _, (_, test_images), _] = fixture();
    // Two and a half of the three images announced: 16 + 3 * 784 bytes expected.
    let cut = test_images[..16 + 2 * PIXELS + PIXELS / 2].to_vec();
    let m = error("truncated", TEST_IMAGES, cut);
    assert!(m.contains("truncated") && m.contains("3 images of 28x28") && m.contains("2368 bytes"), "{m}");
    let m = error("longer", TEST_IMAGES, [test_images.as_slice(), &[0]].concat());
    assert!(m.contains("longer than announced"), "{m}");
    // The images file in place of the labels.
    let m = error("magic", TRAIN_LABELS, test_images.clone());
    assert!(m.contains("magic number 0x00000803, expected 0x00000801"), "{m}");
    let m = error("size", TRAIN_IMAGES, idx_images(3, 28, 27, &[0; 3 * 28 * 27]));
    assert!(m.contains("28x27") && m.contains("expected 28x28"), "{m}");
    let m = error("label", TEST_LABELS, idx_labels(&[4, 10, 1]));
    assert!(m.contains("label 10 of image 1 is outside 0..10"), "{m}");
    let m = error("count", TEST_LABELS, idx_labels(&[4, 7]));
    assert!(m.contains("3 images") && m.contains("2 labels"), "{m}");

    // The gzip stream itself cut short, and a plain (not gzip'd) file.
    let dir = folder("cut_gzip", None);
    let whole = gzip(&test_images);
    std::fs::write(dir.join(TEST_IMAGES), &whole[..whole.len() / 2]).unwrap();
    let m = fashion_mnist::load(&dir).unwrap_err().to_string();
    assert!(m.contains(TEST_IMAGES) && m.contains("gzip"), "{m}");
    std::fs::write(dir.join(TEST_IMAGES), &test_images).unwrap();
    let m = fashion_mnist::load(&dir).unwrap_err().to_string();
    assert!(m.contains(TEST_IMAGES) && m.contains("not valid gzip"), "{m}");

    // Missing files and folder say how to install them.
    std::fs::remove_file(dir.join(TEST_LABELS)).unwrap();
    std::fs::write(dir.join(TEST_IMAGES), gzip(&test_images)).unwrap();
    let m = fashion_mnist::load(&dir).unwrap_err().to_string();
    assert!(m.contains(TEST_LABELS) && m.contains("dataset-fashion-mnist") && m.contains("system-deps.sh"), "{m}");
    let m = fashion_mnist::load(&dir.join("nowhere")).unwrap_err().to_string();
    assert!(m.contains("nowhere") && m.contains("dataset-fashion-mnist") && m.contains("system-deps.sh"), "{m}");
}

/// numpy's own reading of the four files in argv[1]: the count, the label histogram, the first image, the
/// first test image, the last image, the sum of all pixels; the distinct images, the distinct (image,
/// label) pairs, and the last image that is the first of its copies (all before de-duplication).
const NUMPY_READS: &str = r#"
import gzip, sys
import numpy as np
def idx(name, header):
    with gzip.open(f"{sys.argv[1]}/{name}") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)
x = np.concatenate([idx("train-images-idx3-ubyte.gz", 16), idx("t10k-images-idx3-ubyte.gz", 16)]).reshape(-1, 784)
y = np.concatenate([idx("train-labels-idx1-ubyte.gz", 8), idx("t10k-labels-idx1-ubyte.gz", 8)])
# Each row as one opaque value (compared as bytes, as np.unique(axis=0) compares them, 20x faster).
rows = lambda a: np.ascontiguousarray(a).view(np.dtype((np.void, a.shape[1]))).ravel()
_, first = np.unique(rows(x), return_index=True)
pairs = np.unique(rows(np.concatenate([x, y[:, None]], axis=1)))
print(len(x), len(y))
print(" ".join(str(c) for c in np.bincount(y, minlength=10)))
for i in [0, 60000, len(x) - 1, first.max()]:
    print(x[i].tobytes().hex())
print(int(x.sum(dtype=np.uint64)))
print(len(first), len(pairs))
"#;

fn hex(bytes: impl IntoIterator<Item = u8>) -> String {
    bytes.into_iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fashion_mnist_debian_files_agree_with_numpy() {
    let dir = Path::new(DIR);
    assert!(
        dir.join(TRAIN_IMAGES).is_file(),
        "{} is missing: run scripts/system-deps.sh (make test does), which installs Debian's dataset-fashion-mnist",
        dir.join(TRAIN_IMAGES).display()
    );
    let out = Command::new(python()).args(["-c", NUMPY_READS]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = said.lines().collect();
    let numbers = |line: &str| line.split(' ').map(|w| w.parse::<usize>().unwrap()).collect::<Vec<_>>();
    assert_eq!(numbers(lines[0]), [70_000, 70_000]);

    let (images, labels) = fashion_mnist::read(dir).unwrap();
    assert_eq!(images.shape(), [70_000, 28, 28]);
    let mut histogram = vec![0; 10];
    labels.iter().for_each(|&l| histogram[l as usize] += 1);
    assert_eq!(histogram, numbers(lines[1]));
    let image = |i: usize| hex(images.slice(ndarray::s![i, .., ..]).iter().copied());
    assert_eq!(image(0), lines[2], "first training image");
    assert_eq!(image(60_000), lines[3], "first test image");
    assert_eq!(image(69_999), lines[4], "last test image");
    assert_eq!(images.iter().map(|&v| v as u64).sum::<u64>(), lines[6].parse::<u64>().unwrap());

    let [distinct, distinct_pairs] = numbers(lines[7])[..] else { panic!("{}", lines[7]) };
    assert_eq!(distinct, distinct_pairs, "no image has copies with different labels");
    let objects = fashion_mnist::load(dir).unwrap();
    assert_eq!(objects.len(), distinct);
    assert_eq!((objects.duplicates_removed, objects.conflicting_removed), (70_000 - distinct, 0));
    assert_eq!(objects.duplicates_removed, 0, "the module documents that the Debian files hold no copies");
    assert_eq!(hex(objects.image(0).iter().copied()), lines[2]);
    assert_eq!(hex(objects.image(objects.len() - 1).iter().copied()), lines[5], "last image kept");
}
