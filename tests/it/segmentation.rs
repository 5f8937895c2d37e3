//! average_precision against scikit-learn, SegmentationMetrics against a numpy re-implementation of the
//! reference evaluation (fixtures from python/fixtures/segmentation_metrics.py, made with the .venv's
//! scikit-learn on first use).
use ndarray::{arr2, Array2};
use robustvit::eval::segmentation::{average_precision, SegmentationMetrics};
use serde::Deserialize;

use crate::support::made;

#[derive(Deserialize)]
struct ApCase {
    scores: Vec<f32>,
    truth: Vec<bool>,
    expected: f64,
}
#[derive(Deserialize)]
struct Image {
    shape: (usize, usize),
    map: Vec<f32>,
    truth: Vec<bool>,
}
#[derive(Deserialize)]
struct SegCase {
    images: Vec<Image>,
    pixel_accuracy: f64,
    miou: f64,
    map: f64,
}
#[derive(Deserialize)]
struct Fixtures {
    ap: Vec<ApCase>,
    segmentation: Vec<SegCase>,
}

fn fixtures() -> Fixtures {
    let dir = made("segmentation-metrics");
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn average_precision_matches_sklearn() {
    let f = fixtures();
    let mut worst = 0.0f64;
    for (i, c) in f.ap.iter().enumerate() {
        let got = average_precision(&c.scores, &c.truth);
        let err = (got - c.expected).abs();
        worst = worst.max(err);
        assert!(err < 1e-12, "case {i}: got {got}, sklearn {}", c.expected);
    }
    eprintln!("{} AP cases, max |err| {worst:e}", f.ap.len());
}

#[test]
fn average_precision_rejects_what_sklearn_rejects() {
    assert!(average_precision(&[], &[]).is_nan());
    assert!(average_precision(&[0.1, 0.2], &[true]).is_nan());
    assert!(average_precision(&[f32::NAN, 0.2], &[true, false]).is_nan());
    assert!(average_precision(&[f32::INFINITY, 0.2], &[true, false]).is_nan());
}

#[test]
fn segmentation_metrics_match_reference_formulas() {
    let f = fixtures();
    let mut worst = 0.0f64;
    for (i, c) in f.segmentation.iter().enumerate() {
        let mut m = SegmentationMetrics::new();
        for im in &c.images {
            let map = Array2::from_shape_vec(im.shape, im.map.clone()).unwrap();
            let truth = Array2::from_shape_vec(im.shape, im.truth.clone()).unwrap();
            m.add(map.view(), truth.view()).unwrap();
        }
        for (name, got, want) in [
            ("pixel_accuracy", m.pixel_accuracy(), c.pixel_accuracy),
            ("miou", m.miou(), c.miou),
            ("map", m.map(), c.map),
        ] {
            worst = worst.max((got - want).abs());
            assert!((got - want).abs() < 1e-12, "dataset {i} {name}: got {got}, reference {want}");
        }
        assert_eq!(m.images(), c.images.len() as u64);
    }
    eprintln!("{} datasets, max |err| {worst:e}", f.segmentation.len());
}

#[test]
fn segmentation_add_rejects_bad_input_without_counting_it() {
    let mut m = SegmentationMetrics::new();
    let empty: (Array2<f32>, Array2<bool>) = (Array2::zeros((0, 3)), Array2::from_elem((0, 3), false));
    assert!(m.add(empty.0.view(), empty.1.view()).is_err());
    assert!(m.add(arr2(&[[0.1, 0.2]]).view(), arr2(&[[true]]).view()).is_err());
    // Same pixel count, other shape: not the same image.
    assert!(m.add(arr2(&[[0.1, 0.2]]).view(), arr2(&[[true], [false]]).view()).is_err());
    assert!(m.add(arr2(&[[f32::NAN, 0.2]]).view(), arr2(&[[true, false]]).view()).is_err());
    assert!(m.add(arr2(&[[f32::MAX, -f32::MAX]]).view(), arr2(&[[true, false]]).view()).is_err());
    assert_eq!(m, SegmentationMetrics::new());
    assert_eq!((m.pixel_accuracy(), m.miou(), m.map()), (0.0, 0.0, 0.0));
}

#[test]
fn segmentation_hand_computed() {
    // map 0.9 0.1 0.8 0.2 -> normalised 1, 0, 7/8, 1/8, mean 1/2: predicted fg, bg, fg, bg.
    // truth fg, fg, bg, bg -> correct 2 of 4; IoU_fg = 1/3, IoU_bg = 1/3.
    let mut m = SegmentationMetrics::new();
    m.add(arr2(&[[0.9, 0.1], [0.8, 0.2]]).view(), arr2(&[[true, true], [false, false]]).view()).unwrap();
    assert!((m.pixel_accuracy() - 0.5).abs() < 1e-12);
    assert!((m.miou() - 1.0 / 3.0).abs() < 1e-12);
    // Pooled scores (1-r | r): [0, 1, 1/8, 7/8 | 1, 0, 7/8, 1/8], positives [0,0,1,1 | 1,1,0,0].
    // Descending: 1 (two tied: one pos, one neg) -> P 1/2 R 1/4; 7/8 (pos + neg) -> P 2/4, R 2/4;
    // 1/8 (pos + neg) -> P 3/6, R 3/4; 0 (pos + neg) -> P 4/8, R 1. AP = 0.5.
    assert!((m.map() - 0.5).abs() < 1e-12);
}
