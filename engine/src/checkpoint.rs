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
    #[error("{path}: tensor `{name}`: {detail}")]
    Tensor { path: PathBuf, name: String, detail: String },
    #[error("{path}: {detail}")]
    Engine { path: PathBuf, detail: String },
}

/// Writes `tensors` (copied to the host) and `metadata` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &HashMap<String, String>) -> Result<(), CheckpointError> {
    let io = |error| CheckpointError::Io { path: path.into(), error };
    let mut host: BTreeMap<String, (Vec<u8>, Vec<usize>)> = BTreeMap::new();
    for (name, t) in tensors {
        let values = t.to_vec().map_err(|e| CheckpointError::Engine { path: path.into(), detail: e.to_string() })?;
        host.insert(name.clone(), (bytemuck::cast_slice(&values).to_vec(), t.shape().to_vec()));
    }
    let views: Vec<(String, TensorView)> = host
        .iter()
        .map(|(n, (bytes, shape))| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("f32 bytes match their shape");
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| CheckpointError::Format { path: path.into(), detail: e.to_string() })?;
    let tmp = path.with_extension("safetensors.partial");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A loaded checkpoint: f32 tensors by name, and the metadata.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|error| CheckpointError::Io { path: path.into(), error })?;
        let format = |e: safetensors::SafeTensorError| CheckpointError::Format { path: path.into(), detail: e.to_string() };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(format)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(format)?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(CheckpointError::Tensor { path: path.into(), name, detail: format!("dtype {:?}; expected F32", view.dtype()) });
            }
            let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            tensors.insert(name, (values, view.shape().to_vec()));
        }
        Ok(Self { path: path.into(), tensors, metadata: meta.metadata().clone().unwrap_or_default() })
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
