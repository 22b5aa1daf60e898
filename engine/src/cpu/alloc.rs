//! A global allocator for training processes: the system allocator plus a small cache of freed
//! large blocks, handed back for the next allocation of the same size.
//!
//! A training step frees and re-allocates the same large tensors every step (AlexNet's 151 MB
//! fc6 weight gradient, ResNet activations at 224 px). glibc maps blocks of 32 MiB and more
//! afresh each time, so every step paid a page fault and kernel zeroing per 4 KiB page of
//! them; keeping them in its heap instead left holes that smaller tensors split, and the next
//! step's copy went on top (+130 MiB peak for AlexNet). Cached blocks stay mapped and are
//! reused whole: no faults, no holes. Install it in a binary:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: tessera_engine::cpu::alloc::LargeBlockCache = tessera_engine::cpu::alloc::LargeBlockCache;
//! ```
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Blocks at least this large are cached (glibc's largest mmap threshold).
pub const LARGE_BLOCK: usize = 32 << 20;
/// At most this many cached blocks and bytes; the least recently freed goes first.
const MAX_BLOCKS: usize = 32;
const MAX_BYTES: usize = 1 << 30;

#[derive(Clone, Copy)]
struct Block {
    ptr: usize,
    size: usize,
    align: usize,
    /// When it was freed, for eviction.
    stamp: u64,
}

struct Cache {
    blocks: [Option<Block>; MAX_BLOCKS],
    bytes: usize,
    clock: u64,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache { blocks: [None; MAX_BLOCKS], bytes: 0, clock: 0 });

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The system allocator with freed large blocks cached for reuse by size.
pub struct LargeBlockCache;

impl LargeBlockCache {
    /// A cached block of exactly this layout, taken out of the cache.
    fn take(layout: Layout) -> Option<*mut u8> {
        let mut c = cache();
        let slot = c.blocks.iter_mut().find(|b| b.is_some_and(|b| b.size == layout.size() && b.align == layout.align()))?;
        let block = slot.take()?;
        c.bytes -= block.size;
        Some(block.ptr as *mut u8)
    }

    /// Keeps a freed block, first freeing the least recently freed ones past the limits.
    ///
    /// # Safety
    /// `ptr` was allocated by `System` with `layout`, and `layout.size() <= MAX_BYTES`.
    unsafe fn keep(ptr: *mut u8, layout: Layout) {
        let mut c = cache();
        while c.blocks.iter().all(Option::is_some) || c.bytes + layout.size() > MAX_BYTES {
            let oldest = c.blocks.iter_mut().filter(|b| b.is_some()).min_by_key(|b| b.map_or(u64::MAX, |b| b.stamp));
            let Some(old) = oldest.and_then(Option::take) else { break };
            c.bytes -= old.size;
            System.dealloc(old.ptr as *mut u8, Layout::from_size_align_unchecked(old.size, old.align));
        }
        c.clock += 1;
        let block = Block { ptr: ptr as usize, size: layout.size(), align: layout.align(), stamp: c.clock };
        c.bytes += block.size;
        if let Some(free) = c.blocks.iter_mut().find(|b| b.is_none()) {
            *free = Some(block);
        }
    }
}

// SAFETY: every block handed out comes from `System` with the same layout it is returned with:
// cached blocks are matched on exact size and alignment, and freed (or grown) through `System`
// with the layout they were allocated with.
unsafe impl GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK {
            if let Some(ptr) = Self::take(layout) {
                return ptr;
            }
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK {
            if let Some(ptr) = Self::take(layout) {
                std::ptr::write_bytes(ptr, 0, layout.size());
                return ptr;
            }
        }
        System.alloc_zeroed(layout)
    }

    /// Growth goes straight to the system allocator (glibc remaps large blocks in place): a
    /// vector growing through 32, 64, 128 MB… would otherwise leave each old size cached.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LARGE_BLOCK || layout.size() > MAX_BYTES {
            return System.dealloc(ptr, layout);
        }
        Self::keep(ptr, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_large_block_is_reused_for_the_same_size_and_zeroed_on_request() {
        let layout = Layout::from_size_align(LARGE_BLOCK + 4096, 64).unwrap();
        let other = Layout::from_size_align(LARGE_BLOCK + 8192, 64).unwrap();
        // SAFETY: each block is freed once with the layout it was allocated with.
        unsafe {
            let a = LargeBlockCache.alloc(layout);
            a.write_bytes(7, layout.size());
            LargeBlockCache.dealloc(a, layout);
            let b = LargeBlockCache.alloc(other);
            assert_ne!(a, b, "a cached block only serves its own size");
            let c = LargeBlockCache.alloc_zeroed(layout);
            assert_eq!(a, c, "the freed block comes back");
            assert!(std::slice::from_raw_parts(c, layout.size()).iter().all(|&v| v == 0));
            LargeBlockCache.dealloc(b, other);
            LargeBlockCache.dealloc(c, layout);
            // Small blocks bypass the cache.
            let small = Layout::from_size_align(1024, 8).unwrap();
            let s = LargeBlockCache.alloc(small);
            LargeBlockCache.dealloc(s, small);
        }
    }
}
