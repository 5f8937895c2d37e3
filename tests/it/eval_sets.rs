//! Evaluation dataset layouts and the two scoring protocols on hand-made folders and logits.
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use robustvit::data::eval_sets::{scan, score, EvalItem, EvalSetError, Kind, Protocol, Target};
use robustvit::data::imagenet;
use robustvit::eval::accuracy::{split_by_classes, SplitCounts};

const TABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/data/tables");

/// A fresh empty folder per test.
fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "eval-sets-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        name
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn touch(path: PathBuf) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"").unwrap();
}

fn labels(items: &[EvalItem]) -> Vec<(String, usize)> {
    items
        .iter()
        .map(|it| {
            let parent = it.path.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
            (format!("{}/{}", parent, it.path.file_name().unwrap().to_str().unwrap()), it.target.class())
        })
        .collect()
}

fn idx(wnid: &str) -> usize {
    imagenet::index_of(wnid).unwrap()
}

#[test]
fn subset_tables_agree_with_imagenet_table() {
    for set in ["imagenet_a", "imagenet_r"] {
        let wnids = fs::read_to_string(format!("{TABLES}/{set}_synsets.txt")).unwrap();
        let indices = fs::read_to_string(format!("{TABLES}/{set}_indices.txt")).unwrap();
        let wnids: Vec<&str> = wnids.lines().collect();
        let indices: Vec<usize> = indices.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(wnids.len(), 200);
        assert_eq!(indices.len(), 200);
        for (w, i) in wnids.iter().zip(&indices) {
            assert_eq!(imagenet::index_of(w), Some(*i), "{set}: {w}");
        }
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "{set}: indices ascending and distinct");
    }
    let si: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(format!("{TABLES}/si_score_label_to_imagenet.json")).unwrap())
            .unwrap();
    let map = si["mapping"].as_object().unwrap();
    assert_eq!(map.len(), 112);
    assert!(map.values().all(|v| v.as_u64().unwrap() < 1000));
    assert_eq!(map["pitcher (container)"], 725);
}

#[test]
fn kind_and_protocol_names_round_trip() {
    assert_eq!(Kind::ALL.len(), 9);
    for &k in Kind::ALL {
        assert_eq!(k.name().parse::<Kind>().unwrap(), k);
    }
    for &p in Protocol::ALL {
        assert_eq!(p.name().parse::<Protocol>().unwrap(), p);
    }
    let e = "imagenet-c".parse::<Kind>().unwrap_err().to_string();
    assert!(e.contains("unknown evaluation set \"imagenet-c\"") && e.contains("si-rotation"), "{e}");
    let e = "paper".parse::<Protocol>().unwrap_err().to_string();
    assert_eq!(e, "unknown protocol \"paper\": use one of standard, reference");
}

#[test]
fn imagenet_val_wnid_folders() {
    let d = tmp("val");
    touch(d.join("n01440764/b.JPEG"));
    touch(d.join("n01440764/a.JPEG"));
    touch(d.join("n01440764/.DS_Store"));
    touch(d.join("n15075141/x.png"));
    touch(d.join("n15075141/y.jpeg"));
    touch(d.join("LOC_val_solution.csv"));
    let items = scan(Kind::ImagenetVal, &d).unwrap();
    assert_eq!(
        labels(&items),
        vec![
            ("n01440764/a.JPEG".into(), 0),
            ("n01440764/b.JPEG".into(), 0),
            ("n15075141/x.png".into(), 999),
            ("n15075141/y.jpeg".into(), 999)
        ]
    );
    assert!(items.iter().all(|it| matches!(it.target, Target::Class(_))));
    assert_eq!(scan(Kind::ImagenetVal, &d).unwrap(), items, "deterministic");
}

#[test]
fn imagenet_val_errors_name_the_folder() {
    let d = tmp("val-bad");
    touch(d.join("n01440764/a.JPEG"));
    touch(d.join("tench/a.JPEG"));
    match scan(Kind::ImagenetVal, &d) {
        Err(e @ EvalSetError::UnknownClass { .. }) => assert!(e.to_string().contains("tench"), "{e}"),
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(d.join("tench")).unwrap();
    fs::create_dir(d.join("n01443537")).unwrap();
    touch(d.join("n01443537/notes.txt"));
    match scan(Kind::ImagenetVal, &d) {
        Err(e @ EvalSetError::Empty { .. }) => assert!(e.to_string().contains("n01443537"), "{e}"),
        other => panic!("{other:?}"),
    }
    let empty = tmp("val-empty");
    assert!(matches!(scan(Kind::ImagenetVal, &empty), Err(EvalSetError::Empty { .. })));
    let missing = empty.join("nope");
    match scan(Kind::ImagenetSketch, &missing) {
        Err(e @ EvalSetError::Missing { .. }) => assert!(e.to_string().contains("nope"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn imagenet_sketch_as_distributed_and_flat() {
    let d = tmp("sketch");
    touch(d.join("sketch/n01443537/n01443537_1.JPEG"));
    touch(d.join("sketch/n01443537/n01443537_2.jpg"));
    let via_archive = scan(Kind::ImagenetSketch, &d).unwrap();
    assert_eq!(labels(&via_archive).iter().map(|l| l.1).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(scan(Kind::ImagenetSketch, &d.join("sketch")).unwrap(), via_archive);
}

#[test]
fn imagenet_a_and_r_take_only_their_200_classes() {
    let a = tmp("a");
    touch(a.join("n01498041/0.jpg")); // ImageNet-A's first class, ImageNet index 6
    touch(a.join("README.txt"));
    assert_eq!(labels(&scan(Kind::ImagenetA, &a).unwrap()), vec![("n01498041/0.jpg".into(), idx("n01498041"))]);
    assert_eq!(idx("n01498041"), 6);
    // tench (index 0) is an ImageNet class but not one of ImageNet-A's 200.
    touch(a.join("n01440764/0.jpg"));
    match scan(Kind::ImagenetA, &a) {
        Err(e @ EvalSetError::UnknownClass { .. }) => assert!(e.to_string().contains("n01440764"), "{e}"),
        other => panic!("{other:?}"),
    }
    let r = tmp("r");
    touch(r.join("n01443537/art_0.jpg"));
    touch(r.join("n01484850/cartoon_0.jpg"));
    assert_eq!(
        labels(&scan(Kind::ImagenetR, &r).unwrap()),
        vec![("n01443537/art_0.jpg".into(), 1), ("n01484850/cartoon_0.jpg".into(), 2)]
    );
    touch(r.join("n01558993/0.jpg")); // in ImageNet-A, not in ImageNet-R
    assert!(matches!(scan(Kind::ImagenetR, &r), Err(EvalSetError::UnknownClass { .. })));
}

#[test]
fn imagenet_v2_folder_name_is_the_index() {
    let d = tmp("v2");
    for f in ["0", "2", "10", "999"] {
        touch(d.join(f).join("7e3a.jpeg"));
    }
    let got: Vec<usize> = scan(Kind::ImagenetV2, &d).unwrap().iter().map(|it| it.target.class()).collect();
    // Sorted by path ("0" < "10" < "2" < "999"), each labelled by its own folder name.
    assert_eq!(got, vec![0, 10, 2, 999]);
    for bad in ["1000", "007", "n01440764"] {
        touch(d.join(bad).join("x.jpeg"));
        match scan(Kind::ImagenetV2, &d) {
            Err(e @ EvalSetError::UnknownClass { .. }) => assert!(e.to_string().contains(bad), "{e}"),
            other => panic!("{bad}: {other:?}"),
        }
        fs::remove_dir_all(d.join(bad)).unwrap();
    }
}

#[test]
fn si_score_class_string_folders() {
    let d = tmp("si");
    touch(d.join("rotation/pitcher (container)/img_0.jpg"));
    touch(d.join("rotation/ambulance/img_1.jpg"));
    touch(d.join("area/volleyball (ball)/a.jpg"));
    touch(d.join("location20_area02_min0pc/toilet paper/l.jpg"));
    assert_eq!(
        labels(&scan(Kind::SiRotation, &d).unwrap()),
        vec![("ambulance/img_1.jpg".into(), 407), ("pitcher (container)/img_0.jpg".into(), 725)]
    );
    assert_eq!(scan(Kind::SiRotation, &d.join("rotation")).unwrap(), scan(Kind::SiRotation, &d).unwrap());
    assert_eq!(labels(&scan(Kind::SiSize, &d).unwrap()), vec![("volleyball (ball)/a.jpg".into(), 890)]);
    assert_eq!(labels(&scan(Kind::SiLocation, &d).unwrap()), vec![("toilet paper/l.jpg".into(), 999)]);
    touch(d.join("rotation/giraffe/x.jpg"));
    assert!(matches!(scan(Kind::SiRotation, &d), Err(EvalSetError::UnknownClass { .. })));
}

/// ObjectNet 1.0's mapping files in their real format, with a non-identity PyTorch -> devkit-line permutation
/// so that a reader skipping a step of the chain gets the wrong class.
fn objectnet_fixture(name: &str) -> PathBuf {
    let d = tmp(name).join("objectnet-1.0");
    let m = d.join("mappings");
    fs::create_dir_all(&m).unwrap();
    fs::write(
        m.join("folder_to_objectnet_label.json"),
        r#"{"air_freshener": "Air freshener", "alarm_clock": "Alarm clock", "banana": "Banana", "bicycle": "Bicycle", "crane": "Crane"}"#,
    )
    .unwrap();
    // "Bicycle" is mapped but has no image folder: it still takes part in the pooled 113-way scoring.
    fs::write(
        m.join("objectnet_to_imagenet_1k.json"),
        r#"{
 "Alarm clock": "analog clock; digital clock",
 "Banana": "banana",
 "Bicycle": "mountain bike, all-terrain bike, off-roader; bicycle-built-for-two, tandem bicycle, tandem",
 "Crane": "crane"
}"#,
    )
    .unwrap();
    let line_of = |pid: usize| (pid * 7 + 3) % 1000;
    let pytorch: Vec<String> = (0..1000).map(|p| format!("\"{p}\": {}", line_of(p))).collect();
    fs::write(m.join("pytorch_to_imagenet_2012_id.json"), format!("{{{}}}", pytorch.join(", "))).unwrap();
    let mut lines = vec![String::new(); 1000];
    for c in imagenet::classes() {
        lines[line_of(c.index)] = c.name.to_string();
    }
    fs::write(m.join("imagenet_to_label_2012_v2"), lines.join("\n") + "\n").unwrap();
    touch(d.join("images/alarm_clock/1a2b.png"));
    touch(d.join("images/alarm_clock/0c3d.png"));
    touch(d.join("images/banana/9f.png"));
    touch(d.join("images/crane/c.png"));
    touch(d.join("images/air_freshener/77.png")); // unmapped ObjectNet class: skipped
    d
}

#[test]
fn objectnet_mapped_classes_only_with_their_imagenet_sets() {
    let d = objectnet_fixture("on");
    let items = scan(Kind::ObjectNet, &d).unwrap();
    assert_eq!(
        labels(&items),
        vec![
            ("alarm_clock/0c3d.png".into(), 0),
            ("alarm_clock/1a2b.png".into(), 0),
            ("banana/9f.png".into(), 1),
            ("crane/c.png".into(), 3)
        ]
    );
    let Target::ObjectNet { classes, .. } = &items[0].target else { panic!() };
    assert_eq!(classes.labels, ["Alarm clock", "Banana", "Bicycle", "Crane"]);
    // analog clock 409, digital clock 530 in file order; ImageNet's two "crane"s: the later (517) wins.
    assert_eq!(classes.imagenet, vec![vec![409, 530], vec![954], vec![671, 444], vec![517]]);
    // The reference passes the images folder itself, with the mappings beside it.
    assert_eq!(scan(Kind::ObjectNet, &d.join("images")).unwrap(), items);
}

#[test]
fn objectnet_errors() {
    let d = objectnet_fixture("on-bad");
    touch(d.join("images/teapot/1.png"));
    match scan(Kind::ObjectNet, &d) {
        Err(e @ EvalSetError::UnknownClass { .. }) => assert!(e.to_string().contains("teapot"), "{e}"),
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(d.join("images/teapot")).unwrap();

    let to_imagenet = d.join("mappings/objectnet_to_imagenet_1k.json");
    let original = fs::read_to_string(&to_imagenet).unwrap();
    fs::write(&to_imagenet, r#"{"Banana": "plantain"}"#).unwrap();
    match scan(Kind::ObjectNet, &d) {
        Err(e @ EvalSetError::BadMapping { .. }) => assert!(e.to_string().contains("plantain"), "{e}"),
        other => panic!("{other:?}"),
    }
    fs::write(&to_imagenet, "[1, 2]").unwrap();
    assert!(matches!(scan(Kind::ObjectNet, &d), Err(EvalSetError::BadMapping { .. })));
    fs::write(&to_imagenet, original).unwrap();

    let labels_file = d.join("mappings/imagenet_to_label_2012_v2");
    fs::write(&labels_file, "tench, Tinca tinca\n").unwrap();
    assert!(matches!(scan(Kind::ObjectNet, &d), Err(EvalSetError::BadMapping { .. })));
    fs::remove_file(&labels_file).unwrap();
    match scan(Kind::ObjectNet, &d) {
        Err(e @ EvalSetError::MissingMapping { .. }) => {
            assert!(e.to_string().contains("imagenet_to_label_2012_v2"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

fn logits(high: &[(usize, f32)]) -> Vec<f32> {
    let mut l = vec![0.0; 1000];
    for &(i, v) in high {
        l[i] = v;
    }
    l
}

#[test]
fn imagenet_a_r_standard_restricts_to_200_classes() {
    // Global argmax is tench (0), outside ImageNet-A; the target (6) is second.
    let l = logits(&[(0, 9.0), (6, 5.0)]);
    let t = Target::Class(6);
    assert_eq!(score(Kind::ImagenetA, Protocol::Standard, &l, &t), (true, true));
    assert_eq!(score(Kind::ImagenetA, Protocol::Reference, &l, &t), (false, true));
    // ImageNet-R (target 1, goldfish) with six out-of-set classes ahead: top-5 flips as well.
    let l = logits(&[(0, 9.0), (3, 9.0), (5, 9.0), (7, 9.0), (10, 9.0), (12, 9.0), (1, 5.0)]);
    assert_eq!(score(Kind::ImagenetR, Protocol::Standard, &l, &Target::Class(1)), (true, true));
    assert_eq!(score(Kind::ImagenetR, Protocol::Reference, &l, &Target::Class(1)), (false, false));
    // A target outside the 200 can never be hit under the restriction.
    assert_eq!(score(Kind::ImagenetA, Protocol::Standard, &logits(&[(0, 1.0)]), &Target::Class(0)), (false, false));
    // Other sets: both protocols are 1000-way.
    for p in [Protocol::Standard, Protocol::Reference] {
        assert_eq!(score(Kind::ImagenetVal, p, &logits(&[(0, 9.0), (6, 5.0)]), &t), (false, true));
        assert_eq!(score(Kind::SiSize, p, &logits(&[(6, 9.0)]), &t), (true, true));
    }
}

#[test]
fn objectnet_pooled_versus_first_mapped_class() {
    let items = scan(Kind::ObjectNet, &objectnet_fixture("on-score")).unwrap();
    let alarm = &items[0].target; // maps to analog clock 409, digital clock 530
                                  // Predicted digital clock (530): pooled standard counts it, the reference wants analog clock (409) only.
    let l = logits(&[(530, 9.0), (409, -1.0)]);
    assert_eq!(score(Kind::ObjectNet, Protocol::Standard, &l, alarm), (true, true));
    assert_eq!(score(Kind::ObjectNet, Protocol::Reference, &l, alarm), (false, false));
    // Classes outside every mapped ObjectNet class do not compete under pooling.
    let l = logits(&[(0, 9.0), (1, 9.0), (2, 9.0), (3, 9.0), (4, 9.0), (409, 5.0)]);
    assert_eq!(score(Kind::ObjectNet, Protocol::Standard, &l, alarm), (true, true));
    assert_eq!(score(Kind::ObjectNet, Protocol::Reference, &l, alarm), (false, false));
    // Another mapped class (banana) ahead: a standard top-1 miss, still top-5 among the 4 pooled classes.
    let l = logits(&[(954, 9.0), (409, 5.0)]);
    assert_eq!(score(Kind::ObjectNet, Protocol::Standard, &l, alarm), (false, true));
    assert_eq!(score(Kind::ObjectNet, Protocol::Reference, &l, alarm), (false, true));
    // A pooled class is as strong as its best member: bicycle via tandem (444) beats the alarm clock.
    let l = logits(&[(444, 6.0), (671, -3.0), (530, 5.0)]);
    assert_eq!(score(Kind::ObjectNet, Protocol::Standard, &l, alarm), (false, true));
}

#[test]
fn class_split_counts_objectnet_images_by_their_imagenet_classes() {
    // Alarm clock x2 (409, 530), banana (954), crane (517); ObjectNet class ids 0, 0, 1, 3.
    let items = scan(Kind::ObjectNet, &objectnet_fixture("on-split")).unwrap();
    let hits: Vec<(Target, bool, bool)> =
        items.iter().enumerate().map(|(i, item)| (item.target.clone(), i == 0, i != 3)).collect();
    let counts = |classes: &[usize]| split_by_classes(&hits, &classes.iter().copied().collect());
    let side = |images, top1, top5| SplitCounts { images, top1, top5 };
    // Digital clock (530) among the finetuning classes: both alarm-clock images are inside.
    assert_eq!(counts(&[530, 7]), [side(2, 1, 2), side(2, 0, 1)]);
    // ImageNet index 1 (goldfish) is not ObjectNet's class id 1 (banana): nothing is inside.
    assert_eq!(counts(&[1, 3]), [side(0, 0, 0), side(4, 1, 3)]);
    assert_eq!(counts(&[954, 517]), [side(2, 0, 1), side(2, 1, 2)]);
    assert_eq!(counts(&[954]).map(|s| s.percent()), [Some((0.0, 100.0)), Some((100.0 / 3.0, 200.0 / 3.0))]);
}

#[test]
fn scoring_ties_and_bad_input() {
    // Equal scores go to the lower index, like a stable argmax.
    let l = logits(&[(3, 1.0), (7, 1.0)]);
    assert_eq!(score(Kind::ImagenetVal, Protocol::Reference, &l, &Target::Class(3)), (true, true));
    assert_eq!(score(Kind::ImagenetVal, Protocol::Reference, &l, &Target::Class(7)), (false, true));
    // Wrong logit count or an out-of-range class: a miss, not a panic.
    assert_eq!(score(Kind::ImagenetVal, Protocol::Standard, &[1.0; 10], &Target::Class(0)), (false, false));
    assert_eq!(score(Kind::ImagenetVal, Protocol::Standard, &l, &Target::Class(5000)), (false, false));
    let mut nan = logits(&[(3, 1.0)]);
    nan[4] = f32::NAN;
    // A NaN logit sorts above every number (total order), so it takes top-1 but leaves the target in the top-5.
    assert_eq!(score(Kind::ImagenetVal, Protocol::Standard, &nan, &Target::Class(3)), (false, true));
}
