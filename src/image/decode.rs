//! Decoding image files into RGB8 exactly as PIL's `Image.open(path).convert('RGB')` does, including
//! the quirks that decide whether a file is readable at all (a cut-off JPEG, a PNG without IEND).
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, RgbImage};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read image file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image file {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("image file {} is truncated (JPEG scan data has no end-of-image marker)", path.display())]
    Truncated { path: PathBuf },
}

/// Decodes a JPEG/PNG (format sniffed from the content) into RGB8 the way
/// PIL's `Image.open(path).convert('RGB')` does: alpha is dropped (not
/// composited), grey is replicated, 16-bit colour keeps the high byte and
/// 16-bit grey is clipped to 255 (PIL's `I;16` -> `RGB` rule). EXIF
/// orientation is ignored, as in PIL without `exif_transpose`.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    let mut bytes = std::fs::read(path).map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    // The JPEG decoder pads a cut-off scan silently; PIL raises instead.
    if jpeg_is_truncated(&bytes) {
        return Err(DecodeError::Truncated { path: path.to_path_buf() });
    }
    // PIL stops reading at the last IDAT and accepts a PNG without its IEND
    // chunk, which the png crate rejects; supplying one keeps truncated image
    // data an error while matching PIL otherwise.
    if bytes.starts_with(PNG_SIGNATURE) && !bytes.ends_with(PNG_IEND) {
        bytes.extend_from_slice(PNG_IEND);
    }
    let decode_err = |source| DecodeError::Decode { path: path.to_path_buf(), source };
    let decoded = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?
        .decode()
        .map_err(decode_err)?;
    Ok(to_rgb8_like_pil(decoded))
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The IEND chunk: zero length, type, CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xAE\x42\x60\x82";

/// True for a JPEG whose headers or scan data end before the EOI marker
/// (what PIL reports as "image file is truncated"). Header segments are
/// skipped by length so an EXIF thumbnail's own EOI does not count.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let marker = match bytes.get(pos..pos + 2) {
            Some([0xFF, m]) => *m,
            // Not a marker: corrupt rather than cut off; the decoder reports it.
            Some(_) => return false,
            None => return true,
        };
        pos += 2;
        match marker {
            0xDA => break,
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => {}
            _ => match bytes.get(pos..pos + 2) {
                Some(len) => pos += usize::from(u16::from_be_bytes([len[0], len[1]])),
                None => return true,
            },
        }
    }
    // Inside entropy-coded data 0xFF is always stuffed or an RST marker, so
    // FF D9 there is the real end of image.
    !bytes[pos.min(bytes.len())..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// PIL's `.convert('RGB')` for each colour type the PNG/JPEG decoders produce.
fn to_rgb8_like_pil(img: DynamicImage) -> RgbImage {
    fn map<P: image::Pixel>(
        src: &image::ImageBuffer<P, Vec<P::Subpixel>>,
        f: impl Fn(&[P::Subpixel]) -> [u8; 3],
    ) -> RgbImage {
        RgbImage::from_fn(src.width(), src.height(), |x, y| image::Rgb(f(src.get_pixel(x, y).channels())))
    }
    // PIL unpacks 16-bit RGB(A)/LA PNG samples by keeping the high byte.
    let hi = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(src) => map(&src, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(src) => map(&src, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(src) => map(&src, |p| [p[0]; 3]),
        // 16-bit grey opens as mode I;16, whose RGB conversion clips instead of scaling.
        DynamicImage::ImageLuma16(src) => map(&src, |p| [p[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(src) => map(&src, |p| [hi(p[0]); 3]),
        DynamicImage::ImageRgb16(src) => map(&src, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageRgba16(src) => map(&src, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        // Float images never come from the JPEG/PNG decoders.
        other => other.to_rgb8(),
    }
}
