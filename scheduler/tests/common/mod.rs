//! Helpers shared by the scheduler's test binaries.
use std::path::Path;

/// A tiny two-class image folder set written as PNGs: bright top half vs bright bottom half,
/// 24 images per class and split.
#[allow(dead_code)] // each test binary uses its own share of these helpers
pub fn write_folders(root: &Path) {
    write_image_folders(root, 24)
}

/// [`write_folders`] with `per_class` images per class and split.
pub fn write_image_folders(root: &Path, per_class: u32) {
    for split in ["train", "test"] {
        for (k, class) in ["top", "bottom"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(32, 32, |_, y| {
                    let lit = (y < 16) == (k == 0);
                    let noise = ((i * 37 + y * 11) % 40) as u8;
                    image::Rgb([if lit { 200 } else { 40 } + noise; 3])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}
