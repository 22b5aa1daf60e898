//! Bad checkpoints fail with an error naming the file (and the tensor), never a panic: a
//! flipped byte (checksum), a truncated file, an unsupported dtype, NaN weights, a missing or
//! mis-shaped tensor. A failed save leaves the previous file in place.
use std::collections::HashMap;
use tessera_engine::checkpoint::{save, Checkpoint};
use tessera_engine::{Device, Tensor};

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("tessera-ckpt-integrity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = Device::cpu();
    let w = Tensor::from_vec((0..12).map(|i| i as f32 * 0.5).collect(), &[3, 4], &cpu).unwrap();
    let good = dir.join("good.safetensors");
    save(&good, &[("fc.weight".into(), w.clone())], &HashMap::new()).unwrap();
    let ckpt = Checkpoint::load(&good).unwrap();
    assert!(ckpt.metadata.contains_key("tessera.crc32"));
    assert_eq!(ckpt.tensor("fc.weight", &[3, 4], &cpu).unwrap().to_vec().unwrap(), w.to_vec().unwrap());
    let e = ckpt.tensor("fc.weight", &[4, 3], &cpu).err().unwrap().to_string();
    assert!(e.contains("good.safetensors") && e.contains("fc.weight") && e.contains("[3, 4]") && e.contains("[4, 3]"), "{e}");
    let e = ckpt.tensor("fc.bias", &[3], &cpu).err().unwrap().to_string();
    assert!(e.contains("fc.bias") && e.contains("missing"), "{e}");

    let bytes = std::fs::read(&good).unwrap();
    let flipped = dir.join("flipped.safetensors");
    let mut b = bytes.clone();
    *b.last_mut().unwrap() ^= 0x40;
    std::fs::write(&flipped, b).unwrap();
    let e = Checkpoint::load(&flipped).err().unwrap().to_string();
    assert!(e.contains("flipped.safetensors") && e.contains("checksum mismatch"), "{e}");

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 7]).unwrap();
    let e = Checkpoint::load(&truncated).err().unwrap().to_string();
    assert!(e.contains("truncated.safetensors"), "{e}");
    std::fs::write(&truncated, &bytes[..5]).unwrap();
    assert!(Checkpoint::load(&truncated).err().unwrap().to_string().contains("truncated.safetensors"));

    // A dtype a model cannot hold, written straight with safetensors.
    let odd = dir.join("bool.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![2], &[1u8, 0]).unwrap();
    std::fs::write(&odd, safetensors::serialize(vec![("mask", view)], None).unwrap()).unwrap();
    let e = Checkpoint::load(&odd).err().unwrap().to_string();
    assert!(e.contains("bool.safetensors") && e.contains("mask") && e.contains("BOOL"), "{e}");

    let nan = dir.join("nan.safetensors");
    save(&nan, &[("fc.weight".into(), Tensor::from_vec(vec![1.0, f32::NAN, 0.0], &[3], &cpu).unwrap())], &HashMap::new()).unwrap();
    let e = Checkpoint::load(&nan).unwrap().tensor("fc.weight", &[3], &cpu).err().unwrap().to_string();
    assert!(e.contains("nan.safetensors") && e.contains("value 1 is NaN"), "{e}");

    // A save that cannot complete leaves the previous file as it was.
    std::fs::create_dir_all(dir.join("good.safetensors.partial")).unwrap();
    assert!(save(&good, &[("fc.weight".into(), w)], &HashMap::new()).is_err());
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
}

/// A save never replaces anything but a regular file: a folder, a FIFO or a device at the path
/// (`--out /dev/null` run as root) is an error, and it is left as it was.
#[test]
fn a_save_refuses_to_replace_what_is_not_a_regular_file() {
    let dir = std::env::temp_dir().join(format!("tessera-save-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a-folder")).unwrap();
    let fifo = dir.join("a-fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let t = tessera_engine::Tensor::zeros(&[2], &tessera_engine::Device::cpu()).unwrap();
    for target in [dir.join("a-folder"), fifo.clone()] {
        let e = tessera_engine::checkpoint::save(&target, &[("t".into(), t.clone())], &Default::default()).unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo() && dir.join("a-folder").is_dir());
    // A regular file is replaced, as before.
    let file = dir.join("ok.safetensors");
    std::fs::write(&file, b"old").unwrap();
    tessera_engine::checkpoint::save(&file, &[("t".into(), t)], &Default::default()).unwrap();
    assert!(tessera_engine::checkpoint::Checkpoint::load(&file).is_ok());
}
