//! AlexNet at 224 px trains on lavapipe although its fc6 weight (4096 × 9216 f32 = 151 MB)
//! is bigger than the 128 MiB the adapter binds to one kernel: the product, its gradients
//! and the optimizer update run in windows. The GPU run's losses match the CPU backend's
//! (1e-4 relative) over two training steps, so the first step's update matched too.
//! (Needs a GPU adapter, as the engine's GPU tests do: TESSERA_SKIP_GPU_TESTS=1 skips it.)
use std::path::Path;
use std::process::Command;

/// 2 classes × (`train` + `test`) noisy 224-px PNGs, class 1 brighter.
fn write_images(root: &Path, train: usize, test: usize) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (split, count) in [("train", train), ("test", test)] {
        for class in 0..2u8 {
            let dir = root.join(split).join(format!("class{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(224, 224, |_, _| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let noise = (state >> 56) as u8 / 2;
                    image::Rgb([noise + 100 * class, noise, noise / 2 + 60 * class])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

fn epoch_record(root: &Path, device: &str) -> serde_json::Value {
    let out = format!("run-{}", device.replace(':', "-"));
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["train", "--model", "alexnet", "--data", "data", "--epochs", "1", "--batch", "4", "--lr", "0.01", "--workers", "1", "--seed", "3"])
        .args(["--device", device, "--out", &out, "--json"])
        .current_dir(root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "alexnet on {device}: {said}");
    assert!(!said.contains("panicked"), "{said}");
    let metrics = std::fs::read_to_string(root.join(&out).join("metrics.jsonl")).unwrap();
    serde_json::from_str(metrics.lines().next().expect("one epoch record")).unwrap()
}

#[test]
fn alexnet_at_224_px_trains_on_lavapipe_and_matches_the_cpu() {
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_some() {
        return;
    }
    let root = std::env::temp_dir().join(format!("tessera-alexnet224-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_images(&root.join("data"), 4, 2);
    let (cpu, gpu) = (epoch_record(&root, "cpu"), epoch_record(&root, "gpu:0"));
    for key in ["train_loss", "test_loss"] {
        let (c, g) = (cpu[key].as_f64().unwrap(), gpu[key].as_f64().unwrap());
        assert!(((c - g) / c).abs() <= 1e-4, "{key}: cpu {c}, gpu {g}");
    }
    println!("alexnet 224 px, 2 steps: cpu {cpu}\ngpu {gpu}");
    let _ = std::fs::remove_dir_all(&root);
}
