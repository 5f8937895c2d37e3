//! `harness compare --quick` end to end on the embedded benchmark: every table exists with its documented
//! columns and one row per method, a rerun with the same seed writes byte-identical CSVs, and the original
//! model really took the shortcut (shifted accuracy far below matched); finetuning changed every model and
//! moved the method's relevance; the relevance figure is written.
use std::path::{Path, PathBuf};
use std::process::Command;

use robustvit::train::methods::MethodKind;

use crate::support::{max_weight_change, root, HARNESS};

fn objects() -> PathBuf {
    root().join("target/downloads/animal_mnist-0.4-py3-none-any.whl")
}

fn compare(out: &Path, args: &[&str]) {
    let status = Command::new(HARNESS)
        .args(["compare", "--quick", "--quiet"])
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--objects")
        .arg(objects())
        .status()
        .unwrap();
    assert!(status.success(), "harness compare --quick failed");
}

/// The rows of `results_long.csv` of `method` whose dataset is the segmentation test of one class.
fn per_class_segmentation(long: &[Vec<String>], method: &str) -> std::collections::BTreeSet<String> {
    long.iter().filter(|r| r[1] == method && r[3].starts_with("segmentation_")).map(|r| r[3].clone()).collect()
}

fn csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn cell(table: &[Vec<String>], method: &str, column: &str) -> f64 {
    let k = table[0].iter().position(|h| h == column).unwrap_or_else(|| panic!("no column {column}"));
    let row = table.iter().find(|r| r[1] == method).unwrap_or_else(|| panic!("no row {method}"));
    row[k].parse().unwrap()
}

#[test]
fn quick_compare_writes_every_table_reproducibly_and_shows_the_shortcut() {
    assert!(objects().is_file(), "run `make benchmark-data` first (the Makefile's test target does)");
    let out = root().join("target/test-tmp/compare");
    let _ = std::fs::remove_dir_all(&out);
    compare(&out, &["--baselines", "gradmask,rrr", "--ablations"]);

    let methods = ["control", "original", "ce", "ours", "gradmask", "rrr"];
    let accuracy = csv(&out.join("table_accuracy.csv"));
    let mut header = vec!["model".to_string(), "method".to_string()];
    for d in ["matched", "shuffled", "black", "bg_only"] {
        header.push(format!("{d}_top1"));
        header.push(format!("{d}_top5"));
    }
    assert_eq!(accuracy[0], header);
    assert_eq!(accuracy[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), methods);
    let shift = csv(&out.join("table_shift.csv"));
    assert_eq!(shift[0][2], "matched_top1_delta");
    assert_eq!(
        shift[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["control", "ce", "ours", "gradmask", "rrr"]
    );
    let seg = csv(&out.join("table_segmentation.csv"));
    assert_eq!(seg[0], ["model", "method", "pixel_accuracy", "miou", "map"]);
    assert_eq!(seg.len(), 1 + methods.len());
    let long = csv(&out.join("results_long.csv"));
    assert_eq!(long[0], ["model", "method", "seed", "dataset", "protocol", "metric", "value"]);
    // The segmentation test holds every class, and reports each.
    let animals = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"];
    for method in methods {
        let classes = per_class_segmentation(&long, method);
        assert_eq!(classes, animals.iter().map(|a| format!("segmentation_{a}")).collect(), "{method}");
    }
    // Cross-entropy on the labels alone trains without any penalty term.
    let ce_terms = csv(&out.join("runs/seed0/ce-0/metrics.csv"))[0].clone();
    assert_eq!(ce_terms, ["epoch", "lr", "train_total", "val_total", "val_accuracy", "seconds"]);
    // Each method's shuffled top-1 under each selection rule; guard_2 is the rule the tables use.
    let selection = csv(&out.join("table_selection.csv"));
    assert_eq!(selection[0], ["model", "method", "val_loss", "guard_1", "guard_2", "guard_5"]);
    assert_eq!(selection[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["ce", "ours", "gradmask", "rrr"]);
    for method in ["ce", "ours", "gradmask", "rrr"] {
        assert_eq!(cell(&selection, method, "guard_2"), cell(&accuracy, method, "shuffled_top1"), "{method}");
    }
    // Ours against every other method: one seed, so no standard error, but an interval around the mean.
    let significance = csv(&out.join("table_significance.csv"));
    assert_eq!(significance[0], ["model", "method", "mean_difference", "se", "ci95_low", "ci95_high"]);
    for method in ["control", "original", "ce", "gradmask", "rrr"] {
        let diff = cell(&accuracy, "ours", "shuffled_top1") - cell(&accuracy, method, "shuffled_top1");
        assert!((cell(&significance, method, "mean_difference") - diff).abs() < 0.011, "{method}");
        let (low, high) = (cell(&significance, method, "ci95_low"), cell(&significance, method, "ci95_high"));
        assert!(low <= diff + 0.01 && diff - 0.01 <= high && low < high, "{method}: [{low}, {high}] around {diff}");
    }
    let markdown = std::fs::read_to_string(out.join("table_accuracy.md")).unwrap();
    assert!(markdown.contains("| bg_only_top1 (lower is better) |"), "{markdown}");
    let ablation = csv(&out.join("table_ablation.csv"));
    assert_eq!(ablation[0][..3], ["model", "method", "matched_top1"]);
    assert_eq!(
        ablation[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["ours", "ours_no_cls", "ours_no_bg", "ours_no_fg", "ours_gt_cls"]
    );
    for stem in ["table_accuracy", "table_shift", "table_segmentation", "table_ablation", "table_selection"] {
        assert!(out.join(format!("{stem}.md")).is_file());
    }

    // The relevance figure: rows of input, original and ours at 4 x 32 px over 3-line captions (32 px),
    // at most 3 rows for each of the 3 cases.
    let figure = image::open(out.join("relevance_shuffled.png")).unwrap();
    assert_eq!(figure.width(), 3 * 128 + 2 * 4);
    let rows = (figure.height() + 4) / (128 + 32 + 4);
    assert!(
        (1..=9).contains(&rows) && rows * (128 + 32 + 4) == figure.height() + 4,
        "figure height {}",
        figure.height()
    );

    // Finetuning did something: every selected checkpoint differs from the original it started from, and
    // the method moved the relevance where the segmentation test sees it (with no update it would score
    // exactly the original's numbers).
    let original = out.join("models/original/model.safetensors");
    for method in ["ours", "gradmask", "rrr"] {
        let moved = max_weight_change(&original, &out.join(format!("runs/seed0/{method}-0/best/model.safetensors")));
        assert!(moved > 1e-6, "{method}: the finetuned weights equal the original's (max change {moved})");
    }
    let (ours, before) = (cell(&seg, "ours", "miou"), cell(&seg, "original", "miou"));
    assert!(ours > before + 0.5, "the method left the relevance where it was: mIoU {before} -> {ours}");

    // The benchmark has a shortcut: the original is right on matched backgrounds, not on shuffled ones.
    let (matched, shuffled) =
        (cell(&accuracy, "original", "matched_top1"), cell(&accuracy, "original", "shuffled_top1"));
    assert!(matched > 80.0 && shuffled < matched - 25.0, "original: matched {matched}, shuffled {shuffled}");

    // Same seed, same bytes: a second run of fewer methods (the copied original models are reused; rrr and
    // the ablations run after the others and draw from seeds of their own) writes the first run's lines for
    // each of its methods.
    let again = root().join("target/test-tmp/compare-again");
    let _ = std::fs::remove_dir_all(&again);
    std::fs::create_dir_all(again.join("models")).unwrap();
    std::fs::copy(out.join("models/recipe.json"), again.join("models/recipe.json")).unwrap();
    for model in ["control", "original"] {
        let (from, to) = (out.join("models").join(model), again.join("models").join(model));
        std::fs::create_dir_all(&to).unwrap();
        for file in std::fs::read_dir(&from).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
    compare(&again, &["--baselines", "gradmask"]);
    for table in ["results_long.csv", "table_accuracy.csv", "table_segmentation.csv"] {
        let (first, second) = (csv(&out.join(table)), csv(&again.join(table)));
        let kept: Vec<&Vec<String>> = first.iter().filter(|r| r[1] != "rrr" && !r[1].starts_with("ours_")).collect();
        assert_eq!(kept, second.iter().collect::<Vec<_>>(), "{table} differs between two runs with the same seed");
    }
}

#[test]
fn quick_compare_on_fashion_mnist() {
    let out = root().join("target/test-tmp/compare-fashion");
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(HARNESS)
        .args(["compare", "--baselines", "gradmask", "--quick", "--quiet", "--objects", "fashion-mnist", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "harness compare --quick --objects fashion-mnist failed");
    let accuracy = csv(&out.join("table_accuracy.csv"));
    assert_eq!(
        accuracy[1..].iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["control", "original", "ce", "ours", "gradmask"]
    );
    let long = csv(&out.join("results_long.csv"));
    let classes = per_class_segmentation(&long, "ours");
    assert!(classes.len() == 10 && classes.contains("segmentation_ankle-boot"), "{classes:?}");
    // The shortcut is there on these objects too: the original is right on matched backgrounds far more
    // often than on shuffled ones.
    let (matched, shuffled) =
        (cell(&accuracy, "original", "matched_top1"), cell(&accuracy, "original", "shuffled_top1"));
    assert!(matched > shuffled + 20.0, "original: matched {matched}, shuffled {shuffled}");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("FashionMnist"), "{manifest}");
    // A misspelt object set is named as such before any work, not read as a missing wheel.
    let typo = root().join("target/test-tmp/compare-typo");
    let result =
        Command::new(HARNESS).args(["compare", "--quick", "--objects", "fashion_mnist", "--out"]).arg(&typo).output();
    let stderr = String::from_utf8_lossy(&result.as_ref().unwrap().stderr).into_owned();
    assert!(!result.unwrap().status.success() && stderr.contains("--objects \"fashion_mnist\": use"), "{stderr}");
    assert!(!typo.exists(), "a refused run wrote {}", typo.display());
}

#[test]
fn study_configs_parse_and_bad_entries_name_the_file() {
    // The shipped example parses (its paths are placeholders, so it stops at the first missing folder).
    let example = root().join("scripts/studies/paper.toml");
    let err = robustvit::study::config::read(&example).unwrap_err().to_string();
    assert!(err.contains("paper.toml") && err.contains("/data/imagenet/train"), "{err}");
    // Every model of the shipped study has a weight tag and settings for every method; it evaluates as the
    // reference code does.
    let paper = robustvit::study::config::parse(&std::fs::read_to_string(&example).unwrap(), &example).unwrap();
    assert_eq!(paper.models.len(), 7);
    assert_eq!(paper.protocol(), robustvit::data::eval_sets::Protocol::Reference);
    for entry in &paper.models {
        assert!(entry.name.contains('.'), "{}: no weight tag", entry.name);
        for kind in [MethodKind::Ours, MethodKind::Gradmask, MethodKind::Rrr] {
            let settings = robustvit::study::plan::settings(entry, kind, paper.grid());
            assert!(settings.is_ok_and(|s| s.len() == 1), "{} {kind}", entry.name);
        }
    }
    let dir = root().join("target/test-tmp/study");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let write = |body: &str| {
        let path = dir.join("study.toml");
        std::fs::write(
            &path,
            format!("[imagenet_s]\nimages = {:?}\nmasks = {:?}\n{body}", dir.join("images"), dir.join("masks")),
        )
        .unwrap();
        robustvit::study::config::read(&path).map(|_| ()).map_err(|e| format!("{e:#}"))
    };
    let hub = root().join("Cargo.toml");
    let model = format!("[[models]]\nname = \"deit_small_patch16_224\"\ncheckpoint = {hub:?}\n");
    assert!(write(&model).is_ok());
    let unknown = write(&format!("{model}[[datasets]]\nkind = \"imagenet-z\"\npath = {:?}\n", dir)).unwrap_err();
    assert!(unknown.contains("study.toml") && unknown.contains("imagenet-z"), "{unknown}");
    let typo = write(&format!("{model}[[datasets]]\nkind = \"objectnet\"\npaht = \"x\"\n")).unwrap_err();
    assert!(typo.contains("study.toml"), "{typo}");
}
