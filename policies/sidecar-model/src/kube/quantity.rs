//! Exact Kubernetes quantities (`resource.Quantity`).
//!
//! Written here rather than taken from a crate: the crates on crates.io either parse into
//! floats (so `0.1 + 0.2 != 0.3`, and `100m` sums drift) or drop the suffix family, which
//! Kubernetes keeps for printing (`1Gi + 8Gi` prints `9Gi`, `4 + 100m` prints `4100m`).
//! A value is stored as an integer count of nano-units (`1n`), the finest precision
//! Kubernetes keeps: finer values are rounded up, as the API server does.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// How Kubernetes prints a quantity: the suffix family of the value it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuantityFormat {
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `n`, `u`, `m`, ``, `k`, `M`, ... (powers of 1000).
    #[default]
    DecimalSI,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

/// An exact quantity, compared and summed without rounding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "invalid quantity {0:?}: expected a number with an optional suffix (100m, 0.5, 1e3, 2Ki, 1Gi)"
    )]
    Syntax(String),
    #[error("invalid quantity {0:?}: out of range")]
    OutOfRange(String),
    /// Requests and limits: the API server refuses a negative one.
    #[error("{0} must be greater than or equal to 0")]
    Negative(String),
}

impl Quantity {
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: QuantityFormat::DecimalSI,
    };

    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        parse(text)
    }

    /// A quantity of milli-units (`250` is `250m`).
    pub fn from_millis(millis: i64) -> Self {
        Quantity {
            nanos: millis as i128 * 1_000_000,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// The value in nano-units: exact.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    /// `self` as a share of `whole`, in percent, rounded down to a hundredth; `None` when
    /// `whole` is zero.
    pub fn percent_of(&self, whole: &Quantity) -> Option<f64> {
        if whole.nanos == 0 {
            return None;
        }
        // Integer division first so the printed figure never rounds up past a limit.
        let hundredths = self.nanos.checked_mul(10_000)? / whole.nanos;
        Some(hundredths as f64 / 100.0)
    }

    /// The larger of two quantities; on a tie the left one (and its format) wins.
    pub fn max(self, other: Quantity) -> Quantity {
        if other.nanos > self.nanos {
            other
        } else {
            self
        }
    }

    fn with_nanos(self, nanos: i128) -> Quantity {
        Quantity {
            nanos,
            format: self.format,
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state)
    }
}

/// Sums keep the left operand's format, as `Quantity.Add` does upstream; a zero left
/// operand takes the right one's, so `0 + 1Gi` prints `1Gi`.
impl Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        let format = if self.nanos == 0 {
            rhs.format
        } else {
            self.format
        };
        Quantity {
            nanos: self.nanos.saturating_add(rhs.nanos),
            format,
        }
    }
}

impl AddAssign for Quantity {
    fn add_assign(&mut self, rhs: Quantity) {
        *self = *self + rhs;
    }
}

impl Sub for Quantity {
    type Output = Quantity;
    fn sub(self, rhs: Quantity) -> Quantity {
        self.with_nanos(self.nanos.saturating_sub(rhs.nanos))
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::ZERO, |acc, q| acc + q)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Settings may give `cpu: 1` as a number as well as `"1"`.
        let value = serde_json::Value::deserialize(d)?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "invalid quantity {other}: expected a string such as \"100m\" or \"1Gi\""
                )));
            }
        };
        parse(&text).map_err(serde::de::Error::custom)
    }
}

fn parse(text: &str) -> Result<Quantity, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_string());
    let range = || QuantityError::OutOfRange(text.to_string());
    let number = Number::read(text).ok_or_else(syntax)?;
    let (format, base, exponent) = scale(number.suffix).ok_or_else(syntax)?;
    let exponent = exponent.map_err(|_| range())?;
    let (count, small, mantissa) = digits(number.int, number.frac).ok_or_else(range)?;
    let frac_len = number.frac.len() as i32;
    let sign = |nanos: i128| if number.negative { -nanos } else { nanos };
    if count <= 18
        && let Some(nanos) = small_nanos(small, base, exponent, frac_len)
    {
        return Ok(Quantity {
            nanos: sign(i128::from(nanos)),
            format,
        });
    }
    let nanos = nanos_of(mantissa, base, exponent, frac_len).ok_or_else(range)?;
    Ok(Quantity {
        nanos: sign(nanos),
        format,
    })
}

/// A quantity's text in its parts: `<sign><digits>.<digits><suffix>`.
struct Number<'t> {
    negative: bool,
    int: &'t str,
    frac: &'t str,
    suffix: &'t str,
}

impl<'t> Number<'t> {
    /// `<digits> | <digits>.<digits> | <digits>. | .<digits>`, signed, then the suffix;
    /// `None` when there are no digits.
    fn read(text: &'t str) -> Option<Self> {
        let (negative, unsigned) = match text.as_bytes().first()? {
            b'+' => (false, &text[1..]),
            b'-' => (true, &text[1..]),
            _ => (false, text),
        };
        let digits_end = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let int = &unsigned[..digits_end(unsigned)];
        let rest = &unsigned[int.len()..];
        let (frac, suffix) = match rest.strip_prefix('.') {
            Some(after) => after.split_at(digits_end(after)),
            None => ("", rest),
        };
        (!int.is_empty() || !frac.is_empty()).then_some(Number {
            negative,
            int,
            frac,
            suffix,
        })
    }
}

/// What a suffix means: the format Kubernetes prints with, the base and the exponent
/// (an `e` exponent too large for an i32 is an error of range). `None`: no suffix.
type Scale = (QuantityFormat, i128, Result<i32, std::num::ParseIntError>);

fn scale(suffix: &str) -> Option<Scale> {
    let (format, base, exponent) = match suffix {
        "" => (QuantityFormat::DecimalSI, 10, 0),
        "n" => (QuantityFormat::DecimalSI, 10, -9),
        "u" => (QuantityFormat::DecimalSI, 10, -6),
        "m" => (QuantityFormat::DecimalSI, 10, -3),
        "k" => (QuantityFormat::DecimalSI, 10, 3),
        "M" => (QuantityFormat::DecimalSI, 10, 6),
        "G" => (QuantityFormat::DecimalSI, 10, 9),
        "T" => (QuantityFormat::DecimalSI, 10, 12),
        "P" => (QuantityFormat::DecimalSI, 10, 15),
        "E" => (QuantityFormat::DecimalSI, 10, 18),
        "Ki" => (QuantityFormat::BinarySI, 1024, 1),
        "Mi" => (QuantityFormat::BinarySI, 1024, 2),
        "Gi" => (QuantityFormat::BinarySI, 1024, 3),
        "Ti" => (QuantityFormat::BinarySI, 1024, 4),
        "Pi" => (QuantityFormat::BinarySI, 1024, 5),
        "Ei" => (QuantityFormat::BinarySI, 1024, 6),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return Some((QuantityFormat::DecimalExponent, 10, exp.parse()));
        }
        _ => return None,
    };
    Some((format, base, Ok(exponent)))
}

/// The digits `int` then `frac` as one integer, leading zeros skipped: how many there
/// are, and the value, in a u64 while it holds 18 digits (in wasm every i128
/// multiplication is a call) and in an i128 after. `None` past 36 digits.
fn digits(int: &str, frac: &str) -> Option<(usize, u64, i128)> {
    let mut count = 0;
    let (mut small, mut mantissa) = (0u64, 0i128);
    for b in int.bytes().chain(frac.bytes()).skip_while(|&b| b == b'0') {
        count += 1;
        if count > 36 {
            return None;
        }
        let digit = u64::from(b - b'0');
        if count <= 18 {
            small = small * 10 + digit;
        } else {
            if count == 19 {
                mantissa = i128::from(small);
            }
            mantissa = mantissa * 10 + i128::from(digit);
        }
    }
    if count <= 18 {
        mantissa = i128::from(small);
    }
    Some((count, small, mantissa))
}

/// The nanos of `mantissa * 10^-frac_len * base^exponent` when they fit a u64 (`100m`,
/// `128Mi`, `2`: nearly every quantity a pod has), with 64-bit operations only: in wasm,
/// i128 multiplications and even u64 overflow checks are calls. `None` sends the value
/// to the general i128 path.
fn small_nanos(mantissa: u64, base: i128, exponent: i32, frac_len: i32) -> Option<u64> {
    let times = |value: u64, factor: u64| (value <= u64::MAX / factor).then(|| value * factor);
    let pow10 = |k: i32| (0..=19).contains(&k).then(|| 10u64.pow(k as u32));
    if base == 1024 {
        let factor = (0..=6)
            .contains(&exponent)
            .then(|| 1u64 << (10 * exponent))?;
        times(times(mantissa, factor)?, pow10(9 - frac_len)?)
    } else {
        times(mantissa, pow10(exponent.checked_add(9 - frac_len)?)?)
    }
}

/// value in nanos = mantissa * 10^(9 - frac_len) * base^exponent (decimal: 10^exponent)
fn nanos_of(mantissa: i128, base: i128, exponent: i32, frac_len: i32) -> Option<i128> {
    if base == 1024 {
        let factor = 1024i128.checked_pow(exponent as u32)?;
        scale_pow10(mantissa.checked_mul(factor)?, 9 - frac_len)
    } else {
        scale_pow10(mantissa, exponent.checked_add(9 - frac_len)?)
    }
}

/// `value * 10^exp`, rounding a fractional result up (Kubernetes rounds sub-nano values up).
fn scale_pow10(value: i128, exp: i32) -> Option<i128> {
    if value == 0 {
        return Some(0);
    }
    if exp >= 0 {
        let factor = 10i128.checked_pow(exp as u32)?;
        value.checked_mul(factor)
    } else {
        let divisor = match 10i128.checked_pow(exp.unsigned_abs()) {
            Some(d) => d,
            // More than 38 places below a nano: any positive value rounds up to 1n.
            None => return Some(1),
        };
        let q = value / divisor;
        Some(if value % divisor != 0 { q + 1 } else { q })
    }
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form: binary suffixes for whole binary multiples of at least
    /// 1Ki, otherwise the largest decimal suffix that keeps the value whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.nanos;
        if nanos == 0 {
            return f.write_str("0");
        }
        let sign = if nanos < 0 { "-" } else { "" };
        let abs = nanos.unsigned_abs();
        // u64 arithmetic whenever the value allows: u128 divisions are calls (in wasm and
        // natively alike), and the audit summaries format quantities on every request.
        match u64::try_from(abs) {
            Ok(abs) => write_canonical(f, sign, abs, self.format),
            Err(_) => write_canonical(f, sign, abs, self.format),
        }
    }
}

/// `sign` and `abs` nanos in Kubernetes' canonical form (see `Display`).
fn write_canonical<N>(
    f: &mut fmt::Formatter<'_>,
    sign: &str,
    abs: N,
    format: QuantityFormat,
) -> fmt::Result
where
    N: Copy + fmt::Display + PartialOrd + From<u32> + From<u64>,
    N: std::ops::Div<Output = N> + std::ops::Rem<Output = N>,
{
    let multiple_of = |n: N, k: u32| n % N::from(k) == N::from(0u32);
    let nanos_per_unit = N::from(NANOS_PER_UNIT as u32);
    if format == QuantityFormat::BinarySI
        && multiple_of(abs, NANOS_PER_UNIT as u32)
        && abs >= N::from(1024 * NANOS_PER_UNIT as u64)
    {
        let mut units = abs / nanos_per_unit;
        let mut power = 0;
        while multiple_of(units, 1024) && power < 6 {
            units = units / N::from(1024u32);
            power += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
        return write!(f, "{sign}{units}{suffix}");
    }

    // Decimal: value = abs * 10^-9; strip zeros in steps of three.
    let mut mantissa = abs;
    let mut exp: i32 = -9;
    while multiple_of(mantissa, 1000) && exp < 18 {
        mantissa = mantissa / N::from(1000u32);
        exp += 3;
    }
    if format == QuantityFormat::DecimalExponent {
        return if exp == 0 {
            write!(f, "{sign}{mantissa}")
        } else {
            write!(f, "{sign}{mantissa}e{exp}")
        };
    }
    let suffix = match exp {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    write!(f, "{sign}{mantissa}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_u64_path_agrees_with_the_i128_path() {
        let mantissas = [
            0,
            1,
            7,
            100,
            999_999,
            18_446_744_073,
            999_999_999_999_999_999,
        ];
        for m in mantissas {
            for (base, exponents) in [(10, -12..=21), (1024, 0..=7)] {
                for exponent in exponents {
                    for frac_len in 0..=20 {
                        if let Some(fast) = small_nanos(m, base, exponent, frac_len) {
                            assert_eq!(
                                Some(i128::from(fast)),
                                nanos_of(i128::from(m), base, exponent, frac_len),
                                "{m} {base}^{exponent} /10^{frac_len}"
                            );
                        }
                    }
                }
            }
        }
        // Too big for a u64: the general path answers.
        assert_eq!(small_nanos(999_999_999_999_999_999, 1024, 6, 0), None);
        assert_eq!(
            q("999999999Ei").nanos(),
            999_999_999 * (1i128 << 60) * 1_000_000_000
        );
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_suffix_parses_to_its_exact_value() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("1", 1_000_000_000),
            ("100m", 100_000_000),
            ("0.5", 500_000_000),
            (".5", 500_000_000),
            ("5.", 5_000_000_000),
            ("+2", 2_000_000_000),
            ("-2", -2_000_000_000),
            ("12n", 12),
            ("7u", 7_000),
            ("3k", 3_000_000_000_000),
            ("2M", 2_000_000_000_000_000),
            ("1G", 1_000_000_000_000_000_000),
            ("1T", 1_000_000_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000_000_000),
            ("5E", 5_000_000_000_000_000_000_000_000_000),
            ("2Ki", 2048 * 1_000_000_000),
            ("1Mi", 1_048_576 * 1_000_000_000),
            ("1Gi", 1_073_741_824 * 1_000_000_000),
            ("1Ti", 1_099_511_627_776 * 1_000_000_000),
            ("1Pi", 1_125_899_906_842_624 * 1_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976 * 1_000_000_000),
            ("1.5Gi", 1_610_612_736 * 1_000_000_000),
            ("1e3", 1_000_000_000_000),
            ("1E3", 1_000_000_000_000),
            ("1e-3", 1_000_000),
            ("1.5e+2", 150_000_000_000),
            ("0.1n", 1),
            ("1e-12", 1),
        ];
        for (text, nanos) in cases {
            assert_eq!(q(text).nanos(), *nanos, "{text}");
        }
    }

    #[test]
    fn long_mantissas_are_exact_up_to_36_digits() {
        // 18 digits fit the fast path, 19 and more go on in i128; leading zeros are free.
        assert_eq!(q("123456789012345678n").nanos(), 123_456_789_012_345_678);
        assert_eq!(q("1234567890123456789n").nanos(), 1_234_567_890_123_456_789);
        assert_eq!(
            q("0000000000.000000000000000000001234567890123456789012345678901234n").nanos(),
            1,
            "a fraction of a nano-unit rounds up, as Kubernetes does"
        );
        let max = "9".repeat(36);
        assert_eq!(q(&format!("{max}n")).nanos(), max.parse::<i128>().unwrap());
        assert!(matches!(
            Quantity::parse(&format!("{max}9n")),
            Err(QuantityError::OutOfRange(_))
        ));
        assert_eq!(
            q(&format!("000{max}n")).nanos(),
            max.parse::<i128>().unwrap()
        );
    }

    #[test]
    fn invalid_quantities_name_the_offending_string() {
        for bad in [
            "", "abc", "1.2.3", "1Gb", "m", "1 Gi", "--1", "1e", "1ee3", "1Ki5", ".", "1e1.5",
        ] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(matches!(
            Quantity::parse("1e40"),
            Err(QuantityError::OutOfRange(_))
        ));
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(q("0.1") + q("0.2"), q("0.3"));
        assert_eq!(q("100m") + q("100m") + q("100m"), q("300m"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("999m") < q("1"));
        assert_eq!(q("4") + q("100m"), q("4100m"));
        assert_eq!((q("3") - q("500m")).to_string(), "2500m");
        assert_eq!(q("1").max(q("1500m")), q("1.5"));
        let total: Quantity = ["1Gi", "8Gi"].iter().map(|s| q(s)).sum();
        assert_eq!(total.to_string(), "9Gi");
    }

    #[test]
    fn formats_like_kubernetes() {
        let cases = [
            ("4.1", "4100m"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1500", "1500"),
            ("15000", "15k"),
            ("0.5", "500m"),
            ("12n", "12n"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("512", "512"),
            ("0.5Gi", "512Mi"),
            ("1e3", "1e3"),
            ("1e-3", "1e-3"),
            ("5E", "5E"),
            ("-100m", "-100m"),
            ("0", "0"),
        ];
        for (input, printed) in cases {
            assert_eq!(q(input).to_string(), printed, "{input}");
        }
        // A binary value that is not whole falls back to decimal, as upstream.
        assert_eq!(q("1.5Ki").to_string(), "1536");
        assert_eq!((q("4") + q("100m")).to_string(), "4100m");
        assert_eq!((q("1Gi") + q("8Gi")).to_string(), "9Gi");
    }

    #[test]
    fn percent_of() {
        assert_eq!(q("250m").percent_of(&q("1")), Some(25.0));
        assert_eq!(q("1").percent_of(&q("3")), Some(33.33));
        assert_eq!(q("1").percent_of(&Quantity::ZERO), None);
    }

    #[test]
    fn deserializes_from_strings_and_numbers() {
        let v: Vec<Quantity> = serde_json::from_str(r#"["100m", 2, 0.5]"#).unwrap();
        assert_eq!(v, vec![q("100m"), q("2"), q("500m")]);
        assert!(serde_json::from_str::<Quantity>(r#""2Gb""#).is_err());
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }
}
