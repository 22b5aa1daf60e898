//! safetensors checkpoints: named f32 tensors plus string metadata, written atomically
//! (temporary file, fsync, rename) so a crash never leaves a partial file under the real name.
use crate::device::Device;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a valid safetensors file: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: checksum mismatch (stored {stored}, computed {actual}): the file is corrupt")]
    Corrupt { path: PathBuf, stored: String, actual: String },
    #[error("{path}: tensor `{name}`: {detail}")]
    Tensor { path: PathBuf, name: String, detail: String },
    #[error("{path}: {detail}")]
    Engine { path: PathBuf, detail: String },
}

/// How floating-point tensors are stored in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloatFormat {
    #[default]
    F32,
    F16,
    BF16,
}

impl std::str::FromStr for FloatFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            other => Err(format!("unknown float format `{other}`: expected f32, f16 or bf16")),
        }
    }
}

/// Writes `tensors` (copied to the host) and `metadata` to `path` atomically, as f32.
/// Tensors named `…num_batches_tracked` are written as I64, as PyTorch holds them.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &HashMap<String, String>) -> Result<(), CheckpointError> {
    save_as(path, tensors, metadata, FloatFormat::F32)
}

/// [`save`] with floating-point tensors stored as `format` (rounded to nearest even).
pub fn save_as(path: &Path, tensors: &[(String, Tensor)], metadata: &HashMap<String, String>, format: FloatFormat) -> Result<(), CheckpointError> {
    save_with_int8(path, tensors, &[], metadata, format)
}

/// An int8 tensor to store as it is (quantised weights): name, shape, values.
pub type Int8Entry = (String, Vec<usize>, Vec<i8>);

/// [`save_as`], plus tensors stored as I8.
pub fn save_with_int8(
    path: &Path,
    tensors: &[(String, Tensor)],
    int8: &[Int8Entry],
    metadata: &HashMap<String, String>,
    format: FloatFormat,
) -> Result<(), CheckpointError> {
    let io = |error| CheckpointError::Io { path: path.into(), error };
    let mut host: BTreeMap<String, (Dtype, Vec<u8>, Vec<usize>)> = BTreeMap::new();
    // One read for every tensor on a GPU, not one per tensor.
    let all: Vec<Tensor> = tensors.iter().map(|(_, t)| t.clone()).collect();
    let fetched = Tensor::to_vecs(&all).map_err(|e| CheckpointError::Engine { path: path.into(), detail: e.to_string() })?;
    for ((name, t), values) in tensors.iter().zip(fetched) {
        let (dtype, bytes) = match format {
            _ if name.ends_with("num_batches_tracked") => (Dtype::I64, values.iter().flat_map(|v| (*v as i64).to_le_bytes()).collect()),
            FloatFormat::F32 => (Dtype::F32, bytemuck::cast_slice(&values).to_vec()),
            FloatFormat::F16 => (Dtype::F16, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
            FloatFormat::BF16 => (Dtype::BF16, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()),
        };
        host.insert(name.clone(), (dtype, bytes, t.shape().to_vec()));
    }
    for (name, shape, values) in int8 {
        host.insert(name.clone(), (Dtype::I8, bytemuck::cast_slice(values).to_vec(), shape.clone()));
    }
    let mut metadata = metadata.clone();
    metadata.insert(CHECKSUM_KEY.into(), format!("{:08x}", checksum(host.iter().map(|(n, (_, bytes, _))| (n.as_str(), bytes.as_slice())))));
    let views: Vec<(String, TensorView)> = host
        .iter()
        .map(|(n, (dtype, bytes, shape))| {
            let view = TensorView::new(*dtype, shape.clone(), bytes).expect("bytes match their shape");
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Format { path: path.into(), detail: e.to_string() })?;
    // The rename below replaces whatever is at `path`: only ever a regular file (run as root,
    // `--out /dev/null` would otherwise replace the device with a file).
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        let detail = "exists and is not a regular file; a checkpoint is written to a file path".into();
        return Err(CheckpointError::Format { path: path.into(), detail });
    }
    let tmp = path.with_extension("safetensors.partial");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename itself is durable once the folder's entry is on disk.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Metadata key of the CRC-32 over every tensor's name and bytes (in name order), written by
/// [`save_as`] and verified by [`Checkpoint::load`] when present (PyTorch's files lack it).
pub const CHECKSUM_KEY: &str = "tessera.crc32";

fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (name, bytes) in tensors {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    h.finalize()
}

/// A tensor's values as f32, from the dtypes state dicts hold (PyTorch stores
/// `num_batches_tracked` as I64; half-precision checkpoints use F16/BF16).
fn to_f32(view: &TensorView) -> Result<Vec<f32>, String> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::I64 => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::I32 => d.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
        // Quantised weights: the integers, exactly.
        Dtype::I8 => d.iter().map(|&b| b as i8 as f32).collect(),
        other => return Err(format!("dtype {other:?} is not supported (F32, F64, F16, BF16, I64, I32, I8 are)")),
    })
}

/// A loaded checkpoint: f32 tensors by name, and the metadata.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    /// The bytes each tensor's values take in the file (by its stored dtype: I8 is 1, F16 2).
    pub stored_bytes: HashMap<String, usize>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|error| CheckpointError::Io { path: path.into(), error })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses a safetensors file's `bytes`; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let format = |e: safetensors::SafeTensorError| CheckpointError::Format { path: path.into(), detail: e.to_string() };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(format)?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(format)?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        if let Some(stored) = metadata.get(CHECKSUM_KEY) {
            let mut named = st.tensors();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let actual = format!("{:08x}", checksum(named.iter().map(|(n, v)| (n.as_str(), v.data()))));
            if &actual != stored {
                return Err(CheckpointError::Corrupt { path: path.into(), stored: stored.clone(), actual });
            }
        }
        let (mut tensors, mut stored_bytes) = (HashMap::new(), HashMap::new());
        for (name, view) in st.tensors() {
            let values = to_f32(&view).map_err(|detail| CheckpointError::Tensor { path: path.into(), name: name.clone(), detail })?;
            stored_bytes.insert(name.clone(), view.data().len());
            tensors.insert(name, (values, view.shape().to_vec()));
        }
        Ok(Self { path: path.into(), tensors, stored_bytes, metadata })
    }

    /// Tensor `name` on `device`, checked against the `expected` shape.
    pub fn tensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor, CheckpointError> {
        let err = |detail: String| CheckpointError::Tensor { path: self.path.clone(), name: name.into(), detail };
        let (values, shape) = self.tensors.get(name).ok_or_else(|| err("missing".into()))?;
        if shape != expected {
            return Err(err(format!("shape {shape:?}; the model expects {expected:?}")));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(err(format!("value {i} is {} (not finite)", values[i])));
        }
        Tensor::from_vec(values.clone(), shape, device).map_err(|e| err(e.to_string()))
    }
}
