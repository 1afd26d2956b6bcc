//! Decimal formatting of integers straight into a byte buffer, without the
//! `fmt` machinery or any allocation.

use bytes::BufMut;

/// Longest decimal rendering of an `i64` or `u64` (`-9223372036854775808`
/// and `18446744073709551615` are both 20 bytes).
pub(crate) const MAX_DIGITS: usize = 20;

/// Appends `n` in decimal.
pub(crate) fn put_u64(out: &mut impl BufMut, mut n: u64) {
    let mut digits = [0u8; MAX_DIGITS];
    let mut at = MAX_DIGITS;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// Appends `n` in decimal, with a leading `-` when negative.
pub(crate) fn put_i64(out: &mut impl BufMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, n.unsigned_abs());
}

/// Length of `n` in decimal, sign included.
pub(crate) fn i64_len(n: i64) -> usize {
    let mut len = usize::from(n < 0);
    let mut m = n.unsigned_abs();
    loop {
        len += 1;
        m /= 10;
        if m == 0 {
            return len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_display() {
        for n in [0i64, 7, -7, 10, 99, -100, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(i64_len(n), n.to_string().len());
        }
        let mut out = Vec::new();
        put_u64(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
    }
}
