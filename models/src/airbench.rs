//! `airbench94` (Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498),
//! the network as the paper describes it, for 32-px inputs: a 2×2 whitening convolution
//! (3 → 24, with bias) and GELU; three conv groups — conv 3×3 (no bias), max-pool 2, batch norm,
//! GELU, conv 3×3, batch norm, GELU — of widths 64, 256 and 256; max-pool 3, flatten, a linear
//! head without bias and a scale of 1/9. Batch norms keep their scale frozen at 1 (eps 1e-12;
//! the running statistics keep 0.6 of their old value each step: airbench's "momentum 0.6" is
//! PyTorch's `momentum=0.4`); each 3×3 convolution's first `in` filters start as identities
//! (Dirac).
//! The whitening filters come from the data (`nn::patch_whitening`), which the training recipe
//! sets; built alone they start at the default initialisation.
use rand::rngs::StdRng;
use tessera_engine::nn::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Scale, Sequential, GELU};
use tessera_engine::ops::Conv2dOpts;
use tessera_engine::{Device, Result, Tensor};

/// The widths of the three conv groups.
pub const WIDTHS: [usize; 3] = [64, 256, 256];

/// Layer indices where the sub-models start: whiten, block1, block2, block3, head; and the end.
pub const CUTS: [usize; 6] = [0, 2, 9, 16, 23, 27];

/// The whitening convolution's layer index.
pub const WHITEN: usize = 0;

/// The batch norms' layer indices (two per conv group).
pub const NORMS: [usize; 6] = [4, 7, 11, 14, 18, 21];

/// A 3×3 "same" convolution without bias whose first `inputs` filters are identities.
fn dirac_conv(inputs: usize, outputs: usize, dev: &Device, rng: &mut StdRng) -> Result<Conv2d> {
    let conv = Conv2d::new(inputs, outputs, 3, Conv2dOpts::new(1, 1), false, dev, rng)?;
    let mut w = conv.weight.value().to_vec()?;
    for o in 0..inputs.min(outputs) {
        let filter = &mut w[o * inputs * 9..(o + 1) * inputs * 9];
        filter.iter_mut().for_each(|v| *v = 0.0);
        filter[o * 9 + 4] = 1.0; // channel o, centre tap
    }
    conv.weight.set_value(Tensor::from_vec(w, &[outputs, inputs, 3, 3], dev)?);
    Ok(conv)
}

fn batch_norm(channels: usize, dev: &Device) -> Result<BatchNorm2d> {
    Ok(BatchNorm2d::new(channels, dev)?.with_momentum_eps(0.4, 1e-12)?.with_frozen_weight())
}

/// The network with `num_classes` outputs (its layers flat, cut at [`CUTS`]).
pub fn airbench94(num_classes: usize, dev: &Device, rng: &mut StdRng) -> Result<Sequential> {
    let whiten = 2 * 3 * 2 * 2;
    let mut seq = Sequential::new().with(Conv2d::new(3, whiten, 2, Conv2dOpts::new(1, 0), true, dev, rng)?).with(GELU);
    let mut inputs = whiten;
    for width in WIDTHS {
        seq = seq
            .with(dirac_conv(inputs, width, dev, rng)?)
            .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .with(batch_norm(width, dev)?)
            .with(GELU)
            .with(dirac_conv(width, width, dev, rng)?)
            .with(batch_norm(width, dev)?)
            .with(GELU);
        inputs = width;
    }
    let seq =
        seq.with(MaxPool2d { kernel: 3, stride: 3, padding: 0 }).with(Flatten).with(Linear::new(inputs, num_classes, false, dev, rng)?).with(Scale(1.0 / 9.0));
    debug_assert_eq!(seq.len(), CUTS[5]);
    debug_assert!(NORMS.iter().all(|&i| seq.layers()[i].named_buffers().len() == 2));
    Ok(seq)
}
