//! Adapter discovery: every adapter on every backend wgpu was built with, in a stable order,
//! so that `gpu:N` names the same adapter in `tessera devices` and everywhere else.
use std::sync::OnceLock;

/// What `tessera devices` prints for an adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage: u32,
    pub shader_f16: bool,
    /// pack2x16float / unpack2x16float in shaders (wgpu downlevel flag SHADER_F16_IN_F32).
    pub f16_pack: bool,
    pub subgroups: bool,
    /// Subgroup width range the adapter reports (equal when fixed).
    pub subgroup_sizes: (u32, u32),
    /// The largest device-local memory heap the driver reports (Vulkan; wgpu itself reports
    /// none, nor do the other backends through it).
    pub memory_bytes: Option<u64>,
}

/// The largest device-local heap of a Vulkan adapter.
#[cfg(any(target_os = "linux", target_os = "windows"))]
fn device_local_bytes(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the guard borrows the live adapter for one read-only query; the physical device
    // belongs to the instance, which outlives the call.
    unsafe {
        let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
        let instance = hal.shared_instance().raw_instance();
        let props = instance.get_physical_device_memory_properties(hal.raw_physical_device());
        let heaps = &props.memory_heaps[..props.memory_heap_count as usize];
        heaps.iter().filter(|h| h.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL)).map(|h| h.size).max()
    }
}

#[cfg(not(any(target_os = "linux", target_os = "windows")))]
fn device_local_bytes(_: &wgpu::Adapter) -> Option<u64> {
    None
}

/// Mesa's GL and WSI loaders print "XDG_RUNTIME_DIR is invalid or not set" for every adapter
/// they probe when the variable is unset (a root shell, CI, a container). Before main — the
/// environment is not yet shared with other threads — an unset variable gets a private
/// default: a folder only this user can enter, as the XDG spec asks.
#[ctor::ctor]
fn default_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tessera-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // Only a folder this user owns with mode 0700 qualifies (another user may have made it).
    let ours = std::fs::metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o777 == 0o700);
    if ours {
        // SAFETY: runs before main, while this is the only thread.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

pub(crate) fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let desc = wgpu::InstanceDescriptor { backends: wgpu::Backends::all(), ..wgpu::InstanceDescriptor::new_without_display_handle() };
        // WGPU_BACKEND and friends still narrow the set when a user sets them.
        wgpu::Instance::new(desc.with_env())
    })
}

/// All adapters, sorted by backend then name (wgpu's own order is not guaranteed stable).
/// Enumerated once and kept for the process: dropping a GL adapter while another thread has
/// its EGL context current makes wgpu-hal panic.
pub(crate) fn raw_adapters() -> &'static [wgpu::Adapter] {
    static ADAPTERS: OnceLock<Vec<wgpu::Adapter>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
        adapters.sort_by_key(|a| {
            let info = a.get_info();
            (info.backend as u8, info.name, info.driver_info)
        });
        adapters
    })
}

pub(crate) fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    let driver = [info.driver.as_str(), info.driver_info.as_str()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
    AdapterSummary {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver,
        max_buffer_size: limits.max_buffer_size,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
        max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        f16_pack: adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
        memory_bytes: device_local_bytes(adapter),
    }
}

/// Lists every adapter wgpu finds.
pub fn list_adapters() -> Vec<AdapterSummary> {
    raw_adapters().iter().enumerate().map(|(i, a)| summarize(i, a)).collect()
}
