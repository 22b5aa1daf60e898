//! Work larger than one launch may take: a convolution whose patch matrix exceeds one storage
//! binding (lavapipe binds at most 128 MiB) runs in passes of images, and on software
//! adapters, where llvmpipe silently ends shader loops after 65 535 iterations per
//! invocation, long GEMMs, sums and batch-norm statistics run in slices. Each matches the
//! CPU backend. On adapters without these limits the same calls run in one launch.
use tessera_engine::ops::{self, Conv2dOpts, ConvShape, GemmOpts};
use tessera_engine::{Device, HalfTensor, Tensor};
use tessera_tests::{gpu_devices, max_rel_err, random_tensor};

fn close(what: &str, got: &Tensor, want: &Tensor) {
    let (got, want) = (got.to_vec().unwrap(), want.to_vec().unwrap());
    let err = max_rel_err(&got, &want);
    assert!(err <= 1e-4, "{what}: off by {err}");
}

#[test]
fn a_conv_larger_than_one_binding_runs_in_passes_of_images() {
    // Patch matrix 27 × 1 250 000 values = 135 MB: 19 images per pass on lavapipe.
    let (xs, ws, opts) = ([20, 3, 250, 250], [4, 3, 3, 3], Conv2dOpts::new(1, 1));
    let s = ConvShape::new(&xs, &ws, opts).unwrap();
    let cpu = Device::cpu();
    let (x, w, g) = (random_tensor(&xs, 1, &cpu), random_tensor(&ws, 2, &cpu), random_tensor(&s.out_shape(), 3, &cpu));
    let want = ops::conv2d(&x, &w, None, opts).unwrap();
    let (want_dx, want_dw) = ops::conv2d_backward(&x, &w, &g, opts, true, true).unwrap();
    for dev in gpu_devices() {
        let Device::Gpu(gpu) = &dev else { unreachable!() };
        let name = gpu.name().to_string();
        let (xg, wg, gg) = (x.to_device(&dev).unwrap(), w.to_device(&dev).unwrap(), g.to_device(&dev).unwrap());
        close(&format!("{name}: forward"), &ops::conv2d(&xg, &wg, None, opts).unwrap(), &want);
        let (dx, dw) = ops::conv2d_backward(&xg, &wg, &gg, opts, true, true).unwrap();
        close(&format!("{name}: dx"), &dx.unwrap(), want_dx.as_ref().unwrap());
        close(&format!("{name}: dW"), &dw.unwrap(), want_dw.as_ref().unwrap());
    }
}

#[test]
fn loops_longer_than_a_software_adapter_runs_are_sliced() {
    let cpu = Device::cpu();
    // GEMMs with K = 70 000 (thin and subgroup kernels), one reading A transposed, one f16.
    let nt = GemmOpts { trans_b: true, ..Default::default() };
    let tn = GemmOpts { trans_a: true, ..Default::default() };
    let products = [([4, 70_000], [27, 70_000], nt), ([32, 70_000], [32, 70_000], nt), ([70_000, 16], [70_000, 20], tn)];
    // A sum over 100 000 values; batch-norm statistics over M = 2·250·250 = 125 000 per channel.
    let long = random_tensor(&[3, 100_000], 4, &cpu);
    let bn_x = random_tensor(&[2, 3, 250, 250], 5, &cpu);
    let bn_g = random_tensor(&[2, 3, 250, 250], 6, &cpu);
    let (mean, var) = ops::batch_stats(&bn_x).unwrap();
    let gamma = random_tensor(&[3], 7, &cpu);
    let (_, want_dgamma, want_dbeta) = ops::batch_norm_backward(&bn_x, &bn_g, &mean, &var, &gamma, 1e-5, true, false, true).unwrap();
    for dev in gpu_devices() {
        let Device::Gpu(gpu) = &dev else { unreachable!() };
        let name = gpu.name().to_string();
        let on = |t: &Tensor| t.to_device(&dev).unwrap();
        for (i, (ash, bsh, o)) in products.iter().enumerate() {
            let (a, b) = (random_tensor(ash, 10 + i as u64, &cpu), random_tensor(bsh, 20 + i as u64, &cpu));
            let want = ops::gemm(&a, &b, None, *o).unwrap();
            close(&format!("{name}: gemm {ash:?}·{bsh:?}"), &ops::gemm(&on(&a), &on(&b), None, *o).unwrap(), &want);
        }
        // The f16-storage product slices K the same way.
        let (a, b) = (random_tensor(&[8, 70_000], 30, &cpu), random_tensor(&[12, 70_000], 31, &cpu));
        let half = |t: &Tensor| HalfTensor::from_tensor(t).unwrap();
        let want = ops::gemm::gemm_f16(&half(&a), &half(&b), None, nt).unwrap();
        close(&format!("{name}: gemm_f16 K = 70 000"), &ops::gemm::gemm_f16(&half(&on(&a)), &half(&on(&b)), None, nt).unwrap(), &want);
        close(&format!("{name}: sum of 100 000"), &ops::sum(&on(&long), &[1], false).unwrap(), &ops::sum(&long, &[1], false).unwrap());
        let (gm, gv) = ops::batch_stats(&on(&bn_x)).unwrap();
        close(&format!("{name}: batch mean"), &gm, &mean);
        close(&format!("{name}: batch variance"), &gv, &var);
        let (_, dgamma, dbeta) = ops::batch_norm_backward(&on(&bn_x), &on(&bn_g), &gm, &gv, &on(&gamma), 1e-5, true, false, true).unwrap();
        close(&format!("{name}: dγ"), &dgamma.unwrap(), want_dgamma.as_ref().unwrap());
        close(&format!("{name}: dβ"), &dbeta.unwrap(), want_dbeta.as_ref().unwrap());
    }
}
