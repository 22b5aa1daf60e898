//! The wgpu backend: one device per adapter, a buffer pool, a pipeline cache and one launch
//! path that records every kernel into a shared command encoder. Work is submitted in batches
//! and the host waits only when it reads a result back.
mod adapters;
mod pool;
pub mod profile;
pub mod tune;

pub use adapters::{list_adapters, AdapterSummary};
pub use pool::{GpuBuffer, Window};

use crate::error::{Error, Result};
use pool::{size_class, BufferPool, STORAGE_USAGE};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tessera_shaders::Kernel;

/// Kernel launches recorded before the batch is submitted without waiting. Bounds the memory
/// the uniform arena and pending commands hold; the host still only waits when it reads.
const MAX_LAUNCHES_PER_BATCH: usize = 256;
/// Loop iterations one invocation may run on a software adapter, with a 2× margin. llvmpipe
/// (lavapipe, Mesa GL) ends every shader loop once an invocation has run 65 535 iterations in
/// all, without an error: a 60 000-value sum came out 21 845. Kernels whose loops would run
/// longer are launched in slices there (GEMM over K, reductions, batch-norm statistics).
pub const SOFTWARE_LOOP_TRIPS: usize = 1 << 15;
/// Bytes of launch parameters one kernel may take (one uniform block).
pub const MAX_PARAMS_BYTES: usize = 256;

/// A device's memory as the engine sees it: bytes of its storage buffers in tensors (live)
/// and free in the pool (cached), their peaks since the last reset, the limit allocations
/// stop at, and the device-local memory the driver reports (where it reports any).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub live_bytes: u64,
    pub cached_bytes: u64,
    pub peak_live_bytes: u64,
    pub peak_allocated_bytes: u64,
    pub limit_bytes: Option<u64>,
    pub reported_bytes: Option<u64>,
}

/// Counters for tests and benchmarks (e.g. "freezing halves the backward launches").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub launches: u64,
    pub submissions: u64,
    pub buffers_created: u64,
    pub host_reads: u64,
    /// Bytes of the windows launches bound plus bytes copied between buffers: an upper bound
    /// on the memory the work moved ([`profile`] says which kernel moved what).
    pub bytes_bound: u64,
}

/// Commands recorded but not yet submitted, with the launch parameters they read.
struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    /// Launch parameters, one aligned block per launch, uploaded just before submission.
    params: Vec<u8>,
    params_buffer: wgpu::Buffer,
    launches: usize,
}

pub struct GpuBackend {
    pub summary: AdapterSummary,
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    pool: Arc<Mutex<BufferPool>>,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
    /// One bind group layout per shader module, with the number of storage buffers it binds.
    layouts: Mutex<HashMap<&'static str, (wgpu::BindGroupLayout, wgpu::PipelineLayout, usize)>>,
    batch: Mutex<Batch>,
    stats: Mutex<GpuStats>,
    /// Open while a kernel profile is being taken ([`GpuBackend::start_profile`]).
    profile: Mutex<Option<profile::KernelProfile>>,
    params_align: usize,
    /// The first error wgpu reported outside an error scope; surfaced at the next sync point
    /// instead of wgpu's default handler, which panics.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Allocations beyond this many bytes (live + cached) fail with an error naming the
    /// tensor (default: the device-local memory the driver reports, where it does).
    memory_limit: Mutex<Option<u64>>,
}

impl GpuBackend {
    /// Opens adapter `index` (as numbered by [`list_adapters`]); the same index returns the
    /// same backend for the life of the process.
    pub fn open(index: usize) -> Result<Arc<Self>> {
        Self::open_with_binding_limit(index, None)
    }

    /// Opens adapter `index` as a device that binds at most `binding_limit` bytes of a buffer
    /// to one kernel (none: what the adapter allows). A lowered limit makes ordinary tensors
    /// "big": how the conformance suite drives every op through its split path on small
    /// shapes, as a device with smaller limits would.
    pub fn open_with_binding_limit(index: usize, binding_limit: Option<u64>) -> Result<Arc<Self>> {
        type Opened = HashMap<(usize, Option<u64>), Arc<GpuBackend>>;
        static OPEN: OnceLock<Mutex<Opened>> = OnceLock::new();
        let mut open = OPEN.get_or_init(Default::default).lock().expect("device registry poisoned");
        if let Some(backend) = open.get(&(index, binding_limit)) {
            return Ok(backend.clone());
        }
        let adapters = adapters::raw_adapters();
        let adapter = adapters.get(index).ok_or(Error::NoSuchAdapter { index, count: adapters.len() })?;
        let backend = Arc::new(Self::create(index, adapter, binding_limit)?);
        open.insert((index, binding_limit), backend.clone());
        Ok(backend)
    }

    fn create(index: usize, adapter: &wgpu::Adapter, binding_limit: Option<u64>) -> Result<Self> {
        let summary = adapters::summarize(index, adapter);
        let summary_memory = summary.memory_bytes;
        // The adapter's own limits: the WebGPU defaults would cap buffers at 256 MiB.
        let mut limits = adapter.limits();
        if let Some(limit) = binding_limit {
            let align = limits.min_storage_buffer_offset_alignment as u64;
            if limit < 4 * align || limit > limits.max_storage_buffer_binding_size {
                return Err(Error::DeviceOpen {
                    index,
                    name: summary.name.clone(),
                    reason: format!(
                        "a binding limit of {limit} bytes is outside what this adapter can take ({} to {} bytes)",
                        4 * align,
                        limits.max_storage_buffer_binding_size
                    ),
                });
            }
            limits.max_storage_buffer_binding_size = limit;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::DeviceOpen { index, name: summary.name.clone(), reason: e.to_string() })?;
        let uncaptured: Arc<Mutex<Option<String>>> = Default::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut first) = sink.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }));
        let params_align = (limits.min_uniform_buffer_offset_alignment as usize).max(MAX_PARAMS_BYTES);
        let params_buffer = Self::params_buffer(&device, params_align);
        Ok(Self {
            summary,
            device,
            queue,
            limits,
            pool: Default::default(),
            pipelines: Default::default(),
            layouts: Default::default(),
            batch: Mutex::new(Batch { encoder: None, params: Vec::new(), params_buffer, launches: 0 }),
            stats: Default::default(),
            profile: Mutex::new(None),
            params_align,
            uncaptured,
            memory_limit: Mutex::new(summary_memory),
        })
    }

    fn params_buffer(device: &wgpu::Device, align: usize) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera launch params"),
            size: (align * MAX_LAUNCHES_PER_BATCH) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.summary.name
    }

    /// The adapter and driver, as the tuning cache's key: choices do not carry over to
    /// another driver version.
    pub fn tune_key(&self) -> String {
        format!("{} [{}] {}", self.summary.name, self.summary.backend, self.summary.driver)
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// True for software rasterisers (lavapipe, llvmpipe, WARP, SwiftShader), where kernels
    /// want different shapes than on real GPUs.
    pub fn is_software(&self) -> bool {
        self.summary.device_type == format!("{:?}", wgpu::DeviceType::Cpu)
    }

    /// The subgroup width, where the device has subgroup operations of one fixed width.
    pub fn fixed_subgroup_size(&self) -> Option<u32> {
        let (min, max) = self.summary.subgroup_sizes;
        (self.summary.subgroups && min == max).then_some(min)
    }

    /// Whether `kernel`'s requirements (today: an exact subgroup width) are met here.
    pub fn supports_subgroup_size(&self, required: Option<u32>) -> bool {
        required.is_none_or(|n| self.fixed_subgroup_size() == Some(n))
    }

    /// Native f16 arithmetic in shaders (the SHADER_F16 feature, enabled when offered).
    pub fn has_shader_f16(&self) -> bool {
        self.summary.shader_f16
    }

    /// The pack2x16float / unpack2x16float builtins (every f16-storage route needs them).
    pub fn has_f16_pack(&self) -> bool {
        self.summary.f16_pack
    }

    pub fn stats(&self) -> GpuStats {
        *self.stats.lock().expect("stats poisoned")
    }

    /// Opens a kernel profile: from now on each launch and copy runs alone and is timed
    /// ([`profile`]).
    pub fn start_profile(&self) -> Result<()> {
        self.synchronize()?;
        *self.profile.lock().expect("profile poisoned") = Some(Default::default());
        Ok(())
    }

    /// Closes the open profile and returns it (None if none was open).
    pub fn finish_profile(&self) -> Result<Option<profile::KernelProfile>> {
        self.synchronize()?;
        Ok(self.profile.lock().expect("profile poisoned").take())
    }

    /// Runs `record` (which queues one command), counting `bytes` as bound; under an open
    /// profile, after the queued work is done and then submitted and waited for alone, timed
    /// under `name`.
    fn recorded(&self, name: &'static str, bytes: u64, record: impl FnOnce() -> Result<()>) -> Result<()> {
        self.stats.lock().expect("stats poisoned").bytes_bound += bytes;
        if self.profile.lock().expect("profile poisoned").is_none() {
            return record();
        }
        self.synchronize()?;
        let start = std::time::Instant::now();
        record()?;
        self.synchronize()?;
        let took = start.elapsed();
        if let Some(p) = self.profile.lock().expect("profile poisoned").as_mut() {
            p.record(name, took, bytes);
        }
        Ok(())
    }

    /// The largest tensor, in bytes: one buffer. Ops bind a tensor beyond
    /// [`max_binding_bytes`](Self::max_binding_bytes) as windows, one per launch.
    pub fn max_tensor_bytes(&self) -> u64 {
        self.limits.max_buffer_size
    }

    /// The most bytes of a buffer one kernel binding may cover.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Where a binding window may start: offsets are multiples of this many bytes.
    pub fn binding_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    /// The binding alignment in f32 values (at least one).
    pub fn binding_alignment_values(&self) -> usize {
        (self.binding_alignment() / 4).max(1) as usize
    }

    /// The most f32 values a window bound at an aligned offset may hold, a whole number of
    /// alignment units (so the next window starts aligned too).
    pub fn max_binding_values(&self) -> usize {
        let align = self.binding_alignment().max(4);
        ((self.max_binding_bytes() / align) * align / 4) as usize
    }

    /// The device's memory now (see [`MemoryStats`]).
    pub fn memory(&self) -> MemoryStats {
        let pool = self.pool.lock().expect("buffer pool poisoned");
        MemoryStats {
            live_bytes: pool.live_bytes(),
            cached_bytes: pool.cached_bytes,
            peak_live_bytes: pool.peak_live_bytes,
            peak_allocated_bytes: pool.peak_allocated_bytes,
            limit_bytes: *self.memory_limit.lock().expect("limit poisoned"),
            reported_bytes: self.summary.memory_bytes,
        }
    }

    /// Starts the memory peaks again from what is held now.
    pub fn reset_peak_memory(&self) {
        self.pool.lock().expect("buffer pool poisoned").reset_peaks();
    }

    /// Allocations beyond `limit` bytes (live + cached) fail (none: no limit but the driver's).
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        *self.memory_limit.lock().expect("limit poisoned") = limit;
    }

    /// A storage buffer of at least `bytes` from the pool (contents undefined). A new buffer
    /// that would take the device past its memory limit first frees the pool's cached
    /// buffers; if the live ones alone leave no room, it is an error.
    pub fn alloc(&self, bytes: u64) -> Result<GpuBuffer> {
        let max = self.max_tensor_bytes();
        if bytes > max {
            return Err(Error::TooLarge { bytes, max, adapter: self.summary.name.clone() });
        }
        let class = size_class(bytes, max);
        let limit = *self.memory_limit.lock().expect("limit poisoned");
        let mut pool = self.pool.lock().expect("buffer pool poisoned");
        let buffer = match pool.take(class, STORAGE_USAGE) {
            Some(buffer) => buffer,
            None => {
                if let Some(limit) = limit.filter(|l| pool.allocated_bytes + class > *l) {
                    // Recorded commands may still read cached buffers: run them before freeing.
                    drop(pool);
                    self.synchronize()?;
                    pool = self.pool.lock().expect("buffer pool poisoned");
                    pool.trim();
                    if pool.allocated_bytes + class > limit {
                        let live = pool.live_bytes();
                        return Err(Error::DeviceMemory {
                            what: format!("a {bytes}-byte buffer"),
                            bytes: class,
                            live,
                            limit,
                            adapter: self.summary.name.clone(),
                        });
                    }
                }
                pool.created(class);
                self.stats.lock().expect("stats poisoned").buffers_created += 1;
                self.device.create_buffer(&wgpu::BufferDescriptor { label: None, size: class, usage: STORAGE_USAGE, mapped_at_creation: false })
            }
        };
        drop(pool);
        Ok(GpuBuffer::new(buffer, bytes, self.pool.clone()))
    }

    /// Uploads `data` into a new pooled buffer.
    pub fn upload(&self, data: &[f32]) -> Result<GpuBuffer> {
        self.upload_bytes(bytemuck::cast_slice(data))
    }

    /// Uploads raw bytes (a multiple of 4 long: f32 or u32 values) into a new pooled buffer.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<GpuBuffer> {
        let buffer = self.alloc(bytes.len() as u64)?;
        if bytes.is_empty() {
            return Ok(buffer);
        }
        let mut batch = self.batch.lock().expect("batch poisoned");
        match batch.encoder.as_mut() {
            // `queue.write_buffer` lands before every recorded command; a recycled buffer may
            // still be read by one, so with commands pending the copy joins the stream instead.
            Some(encoder) => {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera upload"),
                    size: bytes.len() as u64,
                    usage: wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: true,
                });
                staging.slice(..).get_mapped_range_mut().map_err(|e| self.gpu_err(e))?.copy_from_slice(bytes);
                staging.unmap();
                encoder.copy_buffer_to_buffer(&staging, 0, buffer.raw(), 0, bytes.len() as u64);
            }
            None => self.queue.write_buffer(buffer.raw(), 0, bytes),
        }
        Ok(buffer)
    }

    /// Copies `bytes` bytes from `src` at `src_offset` to `dst` at `dst_offset`, in stream
    /// order with the recorded kernels (offsets and length in whole f32 values). How ops place
    /// a block computed apart into a tensor bigger than one binding.
    pub fn copy(&self, src: &GpuBuffer, src_offset: u64, dst: &GpuBuffer, dst_offset: u64, bytes: u64) -> Result<()> {
        if src_offset + bytes > src.len || dst_offset + bytes > dst.len || !(src_offset | dst_offset | bytes).is_multiple_of(4) {
            return Err(self.gpu_err(format!("copy of {bytes} bytes from {src_offset} of {} to {dst_offset} of {} bytes is out of range", src.len, dst.len)));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.recorded(profile::BUFFER_COPY, bytes, || {
            let mut batch = self.batch.lock().expect("batch poisoned");
            self.encoder(&mut batch).copy_buffer_to_buffer(src.raw(), src_offset, dst.raw(), dst_offset, bytes);
            Ok(())
        })
    }

    /// Reads `buffer` back to the host; submits pending work and waits for it.
    pub fn download(&self, buffer: &GpuBuffer) -> Result<Vec<f32>> {
        Ok(self.download_many(&[buffer])?.pop().unwrap_or_default())
    }

    /// Reads several buffers back in one round trip: one copy each into one staging buffer,
    /// one submission, one wait (a checkpoint of every parameter costs one read, not one per
    /// tensor).
    pub fn download_many(&self, buffers: &[&GpuBuffer]) -> Result<Vec<Vec<f32>>> {
        let total: u64 = buffers.iter().map(|b| b.len).sum();
        if total == 0 {
            return Ok(buffers.iter().map(|_| Vec::new()).collect());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera download"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut batch = self.batch.lock().expect("batch poisoned");
            let encoder = self.encoder(&mut batch);
            let mut offset = 0;
            for b in buffers {
                // Lengths are whole f32 values, so every offset keeps COPY's 4-byte alignment.
                if b.len > 0 {
                    encoder.copy_buffer_to_buffer(b.raw(), 0, &staging, offset, b.len);
                }
                offset += b.len;
            }
            self.submit(&mut batch);
        }
        self.stats.lock().expect("stats poisoned").host_reads += 1;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let mapped = rx.recv().map_err(|e| self.gpu_err(e))?;
        mapped.map_err(|e| self.gpu_err(e))?;
        let view = staging.slice(..).get_mapped_range().map_err(|e| self.gpu_err(e))?;
        let all = bytemuck::cast_slice::<u8, f32>(&view);
        let mut out = Vec::with_capacity(buffers.len());
        let mut at = 0;
        for b in buffers {
            let n = (b.len / 4) as usize;
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Submits recorded work and blocks until the device is idle.
    pub fn synchronize(&self) -> Result<()> {
        self.submit(&mut self.batch.lock().expect("batch poisoned"));
        self.wait()
    }

    /// Releases every cached buffer back to the driver.
    pub fn trim_pool(&self) {
        self.pool.lock().expect("buffer pool poisoned").trim();
    }

    fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| self.gpu_err(e))?;
        match self.uncaptured.lock().expect("error slot poisoned").take() {
            Some(detail) => Err(self.gpu_err(detail)),
            None => Ok(()),
        }
    }

    fn gpu_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Gpu { adapter: self.summary.name.clone(), detail: e.to_string() }
    }

    fn encoder<'b>(&self, batch: &'b mut Batch) -> &'b mut wgpu::CommandEncoder {
        batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }))
    }

    fn submit(&self, batch: &mut Batch) {
        let Some(encoder) = batch.encoder.take() else { return };
        if !batch.params.is_empty() {
            self.queue.write_buffer(&batch.params_buffer, 0, &batch.params);
        }
        self.queue.submit([encoder.finish()]);
        // The next batch writes its parameters before its own submission, after this one's
        // commands in queue order, so the same uniform buffer can be reused.
        batch.params.clear();
        batch.launches = 0;
        self.stats.lock().expect("stats poisoned").submissions += 1;
    }

    /// The bind group layout of `shader`'s module, derived from its declarations: binding 0
    /// the parameter block, 1..=n storage buffers. Returns it with n.
    fn layout(&self, shader: &'static tessera_shaders::Shader) -> Result<(wgpu::BindGroupLayout, wgpu::PipelineLayout, usize)> {
        let mut layouts = self.layouts.lock().expect("layout cache poisoned");
        if let Some(found) = layouts.get(shader.name) {
            return Ok(found.clone());
        }
        let bindings = shader.bindings().map_err(|e| self.gpu_err(format!("shader did not compile: {e}")))?;
        let buffer = |ty| wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None };
        let mut entries =
            vec![wgpu::BindGroupLayoutEntry { binding: 0, visibility: wgpu::ShaderStages::COMPUTE, ty: buffer(wgpu::BufferBindingType::Uniform), count: None }];
        for (i, &read_only) in bindings.storage_read_only.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: buffer(wgpu::BufferBindingType::Storage { read_only }),
                count: None,
            });
        }
        let group = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(shader.file), entries: &entries });
        let pipeline = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(shader.file),
            bind_group_layouts: &[Some(&group)],
            immediate_size: 0,
        });
        let found = (group, pipeline, bindings.storage_read_only.len());
        layouts.insert(shader.name, found.clone());
        Ok(found)
    }

    /// The cached pipeline of `kernel`, compiled on first use. A kernel the driver rejects is
    /// an error naming the file and entry point, not a panic.
    fn pipeline(&self, kernel: &Kernel) -> Result<wgpu::ComputePipeline> {
        let (_, layout, _) = self.layout(kernel.shader)?;
        let mut cache = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(pipeline) = cache.get(&(kernel.shader.name, kernel.entry)) {
            return Ok(pipeline.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.shader.file),
            source: wgpu::ShaderSource::Wgsl(kernel.shader.source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(self.gpu_err(format!("{} `{}` did not compile: {e}", kernel.shader.file, kernel.entry)));
        }
        cache.insert((kernel.shader.name, kernel.entry), pipeline.clone());
        Ok(pipeline)
    }

    /// The one way to run a kernel. Binding 0 is the `params` uniform block; bindings 1..=n
    /// are `buffers`, one for each storage buffer the kernel's module declares, in order (an
    /// entry point that ignores one still gets it bound). Recorded, not waited for.
    pub fn launch(&self, kernel: &Kernel, params: &[u8], buffers: &[&GpuBuffer], workgroups: [u32; 3]) -> Result<()> {
        let windows: Vec<Window> = buffers.iter().map(|b| b.whole()).collect();
        self.launch_windows(kernel, params, &windows, workgroups)
    }

    /// [`launch`](Self::launch) with each storage binding a window of its buffer. A window
    /// beyond [`max_binding_bytes`](Self::max_binding_bytes) is an error naming the kernel:
    /// the op must split its work (no driver validation panic).
    pub fn launch_windows(&self, kernel: &Kernel, params: &[u8], buffers: &[Window], workgroups: [u32; 3]) -> Result<()> {
        assert!(params.len() <= MAX_PARAMS_BYTES, "{}: params block too large", kernel.entry);
        let (group_layout, _, storage_count) = self.layout(kernel.shader)?;
        if buffers.len() != storage_count {
            return Err(self.gpu_err(format!("{} binds {storage_count} storage buffers; the launch passed {}", kernel.entry, buffers.len())));
        }
        for w in buffers {
            if w.size > self.max_binding_bytes() {
                return Err(Error::BindingTooLarge { kernel: kernel.entry, bytes: w.size, max: self.max_binding_bytes(), adapter: self.summary.name.clone() });
            }
            if !w.offset.is_multiple_of(self.binding_alignment()) || w.offset + w.size > w.buffer.raw().size() {
                return Err(self.gpu_err(format!(
                    "{}: binding window {}+{} of a {}-byte buffer is misplaced",
                    kernel.entry,
                    w.offset,
                    w.size,
                    w.buffer.raw().size()
                )));
            }
        }
        let max_groups = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&g| g > max_groups) {
            return Err(self.gpu_err(format!("{} needs {workgroups:?} workgroups; the adapter allows {max_groups} per dimension", kernel.entry)));
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let pipeline = self.pipeline(kernel)?;
        let bytes: u64 = buffers.iter().map(|w| w.size).sum();
        self.recorded(kernel.entry, bytes, || self.encode_launch(&pipeline, &group_layout, params, buffers, workgroups))
    }

    /// Queues one compute pass of `pipeline` (the checks are [`launch_windows`](Self::launch_windows)'s).
    fn encode_launch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        group_layout: &wgpu::BindGroupLayout,
        params: &[u8],
        buffers: &[Window],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let mut batch = self.batch.lock().expect("batch poisoned");
        if batch.launches == MAX_LAUNCHES_PER_BATCH {
            self.submit(&mut batch);
        }
        let offset = batch.params.len();
        batch.params.extend_from_slice(params);
        batch.params.resize(offset + self.params_align, 0);
        batch.launches += 1;

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &batch.params_buffer,
                offset: offset as u64,
                size: wgpu::BufferSize::new(MAX_PARAMS_BYTES as u64),
            }),
        }];
        for (i, w) in buffers.iter().enumerate() {
            let buffer = wgpu::BufferBinding { buffer: w.buffer.raw(), offset: w.offset, size: wgpu::BufferSize::new(w.size.max(4)) };
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: wgpu::BindingResource::Buffer(buffer) });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: group_layout, entries: &entries });
        let encoder = self.encoder(&mut batch);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        self.stats.lock().expect("stats poisoned").launches += 1;
        Ok(())
    }
}
