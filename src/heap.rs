//! glibc's heap settings for the training and evaluation processes.
//!
//! By default glibc serves blocks above a dynamic threshold (at most 32 MB) with their own mmap and returns
//! freed memory at the heap's top to the OS, so every step's activations, attention gradients and
//! relevance-backward buffers (up to 15 MB each at ViT-B, batch 8) arrive as fresh pages and page-fault in
//! again. Keeping freed memory in the heap made a tiny-ViT finetuning step 8-10% faster
//! (docs/performance.md). Libraries that load the ops into Python get the same with the environment
//! variables `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736`.

/// The largest threshold glibc accepts (`HEAP_MAX_SIZE / 2` on 64-bit): blocks up to it come from the heap.
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Keeps freed memory in the process's heap for reuse; call once at start-up, before threads allocate.
/// A no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        // Trim the heap's top only past 2 GB free (the largest value mallopt's int takes).
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
