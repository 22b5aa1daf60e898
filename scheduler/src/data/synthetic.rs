//! A synthetic, separable image set for smoke tests and benchmarks: class k brightens one of
//! `classes` horizontal bands, over uniform noise.
use super::ImageSet;
use rand::{rngs::StdRng, Rng, SeedableRng};

pub fn synthetic(n: usize, classes: usize, size: usize, seed: u64) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let classes = classes.max(1);
    let mut set = ImageSet { classes: (0..classes).map(|k| format!("class{k}")).collect(), height: size, width: size, ..Default::default() };
    for _ in 0..n {
        let k = rng.gen_range(0..classes);
        for _channel in 0..3 {
            for row in 0..size {
                let lit = row * classes / size.max(1) == k;
                for _col in 0..size {
                    let base = if lit { 170 } else { 60 };
                    set.pixels.push((base + rng.gen_range(0..80)) as u8);
                }
            }
        }
        set.labels.push(k);
    }
    set
}
