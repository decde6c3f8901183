//! Key encoding, version 1. The one place this format is defined.
//!
//! A view's key is a tuple of one or more key columns. Its LMDB key is the concatenation of one encoded
//! part per column, built so that comparing two encoded keys byte by byte (LMDB's default order) gives the
//! same answer as comparing the tuples element by element. A range of keys is therefore a range of bytes.
//!
//! Parts:
//! - signed integers (int8..int64): widened to i64, the sign bit flipped, 8 bytes big-endian. Flipping the
//!   sign bit maps i64::MIN..=i64::MAX onto 0..=u64::MAX in order.
//! - unsigned integers (uint8..uint64): widened to u64, 8 bytes big-endian.
//! - strings (UTF-8 bytes) and binary: in the LAST position, the raw bytes. In any other position the bytes
//!   are escaped and terminated: every 0x00 becomes 0x00 0xFF and the part ends with 0x00 0x01.
//!
//! Why escaping and not a length prefix: a length prefix makes every shorter string sort before every
//! longer one ("b" < "aa"), which breaks tuple order. With the escape, at the first differing original
//! byte both encodings agree up to that point; a 0x00 (escaped 0x00 0xFF) sorts below any other byte; and
//! when one string is a prefix of the other, its terminator 0x00 0x01 sorts below whatever the longer one
//! continues with (a byte >= 0x01, or 0x00 0xFF). Fixed-width parts need no delimiter. So byte order equals
//! tuple order, and the next part is only compared when the previous parts are equal.
//!
//! Widening means a view keyed by int32 and one keyed by int64 encode equal numbers identically, so a
//! lookup with Python ints needs no knowledge of the stored width.
//!
//! In LMDB every view's keys live in one database, each prefixed with the view's id as 4 bytes
//! big-endian (ids are handed out by the first write of a view and kept in the metadata database), so
//! one view's keys form one contiguous range. LMDB limits keys to 511 bytes: 507 for the encoded key.

use crate::error::{Error, Result};

/// The version of the key encoding above. Stored in each environment's metadata.
pub const KEY_FORMAT_VERSION: u8 = 1;

/// LMDB's default maximum key size.
pub const MAX_KEY_BYTES: usize = 511;

#[inline]
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1u64 << 63)).to_be_bytes());
}

#[inline]
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a string/binary part; `last` says whether it is the key's final part (then no escaping).
#[inline]
pub fn push_bytes(out: &mut Vec<u8>, v: &[u8], last: bool) {
    if last {
        out.extend_from_slice(v);
        return;
    }
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Checks an encoded key (without its view prefix) against LMDB's limit.
pub fn check_len(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_BYTES - 4 {
        return Err(Error::InvalidArgument(format!(
            "an encoded key is {} bytes; the online store's keys are limited to {} bytes. \
             Use shorter key values (e.g. a hash of a long string)",
            key.len(),
            MAX_KEY_BYTES - 4
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Part {
        I(i64),
        U(u64),
        S(Vec<u8>),
    }

    fn encode(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            match p {
                Part::I(v) => push_i64(&mut out, *v),
                Part::U(v) => push_u64(&mut out, *v),
                Part::S(v) => push_bytes(&mut out, v, i + 1 == parts.len()),
            }
        }
        out
    }

    /// A small deterministic generator (no extra crate): values biased toward edges, zeros and prefixes.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn int(&mut self) -> i64 {
            match self.next() % 6 {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => 0,
                3 => -1,
                4 => (self.next() % 5) as i64 - 2,
                _ => self.next() as i64,
            }
        }
        fn bytes(&mut self) -> Vec<u8> {
            let n = (self.next() % 4) as usize;
            (0..n)
                .map(|_| [0u8, 1, 0xFF, b'a', b'b'][(self.next() % 5) as usize])
                .collect()
        }
    }

    #[test]
    fn byte_order_equals_tuple_order_for_every_shape() {
        // Shapes: (int), (str), (str, int), (int, str), (str, str), (uint, str, int).
        let shapes: [&[u8]; 6] = [b"i", b"s", b"si", b"is", b"ss", b"usi"];
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for shape in shapes {
            let mut tuples: Vec<Vec<Part>> = Vec::new();
            for _ in 0..400 {
                tuples.push(
                    shape
                        .iter()
                        .map(|c| match c {
                            b'i' => Part::I(g.int()),
                            b'u' => Part::U(g.next() >> (g.next() % 64)),
                            _ => Part::S(g.bytes()),
                        })
                        .collect(),
                );
            }
            for a in &tuples {
                for b in tuples.iter().take(60) {
                    assert_eq!(a.cmp(b), encode(a).cmp(&encode(b)), "{a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn escaping_keeps_prefixes_and_zero_bytes_in_order() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"", b"\x00"),
            (b"a", b"a\x00"),
            (b"a\x00", b"a\x01"),
            (b"b", b"aa"),
        ];
        for (lo, hi) in cases {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            push_bytes(&mut x, lo, false);
            push_i64(&mut x, 5);
            push_bytes(&mut y, hi, false);
            push_i64(&mut y, -5);
            assert_eq!(lo.cmp(hi), x.cmp(&y), "{lo:?} {hi:?}");
        }
    }

    #[test]
    fn long_keys_are_rejected() {
        assert!(check_len(&[0u8; 507]).is_ok());
        assert!(matches!(check_len(&[0u8; 508]), Err(Error::InvalidArgument(_))));
    }
}
