//! A small ImageNet-S-layout dataset written by the tests (real JPEGs and R+256G PNG masks).
use std::path::Path;

use image::{Rgb, RgbImage};
use robustvit::data::imagenet;
use robustvit::image::save_jpeg;

/// `<dir>/images/<wnid>/<name>.JPEG` and `<dir>/masks/<wnid>/<name>.png` for the first `classes` ImageNet
/// classes (labels 0..classes), `per_class` images each: a coloured box on a striped background, its mask
/// the box's object id (R + 256 G) with an ignored (1000) border.
pub fn write_imagenet_s(dir: &Path, classes: usize, per_class: usize) {
    for (c, class) in imagenet::classes().iter().take(classes).enumerate() {
        for k in 0..per_class {
            let (w, h) = (44 + 3 * k as u32, 40);
            let (x0, y0, bw, bh) = (6 + 2 * k as u32, 8, 20, 18);
            let inside = |x: u32, y: u32| x >= x0 && x < x0 + bw && y >= y0 && y < y0 + bh;
            let image = RgbImage::from_fn(w, h, |x, y| {
                if inside(x, y) {
                    Rgb([(40 + 50 * c) as u8, (200 - 40 * c as i64).rem_euclid(256) as u8, (90 + 30 * k) as u8])
                } else {
                    let v = if (x + 2 * y + c as u32) % 7 < 3 { 180 } else { 60 };
                    Rgb([v, v, v])
                }
            });
            let id = 517 + c as u32;
            let mask = RgbImage::from_fn(w, h, |x, y| {
                let v = if inside(x, y) {
                    id
                } else if x == 0 || y == 0 {
                    1000
                } else {
                    0
                };
                Rgb([(v % 256) as u8, (v / 256) as u8, 0])
            });
            let folder = |kind: &str| {
                let folder = dir.join(kind).join(class.wnid);
                std::fs::create_dir_all(&folder).unwrap();
                folder
            };
            save_jpeg(&image, &folder("images").join(format!("img{k}.JPEG")), 75).unwrap();
            mask.save(folder("masks").join(format!("img{k}.png"))).unwrap();
        }
    }
}
