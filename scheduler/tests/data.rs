//! Data loading: the shared CIFAR-10 folders, the binary format, batches, and bad input.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_scheduler::data::{load_cifar_bin, load_image_folder, synthetic, Dataset, FolderOptions, Loader, LoaderSpec, Normalize};

fn shared_cifar() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar10");
    p.is_dir().then_some(p)
}

/// A fresh scratch directory under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loads_the_shared_cifar10_folders() {
    let Some(root) = shared_cifar() else {
        eprintln!("../shared/data/cifar10 not present: skipped");
        return;
    };
    let set = load_image_folder(&root.join("test"), &FolderOptions { limit_per_class: Some(5), ..Default::default() }).unwrap();
    assert_eq!(set.classes[0], "airplane");
    assert_eq!(set.classes.len(), 10);
    assert_eq!((set.len(), set.height, set.width), (50, 32, 32));
    assert_eq!(set.labels[..6], [0, 0, 0, 0, 0, 1]);
    let mean = set.pixels.iter().map(|&p| p as f64).sum::<f64>() / set.pixels.len() as f64;
    assert!((60.0..200.0).contains(&mean), "mean pixel {mean}");
}

#[test]
fn batches_are_deterministic_augmented_and_normalised_whatever_the_worker_count() {
    let set: Dataset = Arc::new(synthetic(10, 2, 8, 1));
    let collect = |epoch, workers| {
        let spec = LoaderSpec { workers, ..LoaderSpec::train(4, 7, epoch) };
        Loader::new(&set, &spec).unwrap().map(|b| b.map(|b| (b.x, b.labels)).unwrap()).collect::<Vec<_>>()
    };
    let (a, b, c) = (collect(0, 1), collect(0, 4), collect(1, 2));
    assert_eq!(a.len(), 3, "10 images in batches of 4");
    assert_eq!(a, b, "same seed and epoch, same batches, 1 or 4 workers");
    assert_ne!(a, c, "another epoch shuffles and augments differently");
    let spec = LoaderSpec { norm: Normalize { mean: [0.0; 3], std: [1.0; 3] }, ..LoaderSpec::eval(10) };
    let plain = Loader::new(&set, &spec).unwrap().next().unwrap().unwrap();
    assert_eq!(plain.shape, [10, 3, 8, 8]);
    let labels: Vec<usize> = (0..10).map(|i| set.label(i)).collect();
    assert_eq!(plain.labels, labels);
    let mut first = vec![0u8; 3 * 8 * 8];
    set.read_into(0, &mut first).unwrap();
    assert_eq!(plain.x[0], first[0] as f32 / 255.0);
}

#[test]
fn cifar_binary_round_trip_and_truncation() {
    let dir = scratch("bin");
    let mut bytes = Vec::new();
    for label in [3u8, 7] {
        bytes.push(label);
        bytes.extend((0..3072).map(|i| (i % 251) as u8));
    }
    let good = dir.join("data_batch_1.bin");
    std::fs::write(&good, &bytes).unwrap();
    let set = load_cifar_bin(&[&good]).unwrap();
    assert_eq!((set.labels.clone(), set.len(), set.image(1)[5]), (vec![3, 7], 2, 5));
    let first = set.first_per_class(1);
    assert_eq!((first.len(), first.labels.clone()), (2, vec![3, 7]));
    // The binary layout is recognised as a training data folder.
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), &bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), &bytes[..3073]).unwrap();
    let (train, test) = tessera_scheduler::run_state::load_splits(&dir, None).unwrap();
    assert_eq!((train.len(), test.len(), train.classes()[3].as_str()), (10, 1, "cat"));

    let short = dir.join("short.bin");
    std::fs::write(&short, &bytes[..3073 + 100]).unwrap();
    let e = load_cifar_bin(&[&short]).unwrap_err().to_string();
    assert!(e.contains("short.bin") && e.contains("record 1 is truncated"), "{e}");
    let mut bad = bytes.clone();
    bad[3073] = 12;
    let badlabel = dir.join("badlabel.bin");
    std::fs::write(&badlabel, &bad).unwrap();
    let e = load_cifar_bin(&[&badlabel]).unwrap_err().to_string();
    assert!(e.contains("badlabel.bin") && e.contains("record 1 has label 12"), "{e}");
}

#[test]
fn bad_image_folders_name_the_file() {
    let dir = scratch("folders");
    let good = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    good.save(dir.join("a/0.png")).unwrap();

    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("b/0.jpg"), b"not a jpeg at all").unwrap();
    let e = load_image_folder(&dir, &FolderOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b/0.jpg") && e.contains("cannot decode"), "{e}");

    let mut jpeg = Vec::new();
    good.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    std::fs::write(dir.join("b/0.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let e = load_image_folder(&dir, &FolderOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b/0.jpg"), "truncated JPEG: {e}");

    std::fs::remove_file(dir.join("b/0.jpg")).unwrap();
    let e = load_image_folder(&dir, &FolderOptions::default()).unwrap_err().to_string();
    assert!(e.contains("/b") && e.contains("holds no .jpg/.jpeg/.png image"), "{e}");

    std::fs::write(dir.join("b/0.jpg"), &jpeg).unwrap();
    image::RgbImage::new(5, 4).save(dir.join("b/1.png")).unwrap();
    let e = load_image_folder(&dir, &FolderOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b/1.png") && e.contains("5×4"), "{e}");
    let set = load_image_folder(&dir, &FolderOptions { resize_crop: Some((4, 4)), ..Default::default() }).unwrap();
    assert_eq!((set.len(), set.classes.clone()), (3, vec!["a".to_string(), "b".to_string()]));

    let empty = scratch("empty");
    let e = load_image_folder(&empty, &FolderOptions::default()).unwrap_err().to_string();
    assert!(e.contains("no class subfolders"), "{e}");
}
