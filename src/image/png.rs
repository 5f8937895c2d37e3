//! Writing PNGs (pictures, masks), atomically.
use std::path::Path;

use anyhow::Context;
use image::{ImageBuffer, ImageEncoder, PixelWithColorType};

use crate::atomic_write;

/// Writes `image` (RGB or grey, 8 bits) as a PNG, atomically.
pub fn write_png<P: PixelWithColorType<Subpixel = u8>>(
    path: &Path,
    image: &ImageBuffer<P, Vec<u8>>,
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(image.as_raw(), image.width(), image.height(), P::COLOR_TYPE)
        .with_context(|| format!("encoding {}", path.display()))?;
    atomic_write::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
