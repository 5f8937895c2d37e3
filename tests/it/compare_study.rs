//! `harness compare --data STUDY.toml` end to end on tiny real-layout data: an ImageNet-S fixture for
//! finetuning (its images double as an `imagenet-val` folder), the gtsegs fixture for the segmentation
//! test, a timm-made vit_tiny at 64 px as the original. Every table is written with one row per method, the
//! original's segmentation row equals the reference computation of python/fixtures/segtest.py, every
//! finetuned model differs from the original; a run killed mid-way and rerun gives the same bytes as three
//! shards, each straight through, merged by `harness report`; a study that cannot run stops before any
//! training, naming every problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::imagenet_s::write_imagenet_s;
use crate::support::{max_weight_change, scratch, segtest, study_hub, HARNESS};

fn csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// `harness compare --baselines gradmask --quiet --data STUDY --out OUT ARGS...`, not yet run.
fn compare(study: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(HARNESS);
    cmd.args(["compare", "--baselines", "gradmask", "--quiet", "--data"]).arg(study).arg("--out").arg(out).args(args);
    cmd
}

fn succeeded(output: Output) -> Output {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The study of these tests: vit_tiny at 64 px (the paper's ViT-B settings and twice them), imagenet-val and the
/// segmentation test, 2 epochs on 2 classes; the gtsegs fixture's one broken entry is allowed.
fn write_study(root: &Path) -> PathBuf {
    write_imagenet_s(&root.join("imagenet-s"), 3, 3);
    let study = root.join("study.toml");
    let text = format!(
        "max_unreadable = 0.5\n\n\
         [imagenet_s]\nimages = {images:?}\nmasks = {masks:?}\n\n\
         [[models]]\nname = \"vit_tiny_patch16_224\"\ncheckpoint = {hub:?}\npreset = \"vit-b\"\n\n\
         [[datasets]]\nkind = \"imagenet-val\"\npath = {images:?}\n\n\
         [segmentation]\npath = {mat:?}\n\n\
         [finetune]\nepochs = 2\ntrain_classes = 2\nper_class = 3\nval_per_class = 1\ngrid = [1.0, 2.0]\n",
        images = root.join("imagenet-s/images"),
        masks = root.join("imagenet-s/masks"),
        hub = study_hub(),
        mat = segtest::segtest_fixture().join("gtsegs.mat"),
    );
    std::fs::write(&study, text).unwrap();
    study
}

/// The long file and every table of a study folder, by name.
fn tables(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name == "results_long.csv" || name.starts_with("table_"))
        .map(|name| (name.clone(), std::fs::read(dir.join(&name)).unwrap()))
        .collect();
    files.sort();
    files
}

fn assert_same_tables(want: &Path, have: &Path, what: &str) {
    let (want, have) = (tables(want), tables(have));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&want), names(&have), "{what}: other files");
    for ((name, a), (_, b)) in want.iter().zip(&have) {
        assert!(a == b, "{what}: {name} differs\n{}\n---\n{}", String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    }
}

#[test]
fn study_finetunes_evaluates_and_writes_every_table_sharded_and_resumed_alike() {
    let root = scratch("compare-study");
    let study = write_study(&root);
    let seg = segtest::segtest_fixture();
    let expected = segtest::expected_of_study_model(&seg);

    let plan = succeeded(compare(&study, &root.join("plan"), &["--plan"]).output().unwrap());
    let plan = String::from_utf8_lossy(&plan.stdout);
    for job in ["job   1  vit_tiny_patch16_224 original", "job   3  vit_tiny_patch16_224 gradmask seed 0"] {
        assert!(plan.contains(job), "{plan}");
    }
    assert!(plan.contains("3 of 3 jobs, about") && !root.join("plan/runs").exists(), "{plan}");

    // Killed during the method's second epoch (its first is saved), then the same command again: the run
    // whose tables are checked below, and which three shards, each straight through, must equal.
    let out = root.join("out");
    let first_epoch = out.join("runs/vit_tiny_patch16_224/seed0/ours/setting1/last/state.json");
    let mut child = compare(&study, &out, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !first_epoch.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the study ended before its first epoch was saved");
        assert!(started.elapsed() < Duration::from_secs(300), "no epoch saved in 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("runs/vit_tiny_patch16_224/seed0/gradmask/selected.json").exists());
    let run = succeeded(compare(&study, &out, &[]).output().unwrap());
    let run = String::from_utf8_lossy(&run.stdout);
    assert!(run.contains("3 of 3 jobs (not timed under --quiet)") && !run.contains("measured"), "{run}");
    let accuracy = csv(&out.join("table_accuracy.csv"));
    assert_eq!(accuracy[0], ["model", "method", "imagenet-val_top1", "imagenet-val_top5"]);
    let methods: Vec<&str> = accuracy[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(methods, ["original", "ours", "gradmask"]);
    let shift = csv(&out.join("table_shift.csv"));
    assert_eq!(shift[0][2], "imagenet-val_top1_delta");
    assert_eq!(shift.len(), 3, "ours and gradmask against the original");
    let split = csv(&out.join("table_class_split.csv"));
    assert_eq!(split[0][2..4], ["imagenet-val_top1_finetune_classes", "imagenet-val_top1_other_classes"]);
    assert_eq!(split.len(), 4, "{split:?}");
    let settings = csv(&out.join("table_settings.csv"));
    assert_eq!(settings.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["method", "ours", "gradmask"]);
    assert!(settings[1..].iter().all(|r| r[4] == "2" && r[10] == "guarded-penalty"), "{settings:?}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["settings"].as_array().map(Vec::len), Some(2), "{manifest}");

    let table3 = csv(&out.join("table_segmentation.csv"));
    assert_eq!(table3[0], ["model", "method", "pixel_accuracy", "miou", "map"]);
    assert_eq!(table3.len(), 4, "original, ours, gradmask");
    let original = table3.iter().find(|r| r[1] == "original").unwrap();
    for (k, metric) in ["pixel_accuracy", "miou", "map"].iter().enumerate() {
        let have: f64 = original[2 + k].parse().unwrap();
        let want = expected[*metric].as_f64().unwrap();
        assert!((have - want).abs() < 0.01, "original {metric}: study {have}, reference {want}");
    }
    for row in &table3[1..] {
        assert!(row[2..].iter().all(|v| v.parse::<f64>().is_ok_and(|x| (0.0..=100.0).contains(&x))), "{row:?}");
    }
    let long = std::fs::read_to_string(out.join("results_long.csv")).unwrap();
    assert_eq!(long.lines().filter(|l| l.contains(",imagenet-segmentation,")).count(), 9);
    for method in ["ours", "gradmask"] {
        let job = out.join("runs/vit_tiny_patch16_224/seed0").join(method);
        let selected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(job.join("selected.json")).unwrap()).unwrap();
        let run = out.join(selected["run"].as_str().unwrap());
        assert!(run.starts_with(&job) && run.ends_with(format!("setting{}", selected["setting"])), "{selected}");
        let moved = max_weight_change(&study_hub().join("model.safetensors"), &run.join("best/model.safetensors"));
        assert!(moved > 0.0, "{method}: the finetuned weights equal the original's");
        let manifest = robustvit::train::RunManifest::read(&run.join("manifest.json")).unwrap();
        assert_eq!(manifest.data.unwrap().train_classes.len(), 2);
    }
    // Rerun into the same folder: everything is found done, nothing changes.
    let before = tables(&out);
    let rerun = succeeded(compare(&study, &out, &[]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&rerun.stderr).matches("done before: skipped").count(), 2);
    assert!(tables(&out) == before, "a rerun changed the tables");

    // Three shards, each its own process and folder, merged: as scripts/cluster/slurm-study.sh submits them
    // (sbatch here runs each array task at once, in turn).
    let cluster = root.join("cluster");
    let path = format!("{}:{}", crate::support::root().join("tests/it/support/fake-slurm").display(), env!("PATH"));
    let slurm = Command::new(crate::support::root().join("scripts/cluster/slurm-study.sh"))
        .arg(&study)
        .arg(&cluster)
        .arg("3")
        .env("PATH", path)
        .env("HARNESS", HARNESS)
        .env("COMPARE_ARGS", "--baselines gradmask")
        .output()
        .unwrap();
    succeeded(slurm);
    for i in 1..=3 {
        let shard = csv(&cluster.join(format!("shard-{i}/results_long.csv")));
        assert!(shard.len() > 1, "shard {i} measured nothing");
    }
    assert_same_tables(&out, &cluster.join("merged"), "3 shards merged");

    // Folders of another study (here: other seeds) are not merged.
    let other = root.join("other-seeds");
    std::fs::create_dir_all(&other).unwrap();
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    std::fs::write(other.join("manifest.json"), manifest.replace("\"seeds\": 1", "\"seeds\": 2")).unwrap();
    std::fs::copy(out.join("results_long.csv"), other.join("results_long.csv")).unwrap();
    let result =
        Command::new(HARNESS).arg("report").arg(&out).arg(&other).arg("--out").arg(root.join("mixed")).output();
    let stderr = String::from_utf8_lossy(&result.as_ref().unwrap().stderr).into_owned();
    assert!(!result.unwrap().status.success() && stderr.contains("hold different studies"), "{stderr}");
}

#[test]
fn a_study_that_cannot_run_stops_before_training_naming_every_problem() {
    let root = scratch("compare-study-refused");
    let study = write_study(&root);
    let text = std::fs::read_to_string(&study).unwrap();
    // The paper gives no GradMask setting for ViT-L; a config.json with a model_args key this ViT lacks.
    let no_baseline = text.replace("preset = \"vit-b\"", "preset = \"vit-l\"");
    let unknown = root.join("unknown-arg");
    std::fs::create_dir_all(&unknown).unwrap();
    let config = std::fs::read_to_string(study_hub().join("config.json")).unwrap();
    std::fs::write(unknown.join("config.json"), config.replace("\"in_chans\": 3,", "\"in_chans\": 3, \"foo\": 1,"))
        .unwrap();
    std::fs::copy(study_hub().join("model.safetensors"), unknown.join("model.safetensors")).unwrap();
    let second = format!(
        "[[models]]\nname = \"second\"\narchitecture = \"vit_tiny_patch16_224\"\ncheckpoint = {unknown:?}\npreset = \"vit-b\"\n\n\
         [[models]]\nname = \"third\"\narchitecture = \"vit_tiny_patch16_224\"\ncheckpoint = {:?}\npreset = \"vit-b\"\n\n[[datasets]]",
        study_hub()
    );
    std::fs::write(&study, no_baseline.replacen("[[datasets]]", &second, 1)).unwrap();
    let out = root.join("out");
    // A job beyond the study is refused before the checks: its error, not theirs.
    let beyond = compare(&study, &out, &["--job", "99"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&beyond.stderr);
    assert!(!beyond.status.success() && stderr.contains("--job 99: the study has jobs 1 to 9"), "{stderr}");
    assert!(!stderr.contains("cannot start"), "{stderr}");
    let result = compare(&study, &out, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    assert!(stderr.contains("study.toml: the study cannot start"), "{stderr}");
    assert!(stderr.contains("no gradmask setting for vit-l") && stderr.contains("add `gradmask = {"), "{stderr}");
    assert!(stderr.contains("model second") && stderr.contains("foo"), "{stderr}");
    assert!(stderr.contains("models vit_tiny_patch16_224 and third hold the same weights"), "{stderr}");
    assert!(!out.join("runs").exists() && !out.join("results_long.csv").exists());

    // Flags of the embedded benchmark are refused with a study, and the study's flags without one.
    for (args, flag) in [(&["--quick"][..], "--quick"), (&["--tint"], "--tint"), (&["--ablations"], "--ablations")] {
        let result = compare(&study, &out, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && stderr.contains(flag) && stderr.contains("does not apply"), "{stderr}");
    }
    for flag in ["--plan", "--job=1", "--shard=1/2"] {
        let result = Command::new(HARNESS).args(["compare", flag, "--out"]).arg(&out).output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && stderr.contains("--data"), "{flag}: {stderr}");
    }
}

#[test]
fn tokencut_masks_give_not_annotated_rows_beside_the_annotated_ones_from_the_same_images() {
    let root = scratch("compare-study-tokencut");
    let study = write_study(&root);
    // One setting and one epoch: what differs here is where the masks come from, not the training.
    let text = std::fs::read_to_string(&study)
        .unwrap()
        .replace("grid = [1.0, 2.0]", "grid = [1.0]")
        .replace("epochs = 2", "epochs = 1");
    // An image without an annotated mask: the split never draws it, so no TokenCut mask is made for it
    // beside annotated masks; alone, TokenCut masks every image.
    let class = std::fs::read_dir(root.join("imagenet-s/images")).unwrap().next().unwrap().unwrap().path();
    std::fs::copy(class.join("img0.JPEG"), class.join("extra.JPEG")).unwrap();
    let annotated_images = 9;
    let masks_line = format!("masks = {:?}", root.join("imagenet-s/masks"));
    let dino = crate::tokencut::tokencut_fixture().join("separating/hub");
    let section = format!("\n[tokencut]\ncheckpoint = {dino:?}\nmin_pixels = 0\n");
    let only_tokencut = text.replace(&masks_line, "masks = \"tokencut\"");

    // Without its [tokencut] section a study of TokenCut masks only is refused before any work.
    std::fs::write(&study, &only_tokencut).unwrap();
    let refused = compare(&study, &root.join("refused"), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("needs a [tokencut] section"), "{stderr}");
    // With it, the masks of every image are made and only "not annotated" rows are planned.
    std::fs::write(&study, format!("{only_tokencut}{section}")).unwrap();
    let plan = succeeded(compare(&study, &root.join("alone"), &["--plan"]).output().unwrap());
    let stderr = String::from_utf8_lossy(&plan.stderr);
    let written = format!("tokencut masks: {} written, 0 already there", annotated_images + 1);
    assert!(stderr.contains(&written), "{stderr}");
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(stdout.contains("job   2  vit_tiny_patch16_224 ours (not annotated) seed 0"), "{stdout}");
    assert!(stdout.contains("3 of 3 jobs"), "{stdout}");

    // Beside annotated masks: both sets of rows in every table, each pair finetuned on the same images.
    std::fs::write(&study, format!("{text}{section}")).unwrap();
    let out = root.join("out");
    let run = succeeded(compare(&study, &out, &[]).output().unwrap());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let written = format!("tokencut masks: {annotated_images} written, 0 already there");
    assert!(stderr.contains(&written), "{stderr}");
    let labels = ["original", "ours", "gradmask", "ours (not annotated)", "gradmask (not annotated)"];
    for table in ["table_accuracy.csv", "table_segmentation.csv", "table_shift.csv", "table_settings.csv"] {
        let rows = csv(&out.join(table));
        let have: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
        let want: Vec<&str> = labels
            .iter()
            .copied()
            .filter(|l| table == "table_accuracy.csv" || table == "table_segmentation.csv" || *l != "original")
            .collect();
        assert_eq!(have, want, "{table}");
    }
    let split = |dir: &str| {
        let path = out.join("runs/vit_tiny_patch16_224/seed0").join(dir).join("manifest.json");
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        manifest["data"].clone()
    };
    for method in ["ours", "gradmask"] {
        let (annotated, not_annotated) = (split(method), split(&format!("{method}-not-annotated")));
        for side in ["train_images", "val_images"] {
            assert_eq!(annotated[side], not_annotated[side], "{method}: {side}");
        }
        assert_eq!(not_annotated["masks_from"].as_str().map(PathBuf::from), Some(out.join("masks-tokencut")));
        assert!(annotated["masks_from"].is_null());
    }
    // Their logs of unreadable entries (the gtsegs fixture's broken one) have file names without spaces.
    let log = out.join("unreadable/vit_tiny_patch16_224.ours-not-annotated.seed0.imagenet-segmentation.log");
    assert!(log.is_file(), "{}", log.display());
    // A rerun finds the masks made and every job done.
    let rerun = succeeded(compare(&study, &out, &[]).output().unwrap());
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    let found = format!("tokencut masks: 0 written, {annotated_images} already there");
    assert!(stderr.contains(&found) && stderr.matches("done before: skipped").count() == 4, "{stderr}");
}
