//! Exact floating-point sums that can be retracted.
//!
//! A window's sum must come out with the same bits whether it was built by sliding (events entering and
//! leaving, as the training-set backfill does) or from scratch over the events in the window (as the
//! online path does at a request instant). Plain `+=`/`-=` cannot promise that: rounding depends on the
//! order of operations. So the sum is kept exact, as a list of non-overlapping partials (Shewchuk's
//! representation: the exact sum is the sum of the partials, each smaller than the next in magnitude
//! and with no bits in common), and rounded once, correctly, when read. Retracting `x` is adding `-x`,
//! which is exact too. The result is then a function of the multiset of values in the window alone.
//!
//! Values of magnitude >= 2^960 are kept apart, scaled by 2^-200 (exactly), so that no partial can
//! overflow before 2^64 such values; the two exact sums are each rounded and then added. The result is
//! still a function of the multiset (deterministic), and correctly rounded whenever no value is that
//! large. Infinities and NaNs are counted, not added: any NaN, or both infinities, give NaN.

/// |x| at or above this is accumulated in the scaled part.
const HUGE: f64 = f64::from_bits((1023 + 960) << 52); // 2^960
const DOWN: f64 = f64::from_bits((1023 - 200) << 52); // 2^-200
const UP: f64 = f64::from_bits((1023 + 200) << 52); // 2^200

/// Non-overlapping partials in increasing magnitude; their exact sum is the value.
#[derive(Debug, Clone, Default)]
struct Partials(Vec<f64>);

impl Partials {
    fn add(&mut self, mut x: f64) {
        let p = &mut self.0;
        let mut kept = 0;
        for j in 0..p.len() {
            let mut y = p[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            // Two-sum with |x| >= |y|: hi + lo == x + y exactly.
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                p[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        p.truncate(kept);
        p.push(x);
    }

    /// The exact sum rounded to nearest, ties to even.
    fn value(&self) -> f64 {
        let p = &self.0;
        let Some(&top) = p.last() else { return 0.0 };
        let mut hi = top;
        let mut lo = 0.0;
        let mut k = p.len() - 1;
        while k > 0 {
            k -= 1;
            let x = hi;
            let y = p[k];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // `hi + lo` is exact; the partials below `lo` can only matter when `lo` is exactly half an ulp
        // of `hi` and they push the same way: then round away from `hi`.
        if k > 0 && ((lo < 0.0 && p[k - 1] < 0.0) || (lo > 0.0 && p[k - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&x| x == 0.0)
    }

    fn parts(&self) -> &[f64] {
        &self.0
    }
}

/// A retractable exact sum of f64 values (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    normal: Partials,
    huge: Partials,
    pos_inf: u64,
    neg_inf: u64,
    nan: u64,
    /// Values in the sum, and how many of them are -0.0: a zero sum is -0.0 only when every value
    /// is (the IEEE result of adding them in any order), whatever entered and left before.
    n: u64,
    neg_zero: u64,
}

impl ExactSum {
    pub fn add(&mut self, x: f64) {
        self.apply(x, 1);
    }

    pub fn sub(&mut self, x: f64) {
        self.apply(x, -1);
    }

    fn apply(&mut self, x: f64, sign: i8) {
        let count = |c: &mut u64| {
            if sign > 0 {
                *c += 1
            } else {
                *c -= 1
            }
        };
        count(&mut self.n);
        if x == 0.0 && x.is_sign_negative() {
            count(&mut self.neg_zero);
        }
        if x.is_nan() {
            count(&mut self.nan);
        } else if x == f64::INFINITY {
            count(&mut self.pos_inf);
        } else if x == f64::NEG_INFINITY {
            count(&mut self.neg_inf);
        } else {
            let v = if sign > 0 { x } else { -x };
            if x.abs() >= HUGE {
                self.huge.add(v * DOWN);
            } else {
                self.normal.add(v);
            }
        }
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
        let v = if self.huge.is_empty() {
            self.normal.value()
        } else {
            self.huge.value() * UP + self.normal.value()
        };
        if v == 0.0 {
            return if self.n > 0 && self.neg_zero == self.n {
                -0.0
            } else {
                0.0
            };
        }
        v
    }

    /// The partials (normal, huge) when no special value is in the sum.
    fn finite_parts(&self) -> Option<(&[f64], &[f64])> {
        if self.nan > 0 || self.pos_inf > 0 || self.neg_inf > 0 {
            None
        } else {
            Some((self.normal.parts(), self.huge.parts()))
        }
    }
}

/// `n * q - s * s`, where `s` and `q` are exact sums of the values and of their exact squares: the
/// numerator of the variance, computed exactly from the partials (products split by fused
/// multiply-add) and rounded once. Any special value, or a huge one, gives what plain arithmetic on the
/// rounded sums gives (deterministic either way).
pub fn variance_numerator(n: u64, s: &ExactSum, q: &ExactSum) -> f64 {
    let nf = n as f64;
    let (Some((sn, sh)), Some((qn, qh))) = (s.finite_parts(), q.finite_parts()) else {
        let sv = s.value();
        return nf * q.value() - sv * sv;
    };
    if !sh.is_empty() || !qh.is_empty() || n > (1u64 << 53) {
        let sv = s.value();
        return nf * q.value() - sv * sv;
    }
    let mut acc = Partials::default();
    let mut add_product = |a: f64, b: f64| {
        let p = a * b;
        acc.add(p);
        acc.add(a.mul_add(b, -p));
    };
    for &x in qn {
        add_product(nf, x);
    }
    for &a in sn {
        for &b in sn {
            add_product(-a, b);
        }
    }
    acc.value()
}

/// Adds the square of `x` to `q` exactly (as the rounded square and its error).
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
