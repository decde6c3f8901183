//! Memory hints shared by the kernels and the online store's search: a cache-line prefetch, and large
//! working buffers on 2 MiB pages. A kernel's big buffers (an index's entries, gathered
//! columns, outputs: hundreds of MB at the benchmark's size M) are fresh allocations each call, and
//! with 4 KiB pages their first writes cost one page fault each, a large share of the kernel's time.
//! Where the kernel's transparent huge pages are in `madvise` mode, asking for them on the untouched
//! buffer makes that one fault per 2 MiB. Contents and results are unaffected; it is only a hint.

/// Asks the core to bring the cache line at `p` in (a hint: never faults, whatever the address).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and reads nothing, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Buffers smaller than this stay as they are (a huge page would not fit whole inside them).
const MIN_BYTES: usize = 4 << 20;
const HUGE: usize = 2 << 20;

/// Hints that the allocation of `v` (its whole capacity) be backed by huge pages when first written.
/// Call it before the buffer is filled: pages already written keep their size.
pub fn advise_huge<T>(v: &mut Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    let start = v.as_mut_ptr() as usize;
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + bytes) / HUGE * HUGE;
    if hi <= lo {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: [lo, hi) lies inside `v`'s own allocation and MADV_HUGEPAGE changes no contents or
    // mapping, only how the kernel backs later faults; a failure (no THP support) changes nothing.
    unsafe {
        libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
    }
}

/// A vector of `n` copies of `T::default()` advised to huge pages. For integers and floats the
/// default is zero and `vec!` takes fresh zeroed memory from the allocator (a large block is a new
/// mapping, untouched), so the hint comes before any page is written.
pub fn filled<T: Clone + Default>(n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    advise_huge(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_vectors_hold_defaults_whatever_their_size() {
        for n in [0, 1, 1000, (MIN_BYTES / 8) + 12345] {
            let v: Vec<u64> = filled(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0));
        }
        let mut v: Vec<u128> = Vec::with_capacity(3 << 20);
        advise_huge(&mut v);
        v.extend((0..3u128 << 20).map(|i| i * 3));
        assert_eq!(v[12345], 12345 * 3);
    }
}
