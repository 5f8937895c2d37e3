//! ImageNet-segmentation (`gtsegs_ijcv.mat`, 4276 images with object masks; the segmentation test of
//! method.md section 7), read as the reference's `Imagenet_Segmentation` dataset reads it.
//!
//! The file is MATLAB v7.3, i.e. HDF5. `/value/img` and `/value/gt` are `N x 1` cell arrays, which MATLAB
//! stores as datasets of object references: image `i` is the `uint8` dataset that `/value/img[i]` points
//! to, shaped `[3, W, H]` (MATLAB's column-major `H x W x 3` seen from C); its mask is the dataset that
//! the one-element cell `/value/gt[i]` points to in turn, shaped `[W, H]`, 0 background and non-zero
//! object. A grey image (`[W, H]`) is replicated to RGB, as PIL's `convert('RGB')` does.
use std::path::Path;

use anyhow::{bail, Context};
use hdf5::{Conversion, Dataset, File, ObjectReference1, ReferencedObject};
use image::{GrayImage, RgbImage};
use ndarray::{ArrayD, Ix2, Ix3};

/// An open `gtsegs_ijcv.mat`.
pub struct SegmentationFile {
    file: File,
    images: Vec<ObjectReference1>,
    masks: Vec<ObjectReference1>,
}

impl SegmentationFile {
    /// Opens the file and reads its two reference tables; errors name the file and what is missing.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| {
            format!("{}: cannot open as HDF5 (ImageNet-segmentation's gtsegs_ijcv.mat is MATLAB v7.3)", path.display())
        })?;
        let table = |name: &str| -> anyhow::Result<Vec<ObjectReference1>> {
            let dataset = file
                .dataset(name)
                .with_context(|| format!("{}: no dataset {name} (is it gtsegs_ijcv.mat?)", path.display()))?;
            dataset
                .read_raw::<ObjectReference1>()
                .with_context(|| format!("{}: {name} is not a cell array of object references", path.display()))
        };
        let (images, masks) = (table("/value/img")?, table("/value/gt")?);
        if images.len() != masks.len() {
            bail!("{}: {} images but {} masks", path.display(), images.len(), masks.len());
        }
        Ok(SegmentationFile { file, images, masks })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `index` and its mask (1 object, 0 background), at the image's own size.
    pub fn read(&self, index: usize) -> anyhow::Result<(RgbImage, GrayImage)> {
        let (Some(image_ref), Some(mask_cell)) = (self.images.get(index), self.masks.get(index)) else {
            bail!("image {index} is out of range (the file has {})", self.len());
        };
        let image = self.dataset(image_ref).with_context(|| format!("/value/img[{index}]"))?;
        let cell = self.dataset(mask_cell).with_context(|| format!("/value/gt[{index}]"))?;
        let inner = cell.read_raw::<ObjectReference1>().with_context(|| format!("/value/gt[{index}] is not a cell"))?;
        let mask_ref = inner.first().with_context(|| format!("/value/gt[{index}] is an empty cell"))?;
        let mask = self.dataset(mask_ref).with_context(|| format!("/value/gt[{index}]{{1}}"))?;

        // MATLAB's column-major H x W (x 3) reads as [3, W, H] (or [W, H] for grey): index [c, x, y].
        let pixels = read_u8(&image).with_context(|| format!("/value/img[{index}]"))?;
        let pixels = match *pixels.shape() {
            [3, _, _] => pixels,
            [w, h] => pixels.into_shape_with_order((1, w, h))?.into_dyn(),
            ref other => bail!("/value/img[{index}] has shape {other:?}; expected [3, W, H] or [W, H]"),
        };
        let pixels = pixels.into_dimensionality::<Ix3>()?;
        let (channels, w, h) = pixels.dim();
        let truth = read_u8(&mask).with_context(|| format!("/value/gt[{index}]"))?;
        if truth.shape() != [w, h] {
            bail!("/value/gt[{index}] has shape {:?} but its image is [{w}, {h}]", truth.shape());
        }
        let truth = truth.into_dimensionality::<Ix2>()?;
        let (wu, hu) = (u32::try_from(w)?, u32::try_from(h)?);
        let rgb = RgbImage::from_fn(wu, hu, |x, y| {
            // A grey image's one channel serves all three, as PIL's convert('RGB') does.
            let at = |c: usize| pixels[[c % channels, x as usize, y as usize]];
            image::Rgb([at(0), at(1), at(2)])
        });
        let gray = GrayImage::from_fn(wu, hu, |x, y| image::Luma([u8::from(truth[[x as usize, y as usize]] != 0)]));
        Ok((rgb, gray))
    }

    fn dataset(&self, reference: &ObjectReference1) -> anyhow::Result<Dataset> {
        match self.file.dereference(reference).context("dangling object reference")? {
            ReferencedObject::Dataset(d) => Ok(d),
            other => bail!("references a {other:?}, not a dataset"),
        }
    }
}

/// A numeric dataset as bytes of its shape (MATLAB stores logical masks as `uint8`; other numeric types
/// convert).
fn read_u8(dataset: &Dataset) -> anyhow::Result<ArrayD<u8>> {
    Ok(dataset.as_reader().conversion(Conversion::Hard).read_dyn::<u8>()?)
}
