//! The embedded "spurious backgrounds" benchmark: Animal-MNIST silhouettes composited onto grey oriented
//! stripes whose orientation and period encode a class. In the biased splits the stripes match the label
//! most of the time, so a model can learn the background instead of the shape; `shuffled` breaks that
//! link and measures how much a model relies on it (see `shared/benchmark-notes.md` for the measured
//! settings). Everything is drawn from explicit seeds through [`crate::rng`], so a split renders the same
//! on every machine.
use std::f64::consts::TAU;

use crate::data::animal_mnist::{Objects, CLASSES, SIDE};
use ndarray::{Array2, Array3, ArrayView2};

use crate::data::Sample;
use crate::rng::{derive_seed, permutation, SplitMix64};

/// Pixels at or below this grey value are background when flood-filling from the border.
pub const MASK_THRESHOLD: u8 = 10;
/// The benchmark's input side: the 28x28 objects padded by 2 px on each side.
pub const SIZE: u32 = 32;

/// Orientations are 36 degrees apart, so the five angles cover half a turn (a grating's orientation
/// repeats after 180 degrees).
const ANGLE_STEP_DEG: f64 = 36.0;
const ORIENTATIONS: usize = 5;
/// Classes below `ORIENTATIONS` get fine stripes, the others coarse ones, so that orientation and period
/// together tell all ten classes apart.
const FINE_PERIOD: f64 = 4.5;
const COARSE_PERIOD: f64 = 9.0;
/// The period varies by up to this fraction per image, so no exact frequency identifies a class.
const PERIOD_JITTER: f64 = 0.1;
const CONTRAST: (f64, f64) = (0.12, 0.25);
const MEAN_GREY: f64 = 0.5;
const NOISE_SIGMA: f64 = 0.04;
/// The tinted control: a class-specific hue at this saturation and value, plus per-channel noise.
const TINT_SATURATION: f64 = 0.5;
const TINT_VALUE: f64 = 0.6;
const TINT_NOISE_SIGMA: f64 = 0.08;
/// Tags that keep independent draws apart when they share a seed: the partition, the finetuning subset,
/// and per sample whether its background matches the label, which other class it shows, and the rendering
/// (period, phase, contrast, noise). Changing one draw never shifts another.
const PARTITION_STREAM: u64 = 1;
const SUBSET_STREAM: u64 = 2;
const MATCH_STREAM: u64 = 3;
const CLASS_STREAM: u64 = 4;
const RENDER_STREAM: u64 = 5;

/// What lies behind the object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Background {
    /// The stripes of this class.
    Stripes(usize),
    /// The coloured noise of this class (negative control).
    Tint(usize),
    /// Plain black: the object alone.
    Black,
    /// Background only: no object, the stripes of this class (labelled with it).
    Only(usize),
    /// Background only: no object, the tint of this class (labelled with it).
    TintOnly(usize),
}

/// The splits: the biased training distribution and the four test splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Like the training data: the label's background with probability `bias` (validation, finetuning).
    Biased,
    /// The label's background for every image.
    Matched,
    /// Background class drawn independently of the label.
    Shuffled,
    /// Objects on black: shape alone.
    Black,
    /// Backgrounds without objects: what the background alone predicts (lower is better).
    BgOnly,
}

impl Split {
    /// The test splits, in table order.
    pub const TESTS: [Split; 4] = [Split::Matched, Split::Shuffled, Split::Black, Split::BgOnly];

    pub fn name(self) -> &'static str {
        match self {
            Split::Biased => "biased",
            Split::Matched => "matched",
            Split::Shuffled => "shuffled",
            Split::Black => "black",
            Split::BgOnly => "bg_only",
        }
    }
}

/// The kind of class-coded background a split uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Texture {
    Stripes,
    /// The negative control: colour leaks through the object's edge patches, where no map-based loss acts.
    Tint,
}

impl Texture {
    fn behind(self, class: usize) -> Background {
        match self {
            Texture::Stripes => Background::Stripes(class),
            Texture::Tint => Background::Tint(class),
        }
    }

    fn alone(self, class: usize) -> Background {
        match self {
            Texture::Stripes => Background::Only(class),
            Texture::Tint => Background::TintOnly(class),
        }
    }
}

/// The object mask of a grey image: everything the background, flood-filled 4-connected from the border
/// through pixels `<= MASK_THRESHOLD`, does not reach. Dark holes inside the silhouette stay part of the
/// object because the fill cannot get to them.
pub fn object_mask(img: ArrayView2<u8>) -> Array2<bool> {
    let (height, width) = img.dim();
    let dark = |p: [usize; 2]| img[p] <= MASK_THRESHOLD;
    let mut reached = Array2::from_elem((height, width), false);
    let border = img
        .indexed_iter()
        .map(|((y, x), _)| [y, x])
        .filter(|&[y, x]| x == 0 || y == 0 || x + 1 == width || y + 1 == height);
    let mut stack: Vec<[usize; 2]> = border.filter(|&p| dark(p)).collect();
    for &p in &stack {
        reached[p] = true;
    }
    while let Some([y, x]) = stack.pop() {
        let neighbours = [
            (x > 0).then(|| [y, x - 1]),
            (x + 1 < width).then(|| [y, x + 1]),
            (y > 0).then(|| [y - 1, x]),
            (y + 1 < height).then(|| [y + 1, x]),
        ];
        for q in neighbours.into_iter().flatten() {
            if !reached[q] && dark(q) {
                reached[q] = true;
                stack.push(q);
            }
        }
    }
    reached.mapv(|r| !r)
}

/// Uniform in `[0, 1)` with 53 random bits.
fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn uniform_in(rng: &mut SplitMix64, (low, high): (f64, f64)) -> f64 {
    low + (high - low) * uniform(rng)
}

/// `n` standard normal draws by Box-Muller, two per pair of uniforms.
fn normals(rng: &mut SplitMix64, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - uniform(rng)).ln()).sqrt();
        let angle = TAU * uniform(rng);
        out.extend([radius * angle.cos(), radius * angle.sin()]);
    }
    out.truncate(n);
    out
}

/// A sinusoidal grating: the class fixes the orientation and nominal period, the rng the rest.
struct Grating {
    direction: (f64, f64),
    period: f64,
    phase: f64,
    contrast: f64,
}

impl Grating {
    fn draw(class: usize, rng: &mut SplitMix64) -> Grating {
        let angle = ((class % ORIENTATIONS) as f64 * ANGLE_STEP_DEG).to_radians();
        let nominal = if class < ORIENTATIONS { FINE_PERIOD } else { COARSE_PERIOD };
        let period = nominal * uniform_in(rng, (1.0 - PERIOD_JITTER, 1.0 + PERIOD_JITTER));
        let phase = TAU * uniform(rng);
        let contrast = uniform_in(rng, CONTRAST);
        Grating { direction: (angle.cos(), angle.sin()), period, phase, contrast }
    }

    fn at(&self, x: usize, y: usize) -> f64 {
        let along = x as f64 * self.direction.0 + y as f64 * self.direction.1;
        MEAN_GREY + self.contrast * (TAU * along / self.period + self.phase).sin()
    }
}

/// The grey stripes of `class` (`0..CLASSES`), `size * size` values in `[0, 1]`, row-major.
pub fn stripes(class: usize, size: u32, seed: u64) -> Vec<f32> {
    let side = size as usize;
    let mut rng = SplitMix64(seed);
    let grating = Grating::draw(class, &mut rng);
    let noise = normals(&mut rng, side * side);
    noise
        .iter()
        .enumerate()
        .map(|(p, n)| (grating.at(p % side, p / side) + NOISE_SIGMA * n).clamp(0.0, 1.0) as f32)
        .collect()
}

/// RGB of hue `hue` (in turns) at the tint's saturation and value.
fn hue_rgb(hue: f64) -> [f64; 3] {
    [5.0, 3.0, 1.0].map(|n: f64| {
        let k = (n + 6.0 * hue).rem_euclid(6.0);
        TINT_VALUE * (1.0 - TINT_SATURATION * k.min(4.0 - k).clamp(0.0, 1.0))
    })
}

/// Coloured noise around a class-specific hue (`class / CLASSES` of the way round the colour wheel),
/// `size * size` RGB values in `[0, 1]`: the negative control's background.
pub fn tint(class: usize, size: u32, seed: u64) -> Vec<[f32; 3]> {
    let side = size as usize;
    let base = hue_rgb(class as f64 / CLASSES as f64);
    let noise = normals(&mut SplitMix64(seed), 3 * side * side);
    noise
        .chunks_exact(3)
        .map(|n| [0, 1, 2].map(|c| (base[c] + TINT_NOISE_SIGMA * n[c]).clamp(0.0, 1.0) as f32))
        .collect()
}

/// The background's RGB values in `[0, 1]`.
fn background_rgb(background: Background, size: u32, seed: u64) -> Vec<[f32; 3]> {
    match background {
        Background::Stripes(c) | Background::Only(c) => stripes(c, size, seed).into_iter().map(|v| [v; 3]).collect(),
        Background::Tint(c) | Background::TintOnly(c) => tint(c, size, seed),
        Background::Black => vec![[0.0; 3]; (size * size) as usize],
    }
}

/// The object's grey values (`/255`) and its mask (0/1), centred in a `side x side` canvas: padded when
/// `side > 28`, centre-cropped when smaller.
fn place(img: ArrayView2<u8>, side: usize) -> (Vec<f32>, Vec<f32>) {
    let object = object_mask(img);
    let offset = (side as isize - SIDE as isize) / 2;
    let mut fg = vec![0.0; side * side];
    let mut mask = vec![0.0; side * side];
    for y in 0..side {
        for x in 0..side {
            let (sx, sy) = (x as isize - offset, y as isize - offset);
            if (0..SIDE as isize).contains(&sx) && (0..SIDE as isize).contains(&sy) {
                let source = [sy as usize, sx as usize];
                fg[y * side + x] = f32::from(img[source]) / 255.0;
                mask[y * side + x] = if object[source] { 1.0 } else { 0.0 };
            }
        }
    }
    (fg, mask)
}

/// Object `index` of `objects` on `background`, as a normalised (`(v - 0.5) / 0.5`) CHW image of side
/// `size` with its object mask. The background's randomness comes from `seed`. For the background-only
/// variants `index` is ignored, the mask is empty and the label is the background's class. Panics if a
/// variant with an object gets `index >= objects.len()`, like slice indexing.
pub fn render(objects: &Objects, index: usize, background: Background, size: u32, seed: u64) -> Sample {
    let side = size as usize;
    let bg = background_rgb(background, size, seed);
    let (fg, mask, label) = match background {
        Background::Only(c) | Background::TintOnly(c) => (vec![0.0; side * side], vec![0.0; side * side], c as i64),
        _ => {
            let (fg, mask) = place(objects.image(index), side);
            (fg, mask, objects.labels[index])
        }
    };
    let plane = side * side;
    let mut image = vec![0.0; 3 * plane];
    for p in 0..plane {
        for c in 0..3 {
            let v = mask[p] * fg[p] + (1.0 - mask[p]) * bg[p][c];
            image[c * plane + p] = (v - 0.5) / 0.5;
        }
    }
    Sample {
        image: Array3::from_shape_vec((3, side, side), image).expect("3 planes of side x side"),
        mask: Array2::from_shape_vec((side, side), mask).expect("side x side"),
        label,
    }
}

/// Object `index` of `objects` as a sample of `split` (`bias` only matters for `Biased`): its background
/// drawn and rendered from `seed`, each draw from its own stream.
pub fn sample(objects: &Objects, index: usize, split: Split, bias: f64, texture: Texture, seed: u64) -> Sample {
    let background = background_for(split, objects.labels[index] as usize, bias, texture, seed);
    render(objects, index, background, SIZE, derive_seed(seed, &[RENDER_STREAM]))
}

/// The background of a sample of `split` with label `label`; `bias` only matters for `Biased`.
pub fn background_for(split: Split, label: usize, bias: f64, texture: Texture, seed: u64) -> Background {
    let any_class = || SplitMix64(derive_seed(seed, &[CLASS_STREAM])).below(CLASSES as u64) as usize;
    match split {
        Split::Biased => biased(label, bias, texture, seed),
        Split::Matched => texture.behind(label),
        Split::Shuffled => texture.behind(any_class()),
        Split::Black => Background::Black,
        Split::BgOnly => texture.alone(any_class()),
    }
}

/// The label's background with probability `bias`, otherwise a uniformly drawn other class's; used for
/// training data too (`bias` = 1 / CLASSES = 0.1 makes the background independent of the label).
pub fn biased(label: usize, bias: f64, texture: Texture, seed: u64) -> Background {
    if uniform(&mut SplitMix64(derive_seed(seed, &[MATCH_STREAM]))) < bias {
        return texture.behind(label);
    }
    // Draw from the CLASSES - 1 others by skipping over the label.
    let other = SplitMix64(derive_seed(seed, &[CLASS_STREAM])).below(CLASSES as u64 - 1) as usize;
    texture.behind(if other >= label { other + 1 } else { other })
}

/// The first `per_class` positions of each class in `labels` (in order), sorted: a fixed sample that holds
/// every class.
pub fn stratified(labels: &[i64], per_class: usize) -> Vec<usize> {
    let mut taken = [0usize; CLASSES];
    (0..labels.len())
        .filter(|&i| {
            let count = &mut taken[labels[i] as usize % CLASSES];
            *count += 1;
            *count <= per_class
        })
        .collect()
}

/// Disjoint index sets of the objects, stratified by class.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub pretrain: Vec<usize>,
    pub finetune_pool: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PartitionError {
    #[error("object {index} has label {label}, outside 0..{CLASSES}")]
    LabelOutOfRange { index: usize, label: i64 },
    #[error("class {class} has {available} objects; the partition needs {needed} (test + val + finetuning pool)")]
    ClassTooSmall { class: usize, available: usize, needed: usize },
    #[error("the finetuning pool holds {available} objects of class {class}; {requested} were asked for")]
    PoolTooSmall { class: usize, available: usize, requested: usize },
}

/// The indices in `indices` of each class, in the order given.
fn by_class(objects: &Objects, indices: impl Iterator<Item = usize>) -> Result<Vec<Vec<usize>>, PartitionError> {
    let mut classes = vec![Vec::new(); CLASSES];
    for index in indices {
        let label = objects.labels[index];
        let class = usize::try_from(label).ok().filter(|&c| c < CLASSES);
        let class = class.ok_or(PartitionError::LabelOutOfRange { index, label })?;
        classes[class].push(index);
    }
    Ok(classes)
}

/// `members` in an order drawn from `seed`.
fn shuffled(members: &[usize], seed: u64) -> Vec<usize> {
    permutation(members.len(), seed).into_iter().map(|i| members[i]).collect()
}

/// Splits every class, in an order drawn from `seed`, into `test_per_class` test, `val_per_class`
/// validation and `finetune_pool_per_class` finetuning-pool objects; the rest is for pretraining. Each
/// list is sorted. A class too small for the three fixed parts is an error rather than a silently
/// smaller test set.
pub fn partition(
    objects: &Objects,
    test_per_class: usize,
    val_per_class: usize,
    finetune_pool_per_class: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    let needed = test_per_class + val_per_class + finetune_pool_per_class;
    let mut p = Partition { pretrain: Vec::new(), finetune_pool: Vec::new(), val: Vec::new(), test: Vec::new() };
    for (class, members) in by_class(objects, 0..objects.len())?.into_iter().enumerate() {
        if members.len() < needed {
            return Err(PartitionError::ClassTooSmall { class, available: members.len(), needed });
        }
        let order = shuffled(&members, derive_seed(seed, &[PARTITION_STREAM, class as u64]));
        let (test, rest) = order.split_at(test_per_class);
        let (val, rest) = rest.split_at(val_per_class);
        let (pool, pretrain) = rest.split_at(finetune_pool_per_class);
        p.test.extend(test);
        p.val.extend(val);
        p.finetune_pool.extend(pool);
        p.pretrain.extend(pretrain);
    }
    for list in [&mut p.pretrain, &mut p.finetune_pool, &mut p.val, &mut p.test] {
        list.sort_unstable();
    }
    Ok(p)
}

/// `per_class` objects of every class from the finetuning pool, chosen by `seed`; sorted.
pub fn finetune_subset(
    p: &Partition,
    objects: &Objects,
    per_class: usize,
    seed: u64,
) -> Result<Vec<usize>, PartitionError> {
    let mut subset = Vec::with_capacity(per_class * CLASSES);
    for (class, members) in by_class(objects, p.finetune_pool.iter().copied())?.into_iter().enumerate() {
        if members.len() < per_class {
            return Err(PartitionError::PoolTooSmall { class, available: members.len(), requested: per_class });
        }
        let order = shuffled(&members, derive_seed(seed, &[SUBSET_STREAM, class as u64]));
        subset.extend(&order[..per_class]);
    }
    subset.sort_unstable();
    Ok(subset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_class` objects of every class: a filled square whose size depends on the index.
    fn objects(per_class: usize) -> Objects {
        let n = per_class * CLASSES;
        let images = Array3::from_shape_fn((n, SIDE, SIDE), |(i, y, x)| {
            let half = (3 + i % 8) as isize;
            let (x, y) = (x as isize - 14, y as isize - 14);
            if x.abs() < half && y.abs() < half {
                200
            } else {
                0
            }
        });
        let labels = (0..n).map(|i| (i % CLASSES) as i64).collect();
        Objects { images, labels, duplicates_removed: 0, conflicting_removed: 0 }
    }

    #[test]
    fn mask_keeps_interior_holes_and_drops_border_background() {
        // A ring: bright square 8..20 with a dark hole 12..16, plus a dark notch open to the outside.
        let mut img = Array2::zeros((SIDE, SIDE));
        for y in 8..20 {
            for x in 8..20 {
                let hole = (12..16).contains(&x) && (12..16).contains(&y);
                let notch = y == 10 && x < 11;
                img[[y, x]] = if hole || notch { 5 } else { 180 };
            }
        }
        let mask = object_mask(img.view());
        let at = |x: usize, y: usize| mask[[y, x]];
        assert!(at(13, 13), "interior hole belongs to the object");
        assert!(at(8, 8) && at(19, 19));
        assert!(!at(0, 0) && !at(7, 10) && !at(10, 10), "background and the open notch are not object");
        assert_eq!(mask.iter().filter(|&&m| m).count(), 12 * 12 - 3);
        // An all-bright image is all object, an all-dark one all background.
        assert!(object_mask(Array2::from_elem((SIDE, SIDE), 255).view()).iter().all(|&m| m));
        assert!(object_mask(Array2::from_elem((SIDE, SIDE), 10).view()).iter().all(|&m| !m));
        // Any shape: one bright pixel inside a dark 3x5 image.
        let mut small = Array2::zeros((3, 5));
        small[[1, 2]] = 200;
        let mask = object_mask(small.view());
        assert_eq!(mask.dim(), (3, 5));
        assert_eq!(mask.indexed_iter().filter(|(_, &m)| m).map(|(p, _)| p).collect::<Vec<_>>(), [(1, 2)]);
    }

    #[test]
    fn render_is_deterministic_shaped_and_in_range() {
        let o = objects(2);
        for bg in [Background::Stripes(3), Background::Tint(7), Background::Black, Background::Only(6)] {
            let a = render(&o, 5, bg, SIZE, 42);
            assert_eq!(a, render(&o, 5, bg, SIZE, 42));
            assert_eq!((a.image.dim(), a.mask.dim()), ((3, 32, 32), (32, 32)));
            assert!(a.image.iter().all(|v| (-1.0..=1.0).contains(v)));
            assert!(a.mask.iter().all(|&m| m == 0.0 || m == 1.0));
        }
        assert_ne!(render(&o, 5, Background::Stripes(3), SIZE, 42), render(&o, 5, Background::Stripes(3), SIZE, 43));
        let only = render(&o, 5, Background::Only(6), SIZE, 1);
        assert_eq!(only.label, 6);
        assert!(only.mask.iter().all(|&m| m == 0.0));
        let sample = render(&o, 5, Background::Stripes(3), SIZE, 1);
        assert_eq!(sample.label, o.labels[5]);
        // Object 5 is a square of half-width 8 centred at 14 (pixels 7..=21), padded by 2.
        assert_eq!(sample.mask.iter().sum::<f32>(), 15.0 * 15.0);
        assert_eq!((sample.mask[[9, 9]], sample.mask[[8, 8]]), (1.0, 0.0));
        assert_eq!(sample.image[[0, 9, 9]], (200.0 / 255.0 - 0.5) / 0.5);
        assert_eq!(render(&o, 0, Background::Black, 20, 0).mask.len(), 400);
    }

    #[test]
    fn stripes_follow_the_notes() {
        for class in 0..CLASSES {
            let s = stripes(class, 64, class as u64);
            let mean = s.iter().sum::<f32>() / s.len() as f32;
            assert!((mean - 0.5).abs() < 0.05, "class {class} mean {mean}");
            assert!(s.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // Class 0 runs along x (angle 0): columns vary, each column is constant up to noise.
        let s = stripes(0, 32, 9);
        let column: Vec<f32> = (0..32).map(|y| s[y * 32 + 3]).collect();
        let spread = column.iter().fold(0f32, |m, v| m.max((v - column[0]).abs()));
        assert!(spread < 0.35, "{spread}");
    }

    #[test]
    fn matched_picks_the_label_about_bias_of_the_time() {
        let trials = 20_000;
        let count = |split, bias| {
            (0..trials)
                .filter(|&i| background_for(split, 4, bias, Texture::Stripes, i) == Background::Stripes(4))
                .count() as f64
                / trials as f64
        };
        assert!((count(Split::Biased, 0.95) - 0.95).abs() < 0.01);
        assert!((count(Split::Biased, 0.1) - 0.1).abs() < 0.01);
        assert!((count(Split::Shuffled, 0.95) - 0.1).abs() < 0.01);
        assert_eq!(count(Split::Matched, 0.1), 1.0);
        // The unmatched draws spread over the other nine classes.
        let mut hist = [0usize; CLASSES];
        for i in 0..trials {
            if let Background::Stripes(c) = biased(4, 0.0, Texture::Stripes, i) {
                hist[c] += 1;
            }
        }
        assert_eq!(hist[4], 0);
        assert!(hist.iter().enumerate().all(|(c, &n)| c == 4 || (n as f64 / trials as f64 - 1.0 / 9.0).abs() < 0.01));
        assert_eq!(background_for(Split::Black, 4, 0.9, Texture::Tint, 3), Background::Black);
        assert!(matches!(background_for(Split::BgOnly, 4, 0.9, Texture::Tint, 3), Background::TintOnly(_)));
        assert!(matches!(background_for(Split::Matched, 4, 1.0, Texture::Tint, 3), Background::Tint(4)));
    }

    #[test]
    fn the_background_choice_does_not_shift_the_rendering() {
        // Samples whose background is the label's in both draws render identically whatever decided that:
        // the match draw, the other-class draw and the rendering are separate streams.
        let o = objects(2);
        let label = o.labels[5] as usize;
        let mut compared = 0;
        for seed in 0..200u64 {
            let a = sample(&o, 5, Split::Biased, 0.5, Texture::Stripes, seed);
            let matched =
                background_for(Split::Biased, label, 0.5, Texture::Stripes, seed) == Background::Stripes(label);
            // Same sample seed, other bias: the match draw compares against another threshold.
            let b = sample(&o, 5, Split::Biased, 0.9, Texture::Stripes, seed);
            if matched {
                assert_eq!(a, b, "seed {seed}");
                assert_eq!(a, sample(&o, 5, Split::Matched, 0.0, Texture::Stripes, seed));
                compared += 1;
            }
        }
        assert!(compared > 50, "{compared}");
        // The rendering does vary with the sample seed.
        assert_ne!(
            sample(&o, 5, Split::Matched, 0.0, Texture::Stripes, 1),
            sample(&o, 5, Split::Matched, 0.0, Texture::Stripes, 2)
        );
    }

    #[test]
    fn stratified_sample_holds_every_class() {
        // Sorted by class, as the objects are: a plain prefix would hold the first classes only.
        let labels: Vec<i64> = (0..CLASSES as i64).flat_map(|c| [c; 40]).collect();
        let picked = stratified(&labels, 30);
        assert_eq!(picked.len(), 300);
        for c in 0..CLASSES as i64 {
            assert_eq!(picked.iter().filter(|&&i| labels[i] == c).count(), 30);
        }
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn partition_is_stratified_disjoint_and_seeded() {
        let o = objects(20);
        let p = partition(&o, 3, 2, 5, 7).unwrap();
        assert_eq!(p, partition(&o, 3, 2, 5, 7).unwrap());
        assert_ne!(p, partition(&o, 3, 2, 5, 8).unwrap());
        let mut all: Vec<usize> =
            [&p.pretrain, &p.finetune_pool, &p.val, &p.test].into_iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..o.len()).collect::<Vec<_>>());
        let per_class = |list: &[usize], class: i64| list.iter().filter(|&&i| o.labels[i] == class).count();
        for class in 0..CLASSES as i64 {
            assert_eq!(
                [per_class(&p.test, class), per_class(&p.val, class), per_class(&p.finetune_pool, class)],
                [3, 2, 5]
            );
        }
        let subset = finetune_subset(&p, &o, 2, 1).unwrap();
        assert_eq!(subset.len(), 2 * CLASSES);
        assert!(subset.iter().all(|i| p.finetune_pool.contains(i)));
        assert_ne!(subset, finetune_subset(&p, &o, 2, 2).unwrap());
        assert_eq!(
            finetune_subset(&p, &o, 6, 1),
            Err(PartitionError::PoolTooSmall { class: 0, available: 5, requested: 6 })
        );
        assert_eq!(
            partition(&o, 10, 10, 1, 0),
            Err(PartitionError::ClassTooSmall { class: 0, available: 20, needed: 21 })
        );
    }
}
