//! Decoding image files into RGB8 exactly as PIL's `Image.open(path).convert('RGB')` does, including
//! the quirks that decide whether a file is readable at all (a cut-off JPEG, a PNG without IEND). JPEGs go
//! through libjpeg-turbo as in PIL (jpeg.rs), PNGs through the png crate.
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use super::jpeg::{self, JpegError};

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
    #[error("image file {} is truncated (JPEG data ends before the end-of-image marker)", path.display())]
    Truncated { path: PathBuf },
    #[error("cannot decode image file {}: {reason}", path.display())]
    Broken { path: PathBuf, reason: String },
}

/// Decodes a JPEG/PNG (format sniffed from the content, as PIL does) into RGB8 the way
/// PIL's `Image.open(path).convert('RGB')` does: alpha is dropped (not
/// composited), grey is replicated, CMYK converted with PIL's formula, 16-bit colour keeps the high byte and
/// 16-bit grey is clipped to 255 (PIL's `I;16` -> `RGB` rule). EXIF
/// orientation is ignored, as in PIL without `exif_transpose`.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    let broken = |reason| DecodeError::Broken { path: path.to_path_buf(), reason };
    if bytes.starts_with(JPEG_SIGNATURE) {
        return jpeg::decode(&bytes).map_err(|e| match e {
            JpegError::Truncated => DecodeError::Truncated { path: path.to_path_buf() },
            JpegError::Broken(reason) => broken(reason),
        });
    }
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(broken("neither a JPEG nor a PNG file".into()));
    }
    let png = png_as_pil_reads_it(&bytes).map_err(broken)?;
    let decoded = ImageReader::with_format(std::io::Cursor::new(png), ImageFormat::Png)
        .decode()
        .map_err(|source| DecodeError::Decode { path: path.to_path_buf(), source })?;
    Ok(to_rgb8_like_pil(decoded))
}

/// What PIL's JPEG plugin accepts as the start of a JPEG file: SOI and the first byte of the next marker.
const JPEG_SIGNATURE: &[u8] = b"\xFF\xD8\xFF";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The IEND chunk: zero length, type, CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xAE\x42\x60\x82";

/// The chunks PIL's PngStream reads (Pillow 13 `chunk_*` methods); it skips any other.
const PIL_PNG_CHUNKS: [&[u8; 4]; 17] = [
    b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tEXt", b"zTXt",
    b"iTXt", b"eXIf", b"acTL", b"fcTL", b"fdAT",
];

/// The shortest data PIL's reader of `kind` accepts (Pillow 13 PngStream); `colour_type` is IHDR's.
fn pil_min_chunk_len(kind: &[u8; 4], colour_type: Option<u8>) -> usize {
    match kind {
        b"IHDR" => 13,
        b"gAMA" => 4,
        b"cHRM" => 32,
        b"sRGB" => 1,
        b"pHYs" => 9,
        b"acTL" => 8,
        b"fcTL" => 26,
        b"fdAT" => 4,
        // Checked for truecolour (6 bytes) and grey (2); palette and alpha images take any length.
        b"tRNS" => match colour_type {
            Some(2) => 6,
            Some(0) => 2,
            _ => 0,
        },
        _ => 0,
    }
}

/// The PNG that PIL's PngImagePlugin reads in `bytes`, rebuilt so that the png crate decodes the same image or
/// fails where PIL does. PIL checks the CRC of every chunk before the first IDAT and raises if one is wrong or
/// cut off (the png crate skips ancillary chunks with bad CRCs); its image data is the run of IDAT chunks from
/// there, CRCs unchecked, up to the end of the file; once those bytes decode to every row, nothing after them
/// matters: IEND may be missing or cut, an IDAT CRC wrong or missing, even the zlib trailer cut off. The png
/// crate insists on all of that, so the image data goes into one IDAT with a fresh CRC, followed by IEND;
/// rows that the data does not complete stay a decoding error, as PIL's "image file is truncated". Before
/// IDAT, chunks PIL has no reader for are dropped (it skips them) and its readers' length checks apply; what
/// those readers check beyond lengths (iCCP and zTXt compression, APNG frame sequences) is left to the png crate.
fn png_as_pil_reads_it(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let header = |pos: usize| {
        let h = bytes.get(pos..pos + 8)?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        Some((len, [h[4], h[5], h[6], h[7]]))
    };
    let crc = |kind: &[u8], data: &[u8]| {
        let mut c = flate2::Crc::new();
        c.update(kind);
        c.update(data);
        c.sum()
    };
    // IHDR comes first: its colour type sits 9 bytes into its data.
    let colour_type = bytes.get(PNG_SIGNATURE.len() + 8 + 9).copied();
    let mut out = PNG_SIGNATURE.to_vec();
    let mut pos = PNG_SIGNATURE.len();
    loop {
        let Some((len, kind)) = header(pos) else {
            return Err("truncated before the image data".into());
        };
        if &kind == b"IDAT" {
            break;
        }
        let name = String::from_utf8_lossy(&kind);
        // PIL's chunk reader wants four ASCII letters, digits or underscores.
        if !kind.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(format!("broken chunk type {name:?}"));
        }
        let data_end = pos + 8 + len;
        let Some(stored) = bytes.get(data_end..data_end + 4) else {
            return Err(format!("truncated in the {name} chunk"));
        };
        if crc(&kind, &bytes[pos + 8..data_end]).to_be_bytes() != stored {
            return Err(format!("bad CRC in the {name} chunk"));
        }
        // PIL's readers refuse chunks shorter than their fields, which the png crate skips or accepts.
        if len < pil_min_chunk_len(&kind, colour_type) {
            return Err(format!("truncated {name} chunk"));
        }
        // A chunk PIL has no reader for is skipped, even a critical one the png crate would refuse.
        if PIL_PNG_CHUNKS.contains(&&kind) {
            out.extend_from_slice(&bytes[pos..data_end + 4]);
        }
        pos = data_end + 4;
    }
    let mut data = Vec::new();
    while let Some((len, _)) = header(pos).filter(|(_, kind)| kind == b"IDAT") {
        let start = pos + 8;
        data.extend_from_slice(&bytes[start..(start + len).min(bytes.len())]);
        pos = start + len + 4;
    }
    let len = u32::try_from(data.len()).map_err(|_| "image data over 4 GiB".to_string())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b"IDAT");
    out.extend_from_slice(&data);
    out.extend_from_slice(&crc(b"IDAT", &data).to_be_bytes());
    out.extend_from_slice(PNG_IEND);
    Ok(out)
}

/// PIL's `.convert('RGB')` for each colour type the PNG decoder produces.
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
        // Float images never come from the PNG decoder.
        other => other.to_rgb8(),
    }
}
