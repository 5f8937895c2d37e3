//! Report tables against hand-computed expectations.
use std::path::PathBuf;

use robustvit::report::*;

fn m(model: &str, method: &str, seed: u64, dataset: &str, protocol: &str, metric: &str, value: f64) -> Measurement {
    Measurement {
        model: model.into(),
        method: method.into(),
        seed,
        dataset: dataset.into(),
        protocol: protocol.into(),
        metric: metric.into(),
        value,
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("report-dev-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// vit-b: original and ours with seeds 0 and 1 on `in`; ours also on `a` (seed 0 only); gradmask on
/// `in` with seed 0 only. deit-s (appears second): original seed 0 only, ours seed 0 and seed 2 (no
/// original for seed 2). An `other` protocol row and a stray metric that must be ignored.
fn sample() -> Vec<Measurement> {
    vec![
        m("vit-b", "ours", 0, "in", "main", "top1", 83.0),
        m("vit-b", "original", 0, "in", "main", "top1", 80.0),
        m("deit-s", "original", 0, "in", "main", "top1", 70.0),
        m("vit-b", "original", 1, "in", "main", "top1", 82.0),
        m("vit-b", "ours", 1, "in", "main", "top1", 86.0),
        m("vit-b", "original", 0, "in", "main", "top5", 95.0),
        m("vit-b", "original", 1, "in", "main", "top5", 96.0),
        m("vit-b", "ours", 0, "in", "main", "top5", 96.5),
        m("vit-b", "ours", 1, "in", "main", "top5", 96.5),
        m("vit-b", "ours", 0, "a", "main", "top1", 40.004),
        m("vit-b", "gradmask", 0, "in", "main", "top1", 79.5),
        m("deit-s", "ours", 0, "in", "main", "top1", 71.0),
        m("deit-s", "ours", 2, "in", "main", "top1", 75.0),
        m("vit-b", "ours", 0, "in", "other", "top1", 1.0),
        m("vit-b", "ours", 0, "in", "main", "loss", 9.0),
    ]
}

#[test]
fn accuracy_table_means_sample_std_and_missing_cells() {
    let t = accuracy_table(&sample(), &["in", "a"], &["original", "ours", "gradmask", "rrr"], "main");
    assert_eq!(
        t.header,
        strings(&[
            "model",
            "method",
            "in_top1",
            "in_top1_std",
            "in_top5",
            "in_top5_std",
            "a_top1",
            "a_top1_std",
            "a_top5",
            "a_top5_std"
        ])
    );
    // vit-b original top1 {80, 82}: mean 81, sample std sqrt(2) = 1.41; top5 {95, 96}: 95.5, 0.71.
    // vit-b ours top1 {83, 86}: 84.5, sqrt(4.5) = 2.12; top5 {96.5, 96.5}: std 0.
    // deit-s ours top1 {71, 75}: 73, sqrt(8) = 2.83. Single seeds: empty std. rrr absent: no row.
    let expected = [
        ["vit-b", "original", "81.00", "1.41", "95.50", "0.71", "", "", "", ""],
        ["vit-b", "ours", "84.50", "2.12", "96.50", "0.00", "40.00", "", "", ""],
        ["vit-b", "gradmask", "79.50", "", "", "", "", "", "", ""],
        ["deit-s", "original", "70.00", "", "", "", "", "", "", ""],
        ["deit-s", "ours", "73.00", "2.83", "", "", "", "", "", ""],
    ];
    assert_eq!(t.rows, expected.iter().map(|r| strings(r)).collect::<Vec<_>>());
}

#[test]
fn single_seed_table_has_no_std_columns_and_protocol_filters() {
    let t = accuracy_table(&sample(), &["in"], &["ours", "original"], "other");
    assert_eq!(t.header, strings(&["model", "method", "in_top1", "in_top5"]));
    assert_eq!(t.rows, vec![strings(&["vit-b", "ours", "1.00", ""])]);
    let none = accuracy_table(&sample(), &["in"], &["ours"], "nope");
    assert_eq!(none.header, strings(&["model", "method", "in_top1", "in_top5"]));
    assert!(none.rows.is_empty());
}

#[test]
fn shift_table_pairs_seeds_with_original() {
    let t = shift_table(&sample(), &["in"], &["original", "ours", "gradmask"], "main");
    assert_eq!(
        t.header,
        strings(&["model", "method", "in_top1_delta", "in_top1_delta_std", "in_top5_delta", "in_top5_delta_std"])
    );
    // vit-b ours top1: seed 0 83-80 = 3, seed 1 86-82 = 4 -> 3.50, sample std 0.71.
    // top5: 96.5-95 = 1.5, 96.5-96 = 0.5 -> 1.00, 0.71. gradmask seed 0: 79.5-80 = -0.50.
    // deit-s ours: only seed 0 has an original: 71-70 = 1.00 (seed 2 is left out).
    let expected = [
        ["vit-b", "ours", "3.50", "0.71", "1.00", "0.71"],
        ["vit-b", "gradmask", "-0.50", "", "", ""],
        ["deit-s", "ours", "1.00", "", "", ""],
    ];
    assert_eq!(t.rows, expected.iter().map(|r| strings(r)).collect::<Vec<_>>());
}

#[test]
fn shift_row_without_original_shows_empty_cells() {
    let ms = vec![m("x", "ours", 0, "in", "p", "top1", 50.0), m("x", "original", 0, "a", "p", "top1", 1.0)];
    let t = shift_table(&ms, &["in"], &["ours"], "p");
    assert_eq!(t.header, strings(&["model", "method", "in_top1_delta", "in_top5_delta"]));
    assert_eq!(t.rows, vec![strings(&["x", "ours", "", ""])]);
    // A delta that rounds to zero from below prints 0.00, not -0.00.
    let ms = vec![m("x", "ours", 0, "in", "p", "top1", 50.0), m("x", "original", 0, "in", "p", "top1", 50.001)];
    assert_eq!(shift_table(&ms, &["in"], &["ours"], "p").rows[0][2], "0.00");
}

#[test]
fn segmentation_and_ablation_tables() {
    let mut ms = vec![];
    for (seed, pa, miou, map) in [(0, 80.0, 60.0, 85.0), (1, 82.0, 61.0, 86.0)] {
        ms.push(m("vit-b", "ours", seed, "imagenet-seg", "main", "pixel_accuracy", pa));
        ms.push(m("vit-b", "ours", seed, "imagenet-seg", "main", "miou", miou));
        ms.push(m("vit-b", "ours", seed, "imagenet-seg", "main", "map", map));
    }
    ms.push(m("vit-b", "original", 0, "imagenet-seg", "main", "miou", 50.0));
    ms.push(m("vit-b", "original", 0, "in", "main", "top1", 81.0));
    let t = segmentation_table(&ms, "imagenet-seg", &["pixel_accuracy", "miou", "map"], &["original", "ours"], "main");
    assert_eq!(
        t.header,
        strings(&["model", "method", "pixel_accuracy", "pixel_accuracy_std", "miou", "miou_std", "map", "map_std"])
    );
    assert_eq!(
        t.rows,
        vec![
            strings(&["vit-b", "original", "", "", "50.00", "", "", ""]),
            strings(&["vit-b", "ours", "81.00", "1.41", "60.50", "0.71", "85.50", "0.71"]),
        ]
    );

    let ms = vec![
        m("ar-s", "ours", 0, "in", "main", "top1", 80.0),
        m("ar-s", "ours_no_bg", 0, "in", "main", "top1", 79.0),
        m("ar-s", "ours_no_bg", 0, "in", "main", "top5", 99.0),
        m("ar-s", "ours_gt_cls", 0, "r", "main", "top1", 30.0),
    ];
    let t = ablation_table(&ms, &["in", "r"], &["ours", "ours_no_cls", "ours_no_bg", "ours_gt_cls"], "main");
    assert_eq!(t.header, strings(&["model", "method", "in_top1", "r_top1"]));
    assert_eq!(
        t.rows,
        vec![
            strings(&["ar-s", "ours", "80.00", ""]),
            strings(&["ar-s", "ours_no_bg", "79.00", ""]),
            strings(&["ar-s", "ours_gt_cls", "", "30.00"]),
        ]
    );
}

#[test]
fn long_csv_roundtrip_header_and_format() {
    let dir = scratch_dir("long");
    let path = dir.join("results_long.csv");
    let ms = vec![
        m("vit-b", "ours", 0, "in", "main", "top1", 81.123456),
        m("deit,s", "original", 7, "a", "main", "map", 5.0),
    ];
    write_long(&path, &ms).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "model,method,seed,dataset,protocol,metric,value\n\
         vit-b,ours,0,in,main,top1,81.1235\n\
         \"deit,s\",original,7,a,main,map,5.0000\n"
    );
    let back = read_long(&path).unwrap();
    assert_eq!(back[1], ms[1]);
    assert_eq!(back[0].value, 81.1235);
    // Rewriting gives the same bytes; no temporary file is left behind.
    write_long(&path, &back).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    std::fs::write(&path, "model,method,seed,dataset,metric,protocol,value\n").unwrap();
    assert!(read_long(&path).unwrap_err().to_string().contains("header"));
    std::fs::write(&path, "model,method,seed,dataset,protocol,metric,value\nm,o,x,d,p,top1,1.0\n").unwrap();
    assert!(format!("{:#}", read_long(&path).unwrap_err()).contains("line 2"));
    assert!(read_long(&dir.join("missing.csv")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn table_renderings() {
    let t = Table {
        header: strings(&["model", "method", "in_top1"]),
        rows: vec![strings(&["vit-b", "ours", "84.50"]), strings(&["deit-s", "a|b", ""])],
    };
    assert_eq!(
        t.to_markdown(),
        "| model | method | in_top1 |\n|---|---|---|\n| vit-b | ours | 84.50 |\n| deit-s | a\\|b |  |\n"
    );
    assert_eq!(t.to_terminal(), "model   method  in_top1\nvit-b   ours      84.50\ndeit-s  a|b\n");

    let dir = scratch_dir("both");
    write_both(&t, &dir.join("tables"), "table1").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("tables/table1.csv")).unwrap(),
        "model,method,in_top1\nvit-b,ours,84.50\ndeit-s,a|b,\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("tables/table1.md")).unwrap(), t.to_markdown());

    // Ragged rows: CSV refuses them, the text renderings pad instead of panicking.
    let ragged = Table { header: strings(&["a", "b"]), rows: vec![strings(&["1"]), strings(&["1", "2", "3"])] };
    assert!(ragged.write_csv(&dir.join("ragged.csv")).is_err());
    assert!(!dir.join("ragged.csv").exists());
    assert_eq!(ragged.to_markdown(), "| a | b |  |\n|---|---|---|\n| 1 |  |  |\n| 1 | 2 | 3 |\n");
    assert_eq!(ragged.to_terminal(), "a  b\n1\n1  2  3\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn views_take_vecs_of_str_and_string() {
    let datasets: Vec<&str> = vec!["in"];
    let methods: Vec<&str> = vec!["ours"];
    let owned: Vec<String> = vec!["ours".to_string()];
    let a = accuracy_table(&sample(), &datasets, &methods, "main");
    assert_eq!(a, accuracy_table(&sample(), &datasets, &owned, "main"));
    assert_eq!(a.rows.len(), 2);
}
