//! The buffer pool: freed storage buffers go back to a free list keyed by size class and are
//! handed out again, so a training step allocates nothing once it has run once.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Rounds a request up to its size class: powers of two up to 64 KiB, then multiples of an
/// eighth of the power of two below (at most 12.5 % waste), never above the adapter's maximum.
pub(crate) fn size_class(bytes: u64, max: u64) -> u64 {
    let bytes = bytes.max(256);
    let class = if bytes <= 1 << 16 {
        bytes.next_power_of_two()
    } else {
        let step = (1u64 << bytes.ilog2()) / 8;
        bytes.div_ceil(step) * step
    };
    class.min(max.max(bytes))
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>,
    /// Bytes held by buffers that are out (in tensors) or free in the pool.
    pub(crate) allocated_bytes: u64,
    pub(crate) cached_bytes: u64,
    /// The most bytes out on loan, and held in all, since the last reset.
    pub(crate) peak_live_bytes: u64,
    pub(crate) peak_allocated_bytes: u64,
}

impl BufferPool {
    /// Bytes out on loan (in tensors).
    pub(crate) fn live_bytes(&self) -> u64 {
        self.allocated_bytes - self.cached_bytes
    }

    pub(crate) fn take(&mut self, class: u64, usage: wgpu::BufferUsages) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&(class, usage))?.pop()?;
        self.cached_bytes -= class;
        self.note_peaks();
        Some(buffer)
    }

    /// Counts a new buffer of `class` bytes, now on loan.
    pub(crate) fn created(&mut self, class: u64) {
        self.allocated_bytes += class;
        self.note_peaks();
    }

    fn note_peaks(&mut self) {
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes());
        self.peak_allocated_bytes = self.peak_allocated_bytes.max(self.allocated_bytes);
    }

    /// Starts the peaks again from what is held now.
    pub(crate) fn reset_peaks(&mut self) {
        self.peak_live_bytes = self.live_bytes();
        self.peak_allocated_bytes = self.allocated_bytes;
    }

    fn give_back(&mut self, buffer: wgpu::Buffer) {
        let class = buffer.size();
        self.cached_bytes += class;
        self.free.entry((class, buffer.usage())).or_default().push(buffer);
    }

    /// Destroys every cached buffer (memory pressure, or the end of a phase).
    pub(crate) fn trim(&mut self) {
        for buffer in self.free.drain().flat_map(|(_, list)| list) {
            self.allocated_bytes -= buffer.size();
            buffer.destroy();
        }
        self.cached_bytes = 0;
    }
}

/// A buffer on loan from the pool; dropping it returns it. `len` is the useful size in bytes.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    pub(crate) len: u64,
    pool: Arc<Mutex<BufferPool>>,
}

impl GpuBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, len: u64, pool: Arc<Mutex<BufferPool>>) -> Self {
        Self { buffer: Some(buffer), len, pool }
    }

    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// The buffer's useful length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// The whole tensor as one binding.
    pub fn whole(&self) -> Window<'_> {
        Window { buffer: self, offset: 0, size: self.len }
    }

    /// The f32 values [first, first + count) as one binding; `first` must sit on the
    /// adapter's binding alignment (ops split at multiples of it).
    pub fn values(&self, first: usize, count: usize) -> Window<'_> {
        self.elements(first, count, 4)
    }

    /// Elements of `bytes_each` bytes (4: f32; 2: f16 in words of two) [first, first + count)
    /// as one binding, rounded up to whole words; `first` sits on the binding alignment.
    pub fn elements(&self, first: usize, count: usize, bytes_each: usize) -> Window<'_> {
        let size = ((bytes_each * count) as u64).next_multiple_of(4);
        Window { buffer: self, offset: (bytes_each * first) as u64, size }
    }
}

/// A byte range of a buffer bound to one kernel binding: how a tensor larger than the
/// adapter's binding limit is processed, one window per launch.
#[derive(Clone, Copy)]
pub struct Window<'a> {
    pub(crate) buffer: &'a GpuBuffer,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Ok(mut pool)) = (self.buffer.take(), self.pool.lock()) {
            pool.give_back(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_waste_and_respect_the_maximum() {
        assert_eq!(size_class(1, u64::MAX), 256);
        assert_eq!(size_class(1000, u64::MAX), 1024);
        assert_eq!(size_class(65536, u64::MAX), 65536);
        for bytes in [65537u64, 100_000, 4 << 20, (4 << 20) + 4, 123_456_789] {
            let class = size_class(bytes, u64::MAX);
            assert!(class >= bytes && (class - bytes) * 8 <= class, "{bytes} -> {class}");
        }
        assert_eq!(size_class(1000, 900), 1000, "never below the request");
        assert_eq!(size_class(70_000, 71_000), 71_000, "clamped to the adapter maximum");
    }
}
