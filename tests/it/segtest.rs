//! `harness segtest` on a tiny MATLAB-v7.3-layout gtsegs file written with h5py
//! (python/fixtures/segtest.py), against the metrics the same script computes with timm's forward, a
//! full-matrix GAE rollout and the reference's formulas; a broken entry is listed, never scored.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::support::segtest::segtest_fixture;
use crate::support::{hub, python, scratch, HARNESS};

fn segtest(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(HARNESS)
        .args(["segtest", "--quiet", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// Percentage points within which bf16's metrics must lie of fp32's on the fixture.
const BF16_POINTS: f64 = 1.0;

/// The metrics of a long CSV that `harness segtest` wrote, by name.
fn long_values(csv: &Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("model,method,seed,dataset,protocol,metric,value"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .inspect(|f| {
            assert_eq!(&f[..5], ["vit_tiny_patch16_224", "original", "0", "imagenet-segmentation", "standard"])
        })
        .map(|f| (f[5].to_string(), f[6].parse().unwrap()))
        .collect()
}

#[test]
fn segtest_matches_the_reference_computation() {
    let data = segtest_fixture();
    let expected = crate::support::segtest::expected(&data);
    let out = scratch("segtest");
    let csv = out.join("long.csv");
    let table = out.join("table3.csv");
    let result = segtest(
        &[
            "--batch-size",
            "2",
            "--csv",
            csv.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
            "--max-unreadable",
            "0.5",
        ],
        &data.join("gtsegs.mat"),
    );
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    let got = long_values(&csv);
    for metric in ["pixel_accuracy", "miou", "map"] {
        let want = expected[metric].as_f64().unwrap();
        let have = got[metric];
        // Percent; a pixel within float rounding of its image's mean could flip (0.0004 points each).
        assert!((have - want).abs() < 0.01, "{metric}: harness {have}, reference {want}");
    }
    // The metrics are informative here: neither all right nor all wrong.
    assert!(got["miou"] > 5.0 && got["miou"] < 95.0, "{got:?}");

    let table_text = std::fs::read_to_string(&table).unwrap();
    assert!(
        table_text.starts_with("model,method,pixel_accuracy,miou,map\nvit_tiny_patch16_224,original,"),
        "{table_text}"
    );
    assert!(std::fs::read_to_string(table.with_extension("md")).unwrap().contains("| miou |"));

    let log = std::fs::read_to_string(csv.with_extension("unreadable.log")).unwrap();
    let broken = expected["unreadable"][0].as_u64().unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains(&format!("gtsegs.mat[{broken}]\t")) && log.contains("shape"), "{log}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains(&format!("({} images, 1 unreadable", expected["images"])), "{stdout}");

    // bf16 autocast: the relevance from bf16 matmuls scores close to fp32's (the reference's).
    if robustvit::ops::cpu_has_bf16() {
        let csv = out.join("bf16.csv");
        let args = ["--batch-size", "2", "--max-unreadable", "0.5", "--precision", "bf16", "--csv"];
        let result = segtest(&[&args[..], &[csv.to_str().unwrap()]].concat(), &data.join("gtsegs.mat"));
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        assert!(String::from_utf8_lossy(&result.stdout).contains("segmentation bf16: pixel accuracy"));
        let bf16 = long_values(&csv);
        for metric in ["pixel_accuracy", "miou", "map"] {
            let (have, want) = (bf16[metric], expected[metric].as_f64().unwrap());
            assert!((have - want).abs() < BF16_POINTS, "bf16 {metric}: {have}, fp32 reference {want}");
        }
        // The flag is used: bf16 does not reproduce fp32's numbers (measured: 0.08 to 0.18 points apart).
        assert!(bf16.iter().any(|(metric, v)| (v - got[metric]).abs() > 1e-3), "bf16 {bf16:?}, fp32 {got:?}");
    }

    // One unreadable entry in a handful is more than the default 1%: the test stops, naming the log.
    let strict =
        segtest(&["--batch-size", "2", "--csv", out.join("strict.csv").to_str().unwrap()], &data.join("gtsegs.mat"));
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success() && stderr.contains("more than the 1.00% allowed"), "{stderr}");
    assert!(stderr.contains("strict.unreadable.log") && !out.join("strict.csv").exists(), "{stderr}");
}

#[test]
fn segtest_refuses_files_that_are_not_gtsegs() {
    let out = scratch("segtest-bad");
    let not_hdf5 = out.join("notes.mat");
    std::fs::write(&not_hdf5, b"MATLAB 5.0 MAT-file").unwrap();
    let result = segtest(&[], &not_hdf5);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("notes.mat") && stderr.contains("HDF5"), "{stderr}");

    // An HDF5 file without the cell arrays names what is missing.
    let other = out.join("other.h5");
    let status = Command::new(python())
        .args(["-c", "import h5py, sys; h5py.File(sys.argv[1], 'w').create_dataset('x', data=[1])"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let result = segtest(&[], &other);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("other.h5") && stderr.contains("/value/img"), "{stderr}");

    let missing = segtest(&[], &out.join("absent.mat"));
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("absent.mat"));
}
