//! Data sets: image folders (the ImageNet layout, JPEG and PNG) indexed on disk, the CIFAR-10
//! binary format and a synthetic generator in memory ([`ImageSet`]), all behind one
//! [`Source`]; the [`Loader`] turns any of them into shuffled, augmented, normalised batches
//! on worker threads.
mod cifar_bin;
pub(crate) mod corrupt;
mod folder;
mod loader;
mod source;
mod synthetic;

pub use cifar_bin::{append_cifar_bin, load_cifar_bin};
pub use corrupt::Corruption;
pub use folder::{decode_image, load_image_folder, FolderIndex, FolderOptions};
pub use loader::{Augment, Batch, Border, Flip, Loader, LoaderMemory, LoaderSpec, Normalize};
pub use source::{materialize, Dataset, Source, Subset};
pub use synthetic::synthetic;

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: cannot decode image: {detail}")]
    Decode { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Layout { path: PathBuf, detail: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

/// Decoded images, channel-planar u8 (N × 3 × H × W), with their labels and class names.
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
    pub height: usize,
    pub width: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.image_len()..(i + 1) * self.image_len()]
    }

    /// The first `n` images of each class, in order (`--limit-per-class`).
    pub fn first_per_class(&self, n: usize) -> ImageSet {
        let mut seen = vec![0usize; self.classes.len()];
        let mut out = ImageSet { classes: self.classes.clone(), height: self.height, width: self.width, ..Default::default() };
        for (i, &label) in self.labels.iter().enumerate() {
            if seen[label] < n {
                seen[label] += 1;
                out.labels.push(label);
                out.pixels.extend_from_slice(self.image(i));
            }
        }
        out
    }
}
