//! Where a data set's images come from: decoded in memory ([`ImageSet`]), files indexed on
//! disk ([`super::FolderIndex`]), or a relabelled subset of another source ([`Subset`]).
//! The loader reads any of them image by image, so a set never has to fit in memory.
use super::{ImageSet, Result};
use std::sync::Arc;

/// Images of one size with their labels, readable one at a time from any thread.
pub trait Source: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of image `i`.
    fn label(&self, i: usize) -> usize;

    /// Class names in label order.
    fn classes(&self) -> &[String];

    /// (height, width) of every image.
    fn dims(&self) -> (usize, usize);

    /// Writes image `i` as planar u8 (3 × height × width) into `dst`.
    fn read_into(&self, i: usize, dst: &mut [u8]) -> Result<()>;
}

/// A shared source, as training runs and loader threads hold it.
pub type Dataset = Arc<dyn Source>;

impl Source for ImageSet {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn dims(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn read_into(&self, i: usize, dst: &mut [u8]) -> Result<()> {
        dst.copy_from_slice(self.image(i));
        Ok(())
    }
}

/// Images `indices` of `base`, with their own labels and class names (a task's view).
pub struct Subset {
    pub base: Dataset,
    pub indices: Vec<usize>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl Source for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn dims(&self) -> (usize, usize) {
        self.base.dims()
    }

    fn read_into(&self, i: usize, dst: &mut [u8]) -> Result<()> {
        self.base.read_into(self.indices[i], dst)
    }
}

/// Every image of `source` decoded into memory (for tools that rewrite pixels).
pub fn materialize(source: &dyn Source) -> Result<ImageSet> {
    use rayon::prelude::*;
    let (height, width) = source.dims();
    let len = 3 * height * width;
    let mut pixels = vec![0u8; source.len() * len];
    pixels.par_chunks_mut(len.max(1)).enumerate().try_for_each(|(i, dst)| source.read_into(i, dst))?;
    let labels = (0..source.len()).map(|i| source.label(i)).collect();
    Ok(ImageSet { pixels, labels, classes: source.classes().to_vec(), height, width })
}
