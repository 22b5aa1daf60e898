//! `--tensorboard DIR`: TensorBoard event files of scalars. An event file is a TFRecord
//! stream — per record its length (u64 LE), the length's masked CRC-32C, the bytes, their
//! masked CRC-32C — of `Event` protocol buffers (tensorflow/core/util/event.proto), encoded
//! with `prost`: first the file version, then one `Summary` of simple values per report.
//! Epoch scalars (`epoch/…`) are at step = epoch; progress scalars (`step/…`) at the run's
//! step count.
use super::{Labels, Report, Sink};
use crate::error::TrainError;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// The `simple_value` arm of the `value` oneof.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TFRecord's CRC: CRC-32C, rotated and offset so that a CRC of CRCs stays informative.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One event file.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// A new event file in `dir` (created if need be), named as TensorBoard looks for them.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| TrainError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
        // Two writers of one process in one second (a repeated comparison) get two files.
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}.{n}", now() as u64, std::process::id()));
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path).map_err(io(&path))?;
        let mut w = Self { path, file };
        w.write(&Event { wall_time: now(), step: 0, what: Some(What::FileVersion("brain.Event:2".into())) })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars `(tag, value)` at `step`, written through to the file (TensorBoard reads it live).
    pub fn scalars(&mut self, step: usize, values: &[(&str, f32)]) -> Result<(), TrainError> {
        let value = values.iter().map(|(tag, v)| SummaryValue { tag: tag.to_string(), simple_value: Some(*v) }).collect();
        self.write(&Event { wall_time: now(), step: step as i64, what: Some(What::Summary(Summary { value })) })
    }

    fn write(&mut self, event: &Event) -> Result<(), TrainError> {
        let data = prost::Message::encode_to_vec(event);
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file.write_all(&record).and_then(|_| self.file.flush()).map_err(|error| TrainError::Io { path: self.path.clone(), error })
    }
}

impl Sink for EventWriter {
    fn report(&mut self, _: &Labels, report: &Report) -> Result<(), TrainError> {
        match report {
            Report::Step(s) => self.scalars(
                s.step,
                &[("step/loss", s.loss), ("step/accuracy", s.accuracy), ("step/images_per_sec", s.images_per_sec), ("step/step_seconds", s.step_seconds)],
            ),
            Report::Epoch(r) => self.scalars(
                r.epoch,
                &[
                    ("epoch/train_loss", r.train_loss),
                    ("epoch/train_accuracy", r.train_accuracy),
                    ("epoch/test_loss", r.test_loss),
                    ("epoch/test_accuracy", r.test_accuracy),
                    ("epoch/images_per_sec", r.images_per_sec as f32),
                    ("epoch/seconds", r.seconds as f32),
                ],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_crc_is_tensorflows() {
        // CRC-32C("123456789") = 0xe3069283 (RFC 3720's check value); masked by hand.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn records_are_framed_with_their_lengths_and_checksums() {
        let dir = std::env::temp_dir().join(format!("tessera-tb-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(3, &[("epoch/train_loss", 1.5)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let (mut at, mut events) = (0, Vec::new());
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc(data));
            events.push(<Event as prost::Message>::decode(data).unwrap());
            at += 16 + len;
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
        let Some(What::Summary(s)) = &events[1].what else { panic!("{:?}", events[1]) };
        assert_eq!((events[1].step, s.value[0].tag.as_str(), s.value[0].simple_value), (3, "epoch/train_loss", Some(1.5)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
