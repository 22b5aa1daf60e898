//! Input corruptions at severities 1–5 in the spirit of CIFAR-10-C (Hendrycks & Dietterich
//! 2019): Gaussian noise, Gaussian blur, brightness and contrast shifts, pixel dropout and
//! JPEG re-compression, applied to a whole image set with a fixed seed. Severity parameters
//! follow CIFAR-10-C's where it has the corruption.
use super::ImageSet;
use image::codecs::jpeg::JpegEncoder;
use image::ImageDecoder;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    GaussianNoise,
    Blur,
    Brightness,
    Contrast,
    PixelDropout,
    Jpeg,
}

impl Corruption {
    pub const ALL: [Corruption; 6] =
        [Corruption::GaussianNoise, Corruption::Blur, Corruption::Brightness, Corruption::Contrast, Corruption::PixelDropout, Corruption::Jpeg];

    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::Blur => "gaussian_blur",
            Corruption::Brightness => "brightness",
            Corruption::Contrast => "contrast",
            Corruption::PixelDropout => "pixel_dropout",
            Corruption::Jpeg => "jpeg",
        }
    }

    /// The corruption's strength at `severity` (1–5), in its own unit.
    pub fn level(self, severity: usize) -> f32 {
        let s = severity.clamp(1, 5) - 1;
        match self {
            Corruption::GaussianNoise => [0.04, 0.06, 0.08, 0.09, 0.10][s], // σ, of the [0, 1] range
            Corruption::Blur => [0.4, 0.6, 0.7, 0.8, 1.0][s],               // σ in pixels
            Corruption::Brightness => [0.1, 0.2, 0.3, 0.4, 0.5][s],         // added, of the [0, 1] range
            Corruption::Contrast => [0.75, 0.5, 0.4, 0.3, 0.15][s],         // factor around the image mean
            Corruption::PixelDropout => [0.05, 0.1, 0.2, 0.3, 0.4][s],      // share of pixels zeroed
            Corruption::Jpeg => [80.0, 65.0, 58.0, 50.0, 40.0][s],          // JPEG quality
        }
    }

    /// `set` with every image corrupted at `severity`; the image index seeds its randomness.
    pub fn apply(self, set: &ImageSet, severity: usize, seed: u64) -> ImageSet {
        let level = self.level(severity);
        let (h, w) = (set.height, set.width);
        let len = set.image_len();
        let mut pixels = set.pixels.clone();
        pixels.par_chunks_mut(len.max(1)).enumerate().for_each(|(i, img)| {
            let rng = &mut StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ severity as u64);
            match self {
                Corruption::GaussianNoise => img.iter_mut().for_each(|p| *p = clamp(*p as f32 + 255.0 * level * normal(rng))),
                Corruption::Blur => blur(img, h, w, level),
                Corruption::Brightness => img.iter_mut().for_each(|p| *p = clamp(*p as f32 + 255.0 * level)),
                Corruption::Contrast => {
                    let mean = img.iter().map(|&p| p as f32).sum::<f32>() / img.len() as f32;
                    img.iter_mut().for_each(|p| *p = clamp((*p as f32 - mean) * level + mean));
                }
                Corruption::PixelDropout => {
                    for pixel in 0..h * w {
                        if rng.gen::<f32>() < level {
                            (0..3).for_each(|c| img[c * h * w + pixel] = 0);
                        }
                    }
                }
                Corruption::Jpeg => jpeg(img, h, w, level as u8),
            }
        });
        ImageSet { pixels, ..set.clone() }
    }
}

/// A standard normal sample (Box–Muller).
pub(crate) fn normal(rng: &mut StdRng) -> f32 {
    let (u1, u2): (f32, f32) = (rng.gen::<f32>().max(1e-12), rng.gen());
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn clamp(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Separable Gaussian blur of each channel plane (edges clamped).
fn blur(img: &mut [u8], h: usize, w: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    for plane in img.chunks_mut(h * w) {
        let src: Vec<f32> = plane.iter().map(|&p| p as f32).collect();
        let mut rows = vec![0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                rows[y * w + x] =
                    kernel.iter().enumerate().map(|(k, wt)| wt * src[y * w + (x as isize + k as isize - radius).clamp(0, w as isize - 1) as usize]).sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                plane[y * w + x] = clamp(
                    kernel.iter().enumerate().map(|(k, wt)| wt * rows[(y as isize + k as isize - radius).clamp(0, h as isize - 1) as usize * w + x]).sum(),
                );
            }
        }
    }
}

/// Encodes the planar image as JPEG at `quality` and decodes it back.
fn jpeg(img: &mut [u8], h: usize, w: usize, quality: u8) {
    let interleaved: Vec<u8> = (0..h * w).flat_map(|p| (0..3).map(move |c| (c, p))).map(|(c, p)| img[c * h * w + p]).collect();
    let mut bytes = Vec::new();
    if JpegEncoder::new_with_quality(&mut bytes, quality).encode(&interleaved, w as u32, h as u32, image::ExtendedColorType::Rgb8).is_err() {
        return; // an encoder failure leaves the image as it was
    }
    let Ok(decoder) = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes)) else { return };
    let mut decoded = vec![0u8; decoder.total_bytes() as usize];
    if decoder.read_image(&mut decoded).is_ok() && decoded.len() == 3 * h * w {
        for p in 0..h * w {
            (0..3).for_each(|c| img[c * h * w + p] = decoded[3 * p + c]);
        }
    }
}
