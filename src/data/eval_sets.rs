//! Robustness evaluation sets (method.md section 7) read as they are distributed: `scan` turns a dataset folder
//! into a sorted list of (image path, target), and `score` turns one image's 1000 ImageNet-1k logits and its
//! target into top-1 / top-5 hits under either protocol. Nothing here decodes an image or touches a tensor.
//!
//! Layouts accepted by `scan` (`dir` is its argument):
//! - `imagenet-val`, `imagenet-sketch`: `dir/<wnid>/*`, label = the wnid's ImageNet index. ImageNet-Sketch is
//!   distributed as `sketch/<wnid>/*`, so a `dir` holding `sketch/` is read through it.
//! - `imagenet-a`, `imagenet-r`: `dir/<wnid>/*`, wnids among the set's 200 classes (`tables/imagenet_[ar]_*.txt`).
//! - `imagenet-v2`: `dir/<i>/*` where the folder name itself is the ImageNet index `0..=999` (not a sorted
//!   position, which is what an ImageFolder would wrongly assign).
//! - `objectnet` (ObjectNet 1.0): `dir/images/<folder>/*` with `dir/mappings/` holding
//!   `folder_to_objectnet_label.json`, `objectnet_to_imagenet_1k.json`, `pytorch_to_imagenet_2012_id.json` and
//!   `imagenet_to_label_2012_v2`; or, as the reference passes it, `dir` = the images folder with
//!   `dir/../mappings`. Only folders whose ObjectNet label maps to ImageNet classes (113 in ObjectNet 1.0) are
//!   used.
//! - `si-location`, `si-rotation`, `si-size`: `dir/<class string>/*` mapped by
//!   `tables/si_score_label_to_imagenet.json`; a `dir` holding the SI-Score archive folder
//!   (`location20_area02_min0pc`, `rotation`, `area`) is read through it.
//!
//! Loose files next to the class folders (ImageNet-A/R's `README.txt`) are skipped. Inside a class folder the
//! images are the files ending `.jpg`, `.jpeg` or `.png` (any case); other files (`.DS_Store`) are skipped as
//! torchvision's ImageFolder does. A folder that is not a class of the set, an image-less class folder and a
//! missing or malformed ObjectNet mapping file are errors that name the path.
//!
//! Protocols (`score`); ties between equal scores go to the lower class index:
//! - `Protocol::Reference` is hila-chefer/RobustViT's `imagenet_eval_robustness.py`: top-k over all 1000 logits
//!   against the image's ImageNet class for every set, ImageNet-A/R included; for ObjectNet the class is the
//!   FIRST ImageNet class its label maps to (`objectnet_dataset.py` keeps `o_idx_to_i_idxs[o_idx][0]`), so an
//!   image predicted as another of its mapped classes counts wrong.
//! - `Protocol::Standard`: ImageNet-A/R take top-k among the logits of the set's 200 classes only (Hendrycks et
//!   al.'s `indices_in_1k` evaluation). ObjectNet pools: every mapped ObjectNet class scores the MAX of its mapped
//!   ImageNet logits, and top-k is over those 113 pooled scores against the image's ObjectNet class (model-soups'
//!   `ObjectNet.map_prediction`, imagenet-testbed's `accuracy_topk_subselected_and_collapsed`). While no ImageNet
//!   class is mapped from two ObjectNet labels its top-1 equals imagenet-testbed's `objectnet_accuracy` (the
//!   argmax among all mapped ImageNet classes is one of the image's).
//!   Every other set is scored 1000-way as in the reference.
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::data::imagenet;

const IMAGENET_A_SYNSETS: &str = include_str!("tables/imagenet_a_synsets.txt");
const IMAGENET_A_INDICES: &str = include_str!("tables/imagenet_a_indices.txt");
const IMAGENET_R_SYNSETS: &str = include_str!("tables/imagenet_r_synsets.txt");
const IMAGENET_R_INDICES: &str = include_str!("tables/imagenet_r_indices.txt");
const SI_SCORE_TABLE: &str = include_str!("tables/si_score_label_to_imagenet.json");

/// Number of ImageNet-1k classes, the length `score` expects of its logits.
pub const NUM_CLASSES: usize = 1000;

/// Failure to read an evaluation set.
#[derive(Debug, thiserror::Error)]
pub enum EvalSetError {
    #[error("{kind}: dataset folder {} does not exist", path.display())]
    Missing { kind: Kind, path: PathBuf },
    #[error("{kind}: {} holds no images", path.display())]
    Empty { kind: Kind, path: PathBuf },
    #[error("{kind}: folder {} is not a class of this set", path.display())]
    UnknownClass { kind: Kind, path: PathBuf },
    #[error("objectnet: mapping file {} does not exist", path.display())]
    MissingMapping { path: PathBuf },
    #[error("objectnet: mapping file {}: {reason}", path.display())]
    BadMapping { path: PathBuf, reason: String },
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

crate::named_enum! {
    /// An evaluation set, named as configs, command lines and tables name it.
    pub enum Kind("evaluation set") {
        ImagenetVal = "imagenet-val",
        ImagenetA = "imagenet-a",
        ImagenetR = "imagenet-r",
        ImagenetSketch = "imagenet-sketch",
        ImagenetV2 = "imagenet-v2",
        ObjectNet = "objectnet",
        SiLocation = "si-location",
        SiRotation = "si-rotation",
        SiSize = "si-size",
    }
}

impl Kind {
    /// The folder the set's archive unpacks to, when `dir` may be the folder above it.
    fn archive_folder(self) -> Option<&'static str> {
        match self {
            Kind::ImagenetSketch => Some("sketch"),
            Kind::SiLocation => Some("location20_area02_min0pc"),
            Kind::SiRotation => Some("rotation"),
            Kind::SiSize => Some("area"),
            _ => None,
        }
    }
}

crate::named_enum! {
    /// How a prediction is scored (module doc); every results table names the one it used.
    pub enum Protocol("protocol") {
        Standard = "standard",
        Reference = "reference",
    }
}

/// The ObjectNet classes that map to ImageNet, as read from one copy of the dataset's mapping files.
#[derive(Debug, PartialEq, Eq)]
pub struct ObjectNetClasses {
    /// ObjectNet labels (e.g. `Alarm clock`) in sorted order; a label's position is its class id.
    pub labels: Vec<String>,
    /// Per class id, its ImageNet indices in the mapping file's order (the first is the reference's target).
    pub imagenet: Vec<Vec<usize>>,
}

/// What an image is scored against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One ImageNet-1k class (every set but ObjectNet).
    Class(usize),
    /// An ObjectNet class id; the shared class table travels with it because standard scoring pools over all
    /// mapped classes, not just the image's.
    ObjectNet { class: usize, classes: Arc<ObjectNetClasses> },
}

impl Target {
    /// The class per-class accuracy is reported under: the ImageNet index, or the ObjectNet class id.
    pub fn class(&self) -> usize {
        match self {
            Target::Class(c) => *c,
            Target::ObjectNet { class, .. } => *class,
        }
    }

    /// The ImageNet-1k classes the image belongs to: its class, or every class its ObjectNet label maps to.
    pub fn imagenet(&self) -> &[usize] {
        match self {
            Target::Class(c) => std::slice::from_ref(c),
            Target::ObjectNet { class, classes } => classes.imagenet.get(*class).map_or(&[], Vec::as_slice),
        }
    }
}

/// One image of an evaluation set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalItem {
    pub path: PathBuf,
    pub target: Target,
}

/// Every image of the set in `dir`, sorted by path.
pub fn scan(kind: Kind, dir: &Path) -> Result<Vec<EvalItem>, EvalSetError> {
    if !dir.is_dir() {
        return Err(EvalSetError::Missing { kind, path: dir.to_path_buf() });
    }
    let mut items = if kind == Kind::ObjectNet {
        scan_objectnet(dir)?
    } else {
        let root = match kind.archive_folder().map(|name| dir.join(name)) {
            Some(inner) if inner.is_dir() => inner,
            _ => dir.to_path_buf(),
        };
        let mut items = Vec::new();
        for folder in subfolders(kind, &root)? {
            let class = folder_name(&folder)
                .and_then(|name| class_of_folder(kind, name))
                .ok_or_else(|| EvalSetError::UnknownClass { kind, path: folder.clone() })?;
            let images = images_in(kind, &folder)?;
            items.extend(images.into_iter().map(|path| EvalItem { path, target: Target::Class(class) }));
        }
        items
    };
    if items.is_empty() {
        return Err(EvalSetError::Empty { kind, path: dir.to_path_buf() });
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(items)
}

/// Top-1 and top-5 hits of one image's ImageNet-1k `logits` under `protocol` (module doc). Logits of another
/// length, or a target naming a class the scored candidates lack, count as misses rather than panicking.
pub fn score(kind: Kind, protocol: Protocol, logits: &[f32], target: &Target) -> (bool, bool) {
    if logits.len() != NUM_CLASSES {
        return (false, false);
    }
    let all = || logits.iter().copied().enumerate().collect::<Vec<_>>();
    let place = match (protocol, target) {
        (Protocol::Reference, Target::Class(c)) => rank(&all(), *c),
        (Protocol::Reference, Target::ObjectNet { class, classes }) => {
            classes.imagenet.get(*class).and_then(|mapped| mapped.first()).and_then(|&c| rank(&all(), c))
        }
        (Protocol::Standard, Target::Class(c)) => match subset(kind) {
            Some(subset) => rank(&subset.indices.iter().map(|&i| (i, logits[i])).collect::<Vec<_>>(), *c),
            None => rank(&all(), *c),
        },
        (Protocol::Standard, Target::ObjectNet { class, classes }) => {
            let pooled: Vec<(usize, f32)> = classes
                .imagenet
                .iter()
                .enumerate()
                .filter_map(|(o, mapped)| {
                    mapped.iter().filter_map(|&i| logits.get(i).copied()).max_by(f32::total_cmp).map(|s| (o, s))
                })
                .collect();
            rank(&pooled, *class)
        }
    };
    place.map_or((false, false), |r| (r < 1, r < 5))
}

/// How many candidates outrank `target` (0 = top-1), or None when `target` is not a candidate. `total_cmp`
/// keeps the order total (NaN included) and equal scores go to the lower id, so results are deterministic.
fn rank(candidates: &[(usize, f32)], target: usize) -> Option<usize> {
    let &(_, t) = candidates.iter().find(|(id, _)| *id == target)?;
    Some(candidates.iter().filter(|&&(id, s)| s.total_cmp(&t).then(target.cmp(&id)) == Ordering::Greater).count())
}

/// ImageNet-A or -R's 200 classes: line i of the wnid table and of the index table are the same class.
struct Subset {
    wnids: Vec<&'static str>,
    indices: Vec<usize>,
}

impl Subset {
    fn parse(wnids: &'static str, indices: &'static str) -> Subset {
        Subset {
            wnids: wnids.lines().collect(),
            indices: indices.lines().map(|l| l.parse().expect("embedded subset table holds indices")).collect(),
        }
    }
}

/// The 200-class subset of ImageNet-A / -R; None for sets scored over all 1000 classes.
fn subset(kind: Kind) -> Option<&'static Subset> {
    static A: OnceLock<Subset> = OnceLock::new();
    static R: OnceLock<Subset> = OnceLock::new();
    match kind {
        Kind::ImagenetA => Some(A.get_or_init(|| Subset::parse(IMAGENET_A_SYNSETS, IMAGENET_A_INDICES))),
        Kind::ImagenetR => Some(R.get_or_init(|| Subset::parse(IMAGENET_R_SYNSETS, IMAGENET_R_INDICES))),
        _ => None,
    }
}

/// SI-Score class string -> ImageNet index.
fn si_score_table() -> &'static HashMap<String, usize> {
    static TABLE: OnceLock<HashMap<String, usize>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let json: serde_json::Value = serde_json::from_str(SI_SCORE_TABLE).expect("embedded SI-Score table is JSON");
        json["mapping"]
            .as_object()
            .expect("embedded SI-Score table has a mapping object")
            .iter()
            .map(|(label, index)| {
                let index = index.as_u64().expect("embedded SI-Score table maps to indices");
                (label.clone(), index as usize)
            })
            .collect()
    })
}

/// The ImageNet class of a class folder of a non-ObjectNet set, or None when the folder is not one.
fn class_of_folder(kind: Kind, name: &str) -> Option<usize> {
    match kind {
        Kind::ImagenetVal | Kind::ImagenetSketch => imagenet::index_of(name),
        Kind::ImagenetA | Kind::ImagenetR => {
            let subset = subset(kind)?;
            subset.wnids.iter().position(|w| *w == name).map(|i| subset.indices[i])
        }
        // Only the canonical spelling, so `007` or `+7` is not silently taken for class 7.
        Kind::ImagenetV2 => name.parse::<usize>().ok().filter(|&i| i < NUM_CLASSES && i.to_string() == name),
        Kind::SiLocation | Kind::SiRotation | Kind::SiSize => si_score_table().get(name).copied(),
        Kind::ObjectNet => None,
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EvalSetError + '_ {
    move |source| EvalSetError::Io { path: path.to_path_buf(), source }
}

fn folder_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// The sub-folders of `dir` (symlinks followed, as datasets are often linked in); plain files are skipped.
fn subfolders(kind: Kind, dir: &Path) -> Result<Vec<PathBuf>, EvalSetError> {
    let mut folders = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.is_dir() {
            folders.push(path);
        }
    }
    if folders.is_empty() {
        return Err(EvalSetError::Empty { kind, path: dir.to_path_buf() });
    }
    Ok(folders)
}

/// The image files of one class folder; an image-less class folder is an error because it means a broken
/// download rather than a class with no test images.
fn images_in(kind: Kind, folder: &Path) -> Result<Vec<PathBuf>, EvalSetError> {
    let mut images = Vec::new();
    for entry in fs::read_dir(folder).map_err(io_error(folder))? {
        let path = entry.map_err(io_error(folder))?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["jpg", "jpeg", "png"].iter().any(|x| e.eq_ignore_ascii_case(x)));
        if is_image && path.is_file() {
            images.push(path);
        }
    }
    if images.is_empty() {
        return Err(EvalSetError::Empty { kind, path: folder.to_path_buf() });
    }
    Ok(images)
}

fn scan_objectnet(dir: &Path) -> Result<Vec<EvalItem>, EvalSetError> {
    let (images_dir, mappings) = if dir.join("images").is_dir() {
        (dir.join("images"), dir.join("mappings"))
    } else {
        (dir.to_path_buf(), dir.join("..").join("mappings"))
    };
    let (classes, folder_to_label) = read_objectnet_mappings(&mappings)?;
    let classes = Arc::new(classes);
    let mut items = Vec::new();
    for folder in subfolders(Kind::ObjectNet, &images_dir)? {
        let unknown = || EvalSetError::UnknownClass { kind: Kind::ObjectNet, path: folder.clone() };
        let label = folder_name(&folder).and_then(|name| folder_to_label.get(name)).ok_or_else(unknown)?;
        // ObjectNet classes without an ImageNet counterpart are not evaluated (as in the reference).
        let Ok(class) = classes.labels.binary_search(label) else { continue };
        for path in images_in(Kind::ObjectNet, &folder)? {
            items.push(EvalItem { path, target: Target::ObjectNet { class, classes: Arc::clone(&classes) } });
        }
    }
    Ok(items)
}

fn read_mapping(path: &Path) -> Result<String, EvalSetError> {
    fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => EvalSetError::MissingMapping { path: path.to_path_buf() },
        _ => EvalSetError::Io { path: path.to_path_buf(), source },
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> EvalSetError {
    EvalSetError::BadMapping { path: path.to_path_buf(), reason: reason.into() }
}

/// A JSON object of strings, e.g. `{"air_freshener": "Air freshener"}`.
fn read_string_map(path: &Path) -> Result<BTreeMap<String, String>, EvalSetError> {
    serde_json::from_str(&read_mapping(path)?).map_err(|e| bad(path, format!("expected an object of strings: {e}")))
}

/// The mapped ObjectNet classes and the image-folder -> ObjectNet label table, following the reference's
/// chain: ObjectNet label -> `; `-separated ImageNet class strings -> line of `imagenet_to_label_2012_v2`
/// (ILSVRC2012 devkit order) -> PyTorch index via `pytorch_to_imagenet_2012_id.json`, PyTorch's index being
/// the sorted-wnid ImageNet index used everywhere here.
fn read_objectnet_mappings(mappings: &Path) -> Result<(ObjectNetClasses, BTreeMap<String, String>), EvalSetError> {
    let folder_to_label = read_string_map(&mappings.join("folder_to_objectnet_label.json"))?;
    let to_imagenet_path = mappings.join("objectnet_to_imagenet_1k.json");
    let to_imagenet = read_string_map(&to_imagenet_path)?;

    let pytorch_path = mappings.join("pytorch_to_imagenet_2012_id.json");
    let pytorch: BTreeMap<String, usize> = serde_json::from_str(&read_mapping(&pytorch_path)?)
        .map_err(|e| bad(&pytorch_path, format!("expected an object of line numbers: {e}")))?;
    let mut pytorch_to_line = Vec::with_capacity(pytorch.len());
    for (pid, line) in pytorch {
        match pid.parse::<usize>() {
            Ok(p) if p < NUM_CLASSES => pytorch_to_line.push((p, line)),
            _ => return Err(bad(&pytorch_path, format!("key {pid:?} is not an ImageNet index"))),
        }
    }
    // Ascending PyTorch index, so that for a class string on two lines (ImageNet's two `crane`s) the higher
    // index wins, as the reference's dict comprehension over the file does.
    pytorch_to_line.sort_unstable();

    let labels_path = mappings.join("imagenet_to_label_2012_v2");
    let labels_text = read_mapping(&labels_path)?;
    let line_labels: Vec<&str> = labels_text.lines().collect();
    let mut label_to_pytorch = HashMap::new();
    for (pid, line) in pytorch_to_line {
        let label = line_labels.get(line).ok_or_else(|| {
            bad(&pytorch_path, format!("index {pid} points to line {line}, past the end of {}", labels_path.display()))
        })?;
        label_to_pytorch.insert(*label, pid);
    }

    let mut classes = ObjectNetClasses { labels: Vec::new(), imagenet: Vec::new() };
    // BTreeMap iteration is sorted, which makes `labels` binary-searchable and the class ids stable.
    for (label, names) in to_imagenet {
        let mapped = names
            .split("; ")
            .map(|name| {
                label_to_pytorch.get(name).copied().ok_or_else(|| {
                    bad(
                        &to_imagenet_path,
                        format!("ImageNet class {name:?} of {label:?} is not in imagenet_to_label_2012_v2"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        classes.labels.push(label);
        classes.imagenet.push(mapped);
    }
    Ok((classes, folder_to_label))
}
