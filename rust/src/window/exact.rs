//! Exact floating-point sums that can be retracted.
//!
//! A window's sum must come out with the same bits whether it was built by sliding (events entering and
//! leaving, as the training-set backfill does) or from scratch over the events in the window (as the
//! online path does at a request instant). Plain `+=`/`-=` cannot promise that: rounding depends on the
//! order of operations. So the sum is kept exact and rounded once, correctly (to nearest, ties to
//! even), when read; retracting `x` subtracts it exactly. The result is then a function of the multiset
//! of values in the window alone.
//!
//! Representation: a fixed-point integer covering every finite double, in units of 2^-1074 (the
//! smallest subnormal), as signed 64-bit limbs of 32 bits each (limb i weighs 2^(32i - 1074)). A
//! double's 53-bit significand lands in three limbs: an add is three integer additions, with no
//! carry until the limbs are normalized (every 2^30 operations, and when read). The headroom of the
//! top limbs holds sums of up to 2^64 values of the largest magnitude without overflow.
//! Infinities and NaNs are counted, not added: any NaN, or both infinities, give NaN. A zero sum is
//! -0.0 exactly when every value in it is -0.0, as IEEE addition in any order gives.

/// Limbs: 2046 significand positions + 85 bits of one value + 64 bits of headroom, in 32-bit limbs.
const LIMBS: usize = 70;
const MASK: i64 = 0xffff_ffff;
/// Operations between normalizations: each adds less than 2^32 to a limb, which holds 2^63.
const NORMALIZE_EVERY: u32 = 1 << 30;

/// A retractable exact sum of f64 values (see the module docs).
#[derive(Debug, Clone)]
pub struct ExactSum {
    limbs: [i64; LIMBS],
    /// The lowest and highest limb ever touched (hi < lo: none).
    lo: usize,
    hi: usize,
    ops: u32,
    pos_inf: u64,
    neg_inf: u64,
    nan: u64,
    /// Values in the sum, and how many of them are -0.0.
    n: u64,
    neg_zero: u64,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            limbs: [0; LIMBS],
            lo: LIMBS,
            hi: 0,
            ops: 0,
            pos_inf: 0,
            neg_inf: 0,
            nan: 0,
            n: 0,
            neg_zero: 0,
        }
    }
}

/// Propagates carries over `d[lo..=top]`: every limb below `top` ends in [0, 2^32), `top` keeps the
/// sign of the whole.
fn normalize(d: &mut [i64], lo: usize, top: usize) {
    let mut carry = 0i64;
    for limb in d.iter_mut().take(top).skip(lo) {
        let v = *limb + carry;
        carry = v >> 32;
        *limb = v & MASK;
    }
    d[top] += carry;
}

impl ExactSum {
    pub fn add(&mut self, x: f64) {
        self.apply(x, false);
    }

    pub fn sub(&mut self, x: f64) {
        self.apply(x, true);
    }

    /// Back to the empty sum: only the limbs ever touched are cleared.
    #[inline]
    pub fn reset(&mut self) {
        if self.lo <= self.hi {
            self.limbs[self.lo..=self.hi].fill(0);
        }
        self.lo = LIMBS;
        self.hi = 0;
        self.ops = 0;
        self.pos_inf = 0;
        self.neg_inf = 0;
        self.nan = 0;
        self.n = 0;
        self.neg_zero = 0;
    }

    #[inline]
    fn apply(&mut self, x: f64, negate: bool) {
        let bump = |c: &mut u64| {
            if negate {
                *c -= 1
            } else {
                *c += 1
            }
        };
        bump(&mut self.n);
        if x == 0.0 {
            if x.is_sign_negative() {
                bump(&mut self.neg_zero);
            }
            return;
        }
        if !x.is_finite() {
            if x.is_nan() {
                bump(&mut self.nan);
            } else if x > 0.0 {
                bump(&mut self.pos_inf);
            } else {
                bump(&mut self.neg_inf);
            }
            return;
        }
        let bits = x.to_bits();
        let field = ((bits >> 52) & 0x7ff) as usize;
        let frac = bits & ((1 << 52) - 1);
        // value = m * 2^(p - 1074): subnormals have no implicit bit and share the lowest exponent.
        let (m, p) = if field == 0 {
            (frac, 0)
        } else {
            (frac | 1 << 52, field - 1)
        };
        let (i, sh) = (p / 32, p % 32);
        let v = (m as u128) << sh;
        let sign = if negate != (x < 0.0) { -1 } else { 1 };
        // p <= 2045, so i + 2 < LIMBS: one bounds check for the three limbs.
        let l = &mut self.limbs[i..i + 3];
        l[0] += sign * ((v as i64) & MASK);
        l[1] += sign * (((v >> 32) as i64) & MASK);
        l[2] += sign * (v >> 64) as i64;
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i + 2);
        self.ops += 1;
        if self.ops == NORMALIZE_EVERY {
            let top = (self.hi + 2).min(LIMBS - 1);
            normalize(&mut self.limbs, self.lo, top);
            self.hi = top;
            self.ops = 0;
        }
    }

    /// The exact value as (negative, digits): 32-bit digits, limb i weighing 2^(32i - 1074); all zero
    /// for a zero sum. None when the sum holds an infinity or a NaN.
    fn magnitude(&self) -> Option<(bool, [i64; LIMBS])> {
        if self.nan > 0 || self.pos_inf > 0 || self.neg_inf > 0 {
            return None;
        }
        let mut d = self.limbs;
        if self.lo > self.hi {
            return Some((false, d));
        }
        let top = (self.hi + 2).min(LIMBS - 1);
        normalize(&mut d, self.lo, top);
        let neg = d[top] < 0;
        if neg {
            d[self.lo..=top].iter_mut().for_each(|x| *x = -*x);
            normalize(&mut d, self.lo, top);
        }
        Some((neg, d))
    }

    /// The sum, rounded once.
    pub fn value(&self) -> f64 {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            return f64::NAN;
        }
        if self.pos_inf > 0 {
            return f64::INFINITY;
        }
        if self.neg_inf > 0 {
            return f64::NEG_INFINITY;
        }
        self.narrow_value().unwrap_or_else(|| self.wide_value())
    }

    /// The sum rounded once when the touched limbs fit an i128 (values of a window usually span a few
    /// limbs): the integer's conversion rounds to nearest even, and scaling it by a power of two is
    /// exact when the result is a normal double, so this is the same bits as [`ExactSum::wide_value`].
    /// None otherwise (wider sums, zero, results below the normal range or overflowing).
    #[inline]
    fn narrow_value(&self) -> Option<f64> {
        if self.lo > self.hi || self.hi - self.lo > 3 {
            return None;
        }
        let mut acc = 0i128;
        for (k, &l) in self.limbs[self.lo..=self.hi].iter().enumerate() {
            acc = acc.checked_add(i128::from(l).checked_mul(1i128 << (32 * k))?)?;
        }
        if acc == 0 {
            return None;
        }
        let r = scale(acc as f64, 32 * self.lo as i32 - 1074);
        r.is_normal().then_some(r)
    }

    /// The sum rounded once, from all its limbs (finite sums only).
    fn wide_value(&self) -> f64 {
        let Some((neg, d)) = self.magnitude() else {
            return f64::NAN;
        };
        let Some(h) = d.iter().rposition(|&x| x != 0) else {
            return if self.n > 0 && self.neg_zero == self.n {
                -0.0
            } else {
                0.0
            };
        };
        let digit = |i: isize| if i < 0 { 0u128 } else { d[i as usize] as u128 };
        let h = h as isize;
        // The top three digits (96 bits, the highest nonzero) and whether anything below them is set.
        let acc = digit(h) << 64 | digit(h - 1) << 32 | digit(h - 2);
        let sticky = h >= 3 && d[..(h - 2) as usize].iter().any(|&x| x != 0);
        let base = (h - 2) * 32; // the weight (in 2^-1074 units, as a bit position) of acc's bit 0
        let msb = base + 127 - acc.leading_zeros() as isize; // bit position of the value's top bit
        let mag = if msb < 53 {
            // Below 2^53 units the value is exact in f64: a subnormal, or a normal of exponent -1022.
            (acc >> (-base).max(0) as u32) as f64 * f64::from_bits(1)
        } else {
            let rs = (msb - 52 - base) as u32; // bits of acc below the significand
            let mut mant = acc >> rs;
            let rem = acc & ((1u128 << rs) - 1);
            let half = 1u128 << (rs - 1);
            if rem > half || (rem == half && (sticky || mant & 1 == 1)) {
                mant += 1;
            }
            let mut exp = msb - 51; // biased exponent of a value whose top bit is at position msb
            if mant == 1 << 53 {
                mant >>= 1;
                exp += 1;
            }
            if exp >= 2047 {
                f64::INFINITY
            } else {
                f64::from_bits((exp as u64) << 52 | (mant as u64 & ((1 << 52) - 1)))
            }
        };
        if neg {
            -mag
        } else {
            mag
        }
    }

    /// The exact value as doubles whose exact sum it is (one per nonzero 32-bit digit, each exact),
    /// or None when the sum holds an infinity or a NaN.
    fn parts(&self) -> Option<Vec<f64>> {
        let (neg, d) = self.magnitude()?;
        let sign = if neg { -1.0 } else { 1.0 };
        Some(
            d.iter()
                .enumerate()
                .filter(|&(_, &x)| x != 0)
                .map(|(i, &x)| sign * scale(x as f64, 32 * i as i32 - 1074))
                .collect(),
        )
    }
}

/// `x * 2^e` for an integer-valued `x` and -1074 <= `e` <= 1023: exact when the result is a normal
/// double or, for `x` below 2^32, whenever it is representable (a power of two below 2^-1022 is not a
/// normal double, so those go through 2^(e + 64) first).
fn scale(x: f64, e: i32) -> f64 {
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if e < -1022 {
        x * pow2(e + 64) * pow2(-64)
    } else {
        x * pow2(e)
    }
}

/// `n * q - s * s`, where `s` and `q` are exact sums of the values and of their exact squares: the
/// numerator of the variance, computed exactly from the sums' exact parts (products split by fused
/// multiply-add) and rounded once. With an infinity or a NaN in a sum, what plain arithmetic on the
/// rounded sums gives (deterministic either way).
pub fn variance_numerator(n: u64, s: &ExactSum, q: &ExactSum) -> f64 {
    let nf = n as f64;
    let (Some(sp), Some(qp)) = (s.parts(), q.parts()) else {
        let sv = s.value();
        return nf * q.value() - sv * sv;
    };
    let mut acc = ExactSum::default();
    let mut add_product = |a: f64, b: f64| {
        let p = a * b;
        acc.add(p);
        if p.is_finite() {
            acc.add(a.mul_add(b, -p));
        }
    };
    for &x in &qp {
        add_product(nf, x);
    }
    for &a in &sp {
        for &b in &sp {
            add_product(-a, b);
        }
    }
    acc.value()
}

/// Adds (or with `sign` < 0 retracts) the square of `x` in `q`, exactly: the rounded square and its
/// error.
pub fn add_square(q: &mut ExactSum, x: f64, sign: i8) {
    let p = x * x;
    let e = x.mul_add(x, -p);
    if sign > 0 {
        q.add(p);
        if p.is_finite() {
            q.add(e);
        }
    } else {
        q.sub(p);
        if p.is_finite() {
            q.sub(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency): values over many magnitudes and both signs.
    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let m = (s >> 11) as f64 / (1u64 << 53) as f64;
                let e = ((s >> 3) % 80) as i32 - 40;
                let v = m * 2f64.powi(e);
                if s & 1 == 0 {
                    v
                } else {
                    -v
                }
            })
            .collect()
    }

    #[test]
    fn order_and_retraction_do_not_change_the_bits() {
        for seed in 0..200 {
            let v = values(seed, 40);
            let mut fresh = ExactSum::default();
            v[10..30].iter().for_each(|&x| fresh.add(x));
            // Slide: add everything up to 30 in another order, retract the first 10.
            let mut slid = ExactSum::default();
            v[..30].iter().rev().for_each(|&x| slid.add(x));
            v[..10].iter().for_each(|&x| slid.sub(x));
            assert_eq!(fresh.value().to_bits(), slid.value().to_bits(), "seed {seed}");
        }
    }

    #[test]
    fn correctly_rounded_against_an_integer_oracle() {
        // Values that are multiples of 2^-20 below 2^30: their exact sum fits an i128 of 2^-20 units.
        for seed in 0..200 {
            let v: Vec<f64> = values(seed, 50)
                .iter()
                .map(|x| ((x * 1048576.0).round() / 1048576.0) % 1e9)
                .collect();
            let exact: i128 = v.iter().map(|x| (x * 1048576.0) as i128).sum();
            let mut s = ExactSum::default();
            v.iter().for_each(|&x| s.add(x));
            // i128 -> f64 rounds to nearest even, then the scaling by 2^-20 is exact.
            assert_eq!(s.value(), exact as f64 / 1048576.0, "seed {seed}");
        }
        let mut s = ExactSum::default();
        for x in [1e16, 1.0, -1e16, 1e-16] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0 + 1e-16);
    }

    #[test]
    fn narrow_value_is_the_wide_rounding() {
        // Sums over few limbs (the narrow path) and over many, with halfway cases: integers around
        // 2^53 plus halves, and values near the ends of the normal range.
        let mut narrow = 0;
        let mut sums = 0;
        for seed in 0..400u64 {
            let spread = [4, 20, 60, 300][seed as usize % 4];
            let mut s = ExactSum::default();
            let v = values(seed, 30);
            let mut added = Vec::with_capacity(v.len());
            for (i, &x) in v.iter().enumerate() {
                let x = match (seed / 4) % 5 {
                    0 => x,
                    1 => x * 2f64.powi(((seed as i32 * 7 + i as i32) % spread) - spread / 2),
                    2 => 9007199254740992.0 + (i % 3) as f64 * 0.5 * x.signum(),
                    3 => x * 2f64.powi(-1000 - (i as i32 % 60)),
                    _ => x * 2f64.powi(960 - (i as i32 % 30)),
                };
                added.push(x);
                // Every fourth step retracts the value added three steps before, as a window does (a
                // retraction is always of a value the sum holds).
                if i % 4 == 3 {
                    s.sub(added[i - 3]);
                } else {
                    s.add(x);
                }
                sums += 1;
                if let Some(r) = s.narrow_value() {
                    narrow += 1;
                    assert_eq!(r.to_bits(), s.wide_value().to_bits(), "seed {seed} step {i}");
                }
                assert_eq!(
                    s.value().to_bits(),
                    s.wide_value().to_bits(),
                    "seed {seed} step {i}"
                );
            }
        }
        // Both paths are exercised.
        assert!(narrow > sums / 5 && narrow < sums, "{narrow} of {sums}");
    }

    #[test]
    fn reset_gives_a_fresh_sum() {
        let mut s = ExactSum::default();
        for x in [1e300, -3.5, f64::INFINITY, -0.0, 1e-300] {
            s.add(x);
        }
        s.reset();
        assert_eq!(s.value().to_bits(), 0.0f64.to_bits());
        s.add(-0.0);
        assert_eq!(s.value().to_bits(), (-0.0f64).to_bits());
        s.add(2.5);
        assert_eq!(s.value(), 2.5);
        assert!(s.limbs.iter().filter(|&&l| l != 0).count() <= 3);
    }

    #[test]
    fn special_and_huge_values() {
        let mut s = ExactSum::default();
        s.add(f64::INFINITY);
        assert_eq!(s.value(), f64::INFINITY);
        s.add(f64::NEG_INFINITY);
        assert!(s.value().is_nan());
        s.sub(f64::INFINITY);
        assert_eq!(s.value(), f64::NEG_INFINITY);
        s.sub(f64::NEG_INFINITY);
        assert_eq!(s.value().to_bits(), 0.0f64.to_bits());
        // A zero sum is -0.0 exactly when every value is -0.0, as in IEEE arithmetic.
        s.add(-0.0);
        assert_eq!(s.value().to_bits(), (-0.0f64).to_bits());
        s.add(1.0);
        s.sub(1.0);
        assert_eq!(s.value().to_bits(), (-0.0f64).to_bits());
        s.add(0.0);
        assert_eq!(s.value().to_bits(), 0.0f64.to_bits());
        s.sub(0.0);
        s.sub(-0.0);
        // Two values near the top of the range: no intermediate overflow, and retractable.
        s.add(f64::MAX);
        s.add(f64::MAX);
        s.add(1.0);
        s.sub(f64::MAX);
        assert_eq!(s.value(), f64::MAX);
        s.sub(f64::MAX);
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn subnormal_digits_and_parts_are_exact() {
        let tiny = f64::from_bits(3); // 3 * 2^-1074
        let mut s = ExactSum::default();
        s.add(1.0);
        s.add(tiny);
        s.sub(1.0);
        assert_eq!(s.value(), tiny);
        assert_eq!(s.parts().unwrap(), vec![tiny]);
        s.add(-2.5);
        assert_eq!(s.parts().unwrap().iter().sum::<f64>(), -2.5);
        assert_eq!(scale(1.0, -1074), f64::from_bits(1));
        assert_eq!(scale(4294967295.0, -1074), f64::from_bits(4294967295));
    }

    #[test]
    fn variance_numerator_is_exact_for_small_integers() {
        let v = [3.0, 5.0, 5.0, 11.0, -2.0];
        let (mut s, mut q) = (ExactSum::default(), ExactSum::default());
        for &x in &v {
            s.add(x);
            add_square(&mut q, x, 1);
        }
        // n*sum(x^2) - (sum x)^2 = 5*184 - 22^2 = 436
        assert_eq!(variance_numerator(5, &s, &q), 436.0);
        // A large offset that would cancel catastrophically in plain arithmetic.
        let (mut s, mut q) = (ExactSum::default(), ExactSum::default());
        for &x in &v {
            s.add(x + 1e9);
            add_square(&mut q, x + 1e9, 1);
        }
        assert_eq!(variance_numerator(5, &s, &q), 436.0);
    }
}
