//! Image folders in the ImageNet layout: `root/<class>/<image>.{jpg,jpeg,png}`, classes in
//! sorted order = label order. Indexed ([`FolderIndex`], read image by image by the loader)
//! or decoded whole in parallel ([`load_image_folder`]); every error names the file.
use super::{materialize, DataError, ImageSet, Result, Source};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct FolderOptions {
    /// Keep at most this many images per class (the first in file-name order).
    pub limit_per_class: Option<usize>,
    /// Resize the shorter side to `resize` and center-crop to `crop` × `crop` (eval-style
    /// preprocessing for sets of mixed sizes). Without it every image must share one size.
    pub resize_crop: Option<(u32, u32)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |error| DataError::Io { path: path.to_path_buf(), error }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io(dir))?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>().map_err(io(dir))?;
    out.sort();
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn decode(path: &Path, resize_crop: Option<(u32, u32)>) -> Result<image::RgbImage> {
    decode_image(&std::fs::read(path).map_err(io(path))?, path, resize_crop)
}

/// Decodes one image file's bytes (JPEG or PNG) to RGB, resized and cropped if asked;
/// `path` names the file in errors.
pub fn decode_image(bytes: &[u8], path: &Path, resize_crop: Option<(u32, u32)>) -> Result<image::RgbImage> {
    let img = image::load_from_memory(bytes).map_err(|e| DataError::Decode { path: path.to_path_buf(), detail: e.to_string() })?;
    let img = match resize_crop {
        None => img,
        Some((resize, crop)) => {
            let (w, h) = (img.width(), img.height());
            let scale = resize as f32 / w.min(h) as f32;
            let (nw, nh) = (((w as f32 * scale).round() as u32).max(crop), ((h as f32 * scale).round() as u32).max(crop));
            img.resize_exact(nw, nh, FilterType::Triangle).crop_imm((nw - crop) / 2, (nh - crop) / 2, crop, crop)
        }
    };
    Ok(img.to_rgb8())
}

/// An image folder indexed, not decoded: each image is read from its file when asked for.
pub struct FolderIndex {
    files: Vec<(PathBuf, usize)>,
    classes: Vec<String>,
    height: usize,
    width: usize,
    resize_crop: Option<(u32, u32)>,
}

impl FolderIndex {
    /// Lists the images under `root` (one subfolder per class); the first image's header
    /// gives the size every image must have (or `resize_crop` makes them have).
    pub fn new(root: &Path, opts: &FolderOptions) -> Result<Self> {
        let class_dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() {
            return Err(DataError::Layout { path: root.into(), detail: "no class subfolders (expected root/<class>/<image>)".into() });
        }
        let mut files = Vec::new();
        let mut classes = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            let mut images: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| is_image(p)).collect();
            if images.is_empty() {
                return Err(DataError::Layout { path: dir.clone(), detail: "class folder holds no .jpg/.jpeg/.png image".into() });
            }
            if let Some(limit) = opts.limit_per_class {
                images.truncate(limit);
            }
            files.extend(images.into_iter().map(|p| (p, label)));
            classes.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
        let (width, height) = match opts.resize_crop {
            Some((_, crop)) => (crop, crop),
            None => {
                let first = &files[0].0;
                image::image_dimensions(first).map_err(|e| DataError::Decode { path: first.clone(), detail: e.to_string() })?
            }
        };
        Ok(Self { files, classes, height: height as usize, width: width as usize, resize_crop: opts.resize_crop })
    }

    /// The file of image `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].0
    }
}

impl Source for FolderIndex {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn label(&self, i: usize) -> usize {
        self.files[i].1
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn dims(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn read_into(&self, i: usize, dst: &mut [u8]) -> Result<()> {
        let path = &self.files[i].0;
        let img = decode(path, self.resize_crop)?;
        if img.dimensions() != (self.width as u32, self.height as u32) {
            return Err(DataError::Layout {
                path: path.clone(),
                detail: format!("is {}×{}, the first image {}×{}; pass a resize/crop size", img.width(), img.height(), self.width, self.height),
            });
        }
        // HWC → CHW
        let plane = self.width * self.height;
        for (j, p) in img.pixels().enumerate() {
            for c in 0..3 {
                dst[c * plane + j] = p.0[c];
            }
        }
        Ok(())
    }
}

/// Loads every image under `root` (one subfolder per class), decoded into memory.
pub fn load_image_folder(root: &Path, opts: &FolderOptions) -> Result<ImageSet> {
    materialize(&FolderIndex::new(root, opts)?)
}
