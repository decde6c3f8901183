//! The checksum of an online value (`value.rs`, layout 3): CRC-32C (Castagnoli) of the view's schema
//! record, the value's LMDB key and its body, chained. The same function as the `crc32c` crate's
//! `crc32c_append` (the unit tests hold that), computed in one call over both pieces.
//!
//! Why not the crate on the read path: every served value is checked, and the crate's function is
//! built for long buffers. It first walks to an 8-byte-aligned address one byte per instruction, then
//! splits the rest three ways; a value's key and body sit at unaligned offsets of an LMDB page and are
//! short (a 12-byte key, a body of tens of bytes), so half of its instructions were byte steps, each a
//! serial 3-cycle `crc32`, and two calls per value. Here the bytes go 8 at a time through unaligned
//! loads (the result does not depend on alignment) and the tail 4, 2, 1 at a time.

/// `crc32c_append(crc32c_append(seed, key), body)`: the checksum of `body` stored under `key`, from
/// the view's `seed`.
#[inline]
pub fn value_crc(seed: u32, key: &[u8], body: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2 (checked just above), the only requirement of `hw`.
            return unsafe { hw::chain(seed, key, body) };
        }
    }
    crc32c::crc32c_append(crc32c::crc32c_append(seed, key), body)
}

#[cfg(target_arch = "x86_64")]
mod hw {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// # Safety
    /// The CPU must support SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub unsafe fn chain(seed: u32, key: &[u8], body: &[u8]) -> u32 {
        // The crate's convention: the state is the complement of the running checksum.
        let c = bytes(!seed as u64, key);
        !(bytes(c, body) as u32)
    }

    /// # Safety
    /// The CPU must support SSE 4.2.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn bytes(mut c: u64, b: &[u8]) -> u64 {
        let mut words = b.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            c = _mm_crc32_u64(c, u64::from_le_bytes(a));
        }
        let mut rest = words.remainder();
        let mut c = c as u32;
        if rest.len() >= 4 {
            c = _mm_crc32_u32(c, u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
            rest = &rest[4..];
        }
        if rest.len() >= 2 {
            c = _mm_crc32_u16(c, u16::from_le_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
        }
        if let Some(&x) = rest.first() {
            c = _mm_crc32_u8(c, x);
        }
        c as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(seed: u32, key: &[u8], body: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c_append(seed, key), body)
    }

    #[test]
    fn matches_the_crate_for_every_length_offset_and_seed() {
        // Deterministic bytes without another dependency.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for seed in [0, 1, 0xFFFF_FFFF, 0xE306_9283] {
            for klen in 0..24 {
                for koff in 0..8 {
                    let key = &data[koff..koff + klen];
                    for blen in (0..80).chain([127, 128, 129, 255]) {
                        let boff = 31 + (klen + blen) % 9;
                        let body = &data[boff..boff + blen];
                        assert_eq!(
                            value_crc(seed, key, body),
                            reference(seed, key, body),
                            "seed {seed:#x}, key {klen}@{koff}, body {blen}@{boff}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn is_crc32c() {
        // CRC-32C's published check value, split at every point.
        let s = b"123456789";
        for cut in 0..=s.len() {
            assert_eq!(value_crc(0, &s[..cut], &s[cut..]), 0xE306_9283);
        }
    }
}
