use std::time::Instant;
use tessera_engine::cpu::blas;
fn t(f: &mut dyn FnMut()) -> f64 { f(); let mut best = f64::MAX; for _ in 0..5 { let s = Instant::now(); f(); best = best.min(s.elapsed().as_secs_f64()*1e3);} best }
fn main() {
    tessera_engine::cpu::CpuBackend::global();
    let (m, n, k) = (8usize, 2048usize, 9216usize);
    let x: Vec<f32> = (0..m*k).map(|i| (i % 7) as f32).collect();
    let w: Vec<f32> = (0..n*k).map(|i| (i % 5) as f32).collect();
    let mut c = vec![0f32; m*n];
    let mut ct = vec![0f32; m*n];
    let a = t(&mut || blas::sgemm(false, true, m, n, k, 1.0, &x, k, &w, k, 0.0, &mut c, n));
    let b = t(&mut || blas::sgemm(false, true, n, m, k, 1.0, &w, k, &x, k, 0.0, &mut ct, m));
    // dx = g[8,n] . W[n,k]
    let g: Vec<f32> = (0..m*n).map(|i| (i % 3) as f32).collect();
    let mut dx = vec![0f32; m*k];
    let mut dxt = vec![0f32; m*k];
    let d1 = t(&mut || blas::sgemm(false, false, m, k, n, 1.0, &g, n, &w, k, 0.0, &mut dx, k));
    let d2 = t(&mut || blas::sgemm(true, true, k, m, n, 1.0, &w, k, &g, n, 0.0, &mut dxt, m));
    // dW = g^T x : [n, k]
    let mut dw = vec![0f32; n*k];
    let e1 = t(&mut || blas::sgemm(true, false, n, k, m, 1.0, &g, n, &x, k, 0.0, &mut dw, k));
    println!("fwd nt {a:.2} ms swapped {b:.2} ms | dx nn {d1:.2} swapped {d2:.2} | dW tn {e1:.2}  ({} GB W)", (n*k*4) as f64/1e9);
}
