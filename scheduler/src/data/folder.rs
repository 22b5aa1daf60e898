//! Image folders in the ImageNet layout: `root/<class>/<image>.{jpg,jpeg,png}`, classes in
//! sorted order = label order. Decoded in parallel; every error names the file.
use super::{DataError, ImageSet, Result};
use image::imageops::FilterType;
use rayon::prelude::*;
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

/// Loads every image under `root` (one subfolder per class).
pub fn load_image_folder(root: &Path, opts: &FolderOptions) -> Result<ImageSet> {
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
    let decoded: Vec<image::RgbImage> = files.par_iter().map(|(p, _)| decode(p, opts.resize_crop)).collect::<Result<_>>()?;
    let (width, height) = decoded[0].dimensions();
    let mut pixels = Vec::with_capacity(decoded.len() * 3 * (width * height) as usize);
    for ((path, _), img) in files.iter().zip(&decoded) {
        if img.dimensions() != (width, height) {
            return Err(DataError::Layout {
                path: path.clone(),
                detail: format!("is {}×{}, the first image {width}×{height}; pass a resize/crop size", img.width(), img.height()),
            });
        }
        // HWC → CHW
        for c in 0..3 {
            pixels.extend(img.pixels().map(|p| p.0[c]));
        }
    }
    Ok(ImageSet { pixels, labels: files.iter().map(|(_, l)| *l).collect(), classes, height: height as usize, width: width as usize })
}
