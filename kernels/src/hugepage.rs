//! Large buffers on transparent huge pages (Linux), best effort.
//!
//! The engine's big arrays (activations: up to 12 MB per buffer at a 2048-token budget;
//! e5-small-v2's packed weight matrices are 0.6-2.4 MB each, below the threshold) are
//! read in long sweeps. On 4 KiB pages
//! each sweep misses the TLB once per page, and under a hypervisor each miss is a
//! two-level page walk. With `transparent_hugepage` in `madvise` mode (the common default)
//! a process only gets 2 MiB pages where it asks for them, before the pages are first
//! touched. [`filled_vec`] does that for buffers of at least [`MIN_BYTES`]. Measured
//! (`examples/gemm_probe.rs` with its operands advised or not, T = 4096, one thread, two
//! interleaved rounds): QKV 85.6-86.1% -> 87.5-87.8% of the FMA peak, FFN up 81.2-81.5% ->
//! 82.8-83.3%; attention output and FFN down unchanged. `thp_fault_alloc` in
//! `/proc/vmstat` shows the huge pages being used.
//!
//! Nothing depends on it: where the kernel refuses (THP `never`, not Linux, memory
//! already touched by the allocator) the buffer is an ordinary one.

/// Buffers smaller than this are left alone (a huge page needs a 2 MiB-aligned 2 MiB
/// range inside the allocation).
pub const MIN_BYTES: usize = 4 << 20;

const HUGE: usize = 2 << 20;

/// A `Vec` of `len` copies of `fill`, whose 2 MiB-aligned interior is advised onto
/// transparent huge pages before it is written (so the first touch faults in huge pages).
pub fn filled_vec<T: Copy>(len: usize, fill: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise(v.as_mut_ptr().cast::<u8>(), len * std::mem::size_of::<T>());
    v.resize(len, fill);
    v
}

/// Asks for huge pages on the 2 MiB-aligned part of `[ptr, ptr + bytes)`.
fn advise(ptr: *mut u8, bytes: usize) {
    if bytes < MIN_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        advise_range(start, end - start);
    }
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, len: usize) {
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const MADV_HUGEPAGE: i32 = 14;
    // SAFETY: `[start, start + len)` lies inside one live allocation owned by the caller
    // (page-aligned: a multiple of 2 MiB); MADV_HUGEPAGE changes only how the kernel backs
    // it, never its contents or validity. A failure (THP disabled) is harmless: ignored.
    unsafe {
        madvise(start as *mut std::ffi::c_void, len, MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _len: usize) {}

/// Hands the allocator's free memory back to the OS (glibc's `malloc_trim`; a no-op
/// elsewhere). After a load that packed the weights, the freed `model.safetensors` copy and
/// packed buffers (~130-170 MB at e5-small-v2 f32) otherwise stay in the process's heap:
/// glibc raises its mmap threshold as big blocks are freed, later ones come from the heap,
/// and a heap is only shrunk from its top. Changes no memory the program holds.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only returns pages of free chunks to the OS (madvise /
        // sbrk); it is thread-safe (takes the arenas' locks) and touches no live allocation.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_vec_has_len_and_fill() {
        for len in [0, 1, 17, (MIN_BYTES / 4) + 3, 3 << 20] {
            let v = filled_vec(len, 1.5f32);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 1.5));
        }
        let b = filled_vec(MIN_BYTES * 2, 0x5au8);
        assert!(b.iter().all(|&x| x == 0x5a));
    }
}
