//! JPEG files decoded as PIL's `Image.open(path).convert('RGB')` decodes them: PIL's own reading of the headers
//! (`JpegImagePlugin._open`) decides whether a file opens and in which mode, libjpeg-turbo (the library
//! Pillow's wheels bundle; here the system's, through its TurboJPEG API) decodes with libjpeg's defaults, as
//! Pillow's `JpegDecode.c` leaves them (accurate integer IDCT, fancy upsampling), and PIL's conversions of
//! modes L and CMYK to RGB follow. Also writes JPEGs with the same library, for generated test and benchmark data.
use std::ffi::{c_int, c_ulong, CStr};
use std::path::Path;

use anyhow::Context;
use image::RgbImage;
use turbojpeg::raw;

/// Why a JPEG cannot be read.
#[derive(Debug)]
pub(super) enum JpegError {
    /// Headers or scan data end before the end-of-image marker.
    Truncated,
    Broken(String),
}

/// What PIL takes from the last frame header (SOF) before the first scan.
struct Frame {
    width: u32,
    height: u32,
    components: u8,
}

/// PIL's `Image.MAX_IMAGE_PIXELS`: beyond twice this, PIL refuses to open an image (DecompressionBombError).
const PIL_MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// Decodes a JPEG into the RGB image PIL's `Image.open(path).convert('RGB')` gives. EXIF orientation is
/// ignored, as in PIL without `exif_transpose`.
pub(super) fn decode(bytes: &[u8]) -> Result<RgbImage, JpegError> {
    let frame = read_headers(bytes)?;
    let (w, h) = (frame.width, frame.height);
    if w == 0 || h == 0 {
        return Err(JpegError::Broken(format!("empty frame ({w}x{h})")));
    }
    if u64::from(w) * u64::from(h) > 2 * PIL_MAX_IMAGE_PIXELS {
        return Err(JpegError::Broken(format!("{w}x{h} pixels exceed PIL's decompression bomb limit")));
    }
    // PIL's mode for the component count; read_headers refused any other count.
    let (format, channels) = match frame.components {
        1 => (raw::TJPF_TJPF_GRAY, 1),
        3 => (raw::TJPF_TJPF_RGB, 3),
        _ => (raw::TJPF_TJPF_CMYK, 4),
    };
    let mut pixels = vec![0u8; w as usize * h as usize * channels];
    let decompressor = Decompressor::new()?;
    let len = c_ulong::try_from(bytes.len()).map_err(|_| JpegError::Broken("file too large".into()))?;
    // JPEG dimensions are 16-bit, so they and the row pitch fit a c_int. With the frame's own size TurboJPEG
    // does not scale. Pillow's decoder, outside draft mode, keeps libjpeg's defaults: the accurate integer IDCT
    // (JDCT_ISLOW; TJFLAG_ACCURATEDCT says so, TJFLAG_FASTDCT is absent) and fancy upsampling (no
    // TJFLAG_FASTUPSAMPLE).
    let flags = raw::TJFLAG_ACCURATEDCT as c_int;
    let status = unsafe {
        raw::tjDecompress2(
            decompressor.0,
            bytes.as_ptr(),
            len,
            pixels.as_mut_ptr(),
            w as c_int,
            (w as usize * channels) as c_int,
            h as c_int,
            format,
            flags,
        )
    };
    // TurboJPEG returns -1 for libjpeg's warnings too (corrupt data decoded past, extraneous bytes); Pillow
    // ignores those and keeps the image.
    if status != 0 && unsafe { raw::tjGetErrorCode(decompressor.0) } != raw::TJERR_TJERR_WARNING as c_int {
        return Err(JpegError::Broken(decompressor.error()));
    }
    let rgb = match channels {
        1 => pixels.iter().flat_map(|&v| [v; 3]).collect(),
        3 => pixels,
        _ => cmyk_to_rgb_like_pil(&pixels),
    };
    Ok(RgbImage::from_raw(w, h, rgb).expect("the buffer holds width * height RGB pixels"))
}

/// A TurboJPEG decompression instance, destroyed on drop.
struct Decompressor(raw::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, JpegError> {
        let handle = unsafe { raw::tjInitDecompress() };
        if handle.is_null() {
            return Err(JpegError::Broken("libjpeg-turbo could not start a decompressor".into()));
        }
        Ok(Decompressor(handle))
    }

    fn error(&self) -> String {
        unsafe { CStr::from_ptr(raw::tjGetErrorStr2(self.0)) }.to_string_lossy().into_owned()
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        unsafe { raw::tjDestroy(self.0) };
    }
}

/// PIL's `convert('RGB')` of the CMYK image it makes of libjpeg's CMYK samples: rawmode `CMYK;I` inverts
/// every sample (Adobe's convention, which PIL assumes for every 4-component JPEG, YCCK included), then
/// Convert.c's `cmyk2rgb`: `nk = 255 - k`, each channel `nk - MULDIV255(c, nk)`.
fn cmyk_to_rgb_like_pil(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            // 255 minus the inverted K sample is the raw one.
            let nk = u32::from(p[3]);
            let channel = |raw: u8| {
                let tmp = u32::from(255 - raw) * nk + 128;
                (nk - (((tmp >> 8) + tmp) >> 8)) as u8
            };
            [channel(p[0]), channel(p[1]), channel(p[2])]
        })
        .collect()
}

/// PIL's `JpegImagePlugin._open`: the markers up to the first scan (SOS), each segment skipped by its length
/// (so an EXIF thumbnail's end-of-image marker does not count), bytes that start no marker skipped, size and
/// mode taken from the last frame header, which must have 8-bit samples and 1, 3 or 4 components. A file
/// whose headers end early, or whose scan data has no end-of-image marker, is truncated: PIL's decoder runs
/// out of data and raises, where libjpeg alone would pad the scan silently.
fn read_headers(bytes: &[u8]) -> Result<Frame, JpegError> {
    let mut frame = None;
    let mut pos = 2;
    loop {
        let Some(skip) = bytes.get(pos..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) else {
            return Err(JpegError::Truncated);
        };
        pos += skip;
        let Some(&marker) = bytes.get(pos + 1) else { return Err(JpegError::Truncated) };
        match marker {
            // A fill byte: the next 0xFF may start the marker.
            0xFF => pos += 1,
            // A stuffed zero: not a marker.
            0x00 => pos += 2,
            0xDA => {
                pos += 2;
                break;
            }
            // Markers PIL reads without a length.
            0xC8 | 0xD0..=0xD9 | 0xF0..=0xFD => pos += 2,
            0xC0..=0xFE => {
                let Some(len) = bytes.get(pos + 2..pos + 4) else { return Err(JpegError::Truncated) };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return Err(JpegError::Broken(format!("marker 0xFF{marker:02X} has a length of {len}")));
                }
                let Some(data) = bytes.get(pos + 4..pos + 2 + len) else { return Err(JpegError::Truncated) };
                // SOF0-15 but DHT, JPG and DAC; and DHP, which PIL reads as a frame header too.
                if matches!(marker, 0xC0..=0xCF | 0xDE) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    frame = Some(frame_header(data)?);
                }
                pos += 2 + len;
            }
            _ => return Err(JpegError::Broken(format!("no marker found (0xFF{marker:02X})"))),
        }
    }
    // Inside entropy-coded data 0xFF is always stuffed or an RST marker, so FF D9 there is the real end of image.
    if !bytes[pos.min(bytes.len())..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(JpegError::Truncated);
    }
    frame.ok_or_else(|| JpegError::Broken("no frame header before the scan".into()))
}

/// A frame header's size and component count, refused as PIL's `SOF` handler refuses them.
fn frame_header(data: &[u8]) -> Result<Frame, JpegError> {
    let [bits, h0, h1, w0, w1, components, ..] = *data else {
        return Err(JpegError::Broken(format!("frame header of {} bytes", data.len())));
    };
    if bits != 8 {
        return Err(JpegError::Broken(format!("cannot handle {bits}-bit layers")));
    }
    if !matches!(components, 1 | 3 | 4) {
        return Err(JpegError::Broken(format!("cannot handle {components}-layer images")));
    }
    let size = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    Ok(Frame { width: size(w0, w1), height: size(h0, h1), components })
}

/// Writes `img` as a baseline JPEG (4:2:0, `quality` 1-100) with libjpeg-turbo.
pub fn save_jpeg(img: &RgbImage, path: &Path, quality: i32) -> anyhow::Result<()> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let image = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width,
        pitch: 3 * width,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    let data = turbojpeg::compress(image, quality, turbojpeg::Subsamp::Sub2x2)
        .with_context(|| format!("encoding {} as JPEG", path.display()))?;
    std::fs::write(path, &*data).with_context(|| format!("writing {}", path.display()))
}
