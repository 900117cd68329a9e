//! Exact decimal arithmetic for amounts, quantities and exchange rates.
//!
//! Invoice arithmetic must agree with the tax authority to the centavo, so no value ever
//! goes through `f64`: JSON number literals are read from their text into integers scaled
//! by a fixed power of ten (centavos for amounts, 10^-5 for quantities and rates), and
//! products and quotients are computed in `i128` and rounded half up (away from zero),
//! the rounding the SIN's rules use.

use std::fmt;

/// Decimal places of an amount (centavos).
pub const AMOUNT_SCALE: u32 = 2;
/// Decimal places of a quantity and of an exchange rate, as the SIN accepts them.
pub const QUANTITY_SCALE: u32 = 5;

/// Why a number literal cannot be read as a fixed-point value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// The literal uses an exponent (`1e3`); amounts must be written in plain notation.
    Exponent,
    /// The value is negative where it may not be.
    Negative,
    /// More decimal places than the scale allows (the number of places allowed).
    Decimals(u32),
    /// More integer digits than allowed (the number of digits allowed).
    TooLarge(u32),
    /// Not a number literal at all.
    NotANumber,
}

/// Reads a non-negative JSON number literal as an integer scaled by `10^scale`.
///
/// Trailing zeros of the fraction do not count as decimal places (`10.500` is `10.50`);
/// `max_integer_digits` bounds the integer part so that later products cannot overflow.
pub fn parse_scaled(
    literal: &str,
    scale: u32,
    max_integer_digits: u32,
) -> Result<i128, NumberError> {
    let text = literal.trim();
    if text.contains(['e', 'E']) {
        return Err(NumberError::Exponent);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, fraction),
        None => (unsigned, ""),
    };
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if integer.is_empty() || !all_digits(integer) || !all_digits(fraction) {
        return Err(NumberError::NotANumber);
    }
    let fraction = fraction.trim_end_matches('0');
    let integer = integer.trim_start_matches('0');
    if negative && !(integer.is_empty() && fraction.is_empty()) {
        return Err(NumberError::Negative);
    }
    if fraction.len() > scale as usize {
        return Err(NumberError::Decimals(scale));
    }
    if integer.len() > max_integer_digits as usize {
        return Err(NumberError::TooLarge(max_integer_digits));
    }
    // At most 38 significant digits fit in i128; the bounds above keep far below that.
    let mut value: i128 = 0;
    for digit in integer.bytes().chain(fraction.bytes()) {
        value = value * 10 + i128::from(digit - b'0');
    }
    for _ in fraction.len()..scale as usize {
        value *= 10;
    }
    Ok(value)
}

/// `numerator / denominator` rounded half up, for non-negative operands and a positive
/// denominator (a zero denominator gives 0 rather than a trap).
pub fn div_round_half_up(numerator: i128, denominator: i128) -> i128 {
    if denominator <= 0 {
        return 0;
    }
    (2 * numerator + denominator) / (2 * denominator)
}

/// `10^exponent` as an `i128`.
pub fn pow10(exponent: u32) -> i128 {
    10i128.pow(exponent)
}

/// An amount of money in centavos, always shown with exactly two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(pub i128);

impl Money {
    /// The amount as a JSON number with exactly two decimals (`113.00`).
    pub fn to_json(self) -> Box<serde_json::value::RawValue> {
        // The text is always a valid JSON number, so this never fails; fall back to the
        // string form rather than trap if it ever did.
        serde_json::value::RawValue::from_string(self.to_string()).unwrap_or_else(|_| {
            serde_json::value::to_raw_value(&self.to_string()).unwrap_or_default()
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", magnitude / 100, magnitude % 100)
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// Shows a value scaled by `10^scale` in plain decimal notation, without trailing zeros
/// beyond the first decimal place (`150000` at scale 5 is `1.5`).
pub fn format_scaled(value: i128, scale: u32) -> String {
    let unit = pow10(scale).unsigned_abs();
    let magnitude = value.unsigned_abs();
    let sign = if value < 0 { "-" } else { "" };
    let fraction = format!("{:0width$}", magnitude % unit, width = scale as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{sign}{}", magnitude / unit)
    } else {
        format!("{sign}{}.{fraction}", magnitude / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_read_exactly() {
        assert_eq!(parse_scaled("0", 2, 13), Ok(0));
        assert_eq!(parse_scaled("12.3", 2, 13), Ok(1230));
        assert_eq!(parse_scaled("12.34", 2, 13), Ok(1234));
        assert_eq!(parse_scaled("10.500", 2, 13), Ok(1050));
        assert_eq!(parse_scaled("0.1", 2, 13), Ok(10));
        assert_eq!(parse_scaled("-0.00", 2, 13), Ok(0));
        assert_eq!(parse_scaled("1.00001", 5, 10), Ok(100_001));
        // A value f64 cannot hold exactly stays exact.
        assert_eq!(
            parse_scaled("9999999999999.99", 2, 13),
            Ok(999_999_999_999_999)
        );
    }

    #[test]
    fn bad_literals_are_refused_with_the_reason() {
        assert_eq!(parse_scaled("12.345", 2, 13), Err(NumberError::Decimals(2)));
        assert_eq!(parse_scaled("-1", 2, 13), Err(NumberError::Negative));
        assert_eq!(parse_scaled("-0.01", 2, 13), Err(NumberError::Negative));
        assert_eq!(parse_scaled("1e3", 2, 13), Err(NumberError::Exponent));
        assert_eq!(parse_scaled("1E-2", 2, 13), Err(NumberError::Exponent));
        assert_eq!(
            parse_scaled("10000000000000", 2, 13),
            Err(NumberError::TooLarge(13))
        );
        assert_eq!(parse_scaled("\"1\"", 2, 13), Err(NumberError::NotANumber));
        assert_eq!(parse_scaled(".5", 2, 13), Err(NumberError::NotANumber));
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(div_round_half_up(5, 10), 1);
        assert_eq!(div_round_half_up(4, 10), 0);
        assert_eq!(div_round_half_up(15, 10), 2);
        assert_eq!(div_round_half_up(14_999, 1000), 15);
        assert_eq!(div_round_half_up(14_499, 1000), 14);
        assert_eq!(div_round_half_up(7, 0), 0);
    }

    #[test]
    fn money_shows_two_decimals() {
        assert_eq!(Money(11300).to_string(), "113.00");
        assert_eq!(Money(5).to_string(), "0.05");
        assert_eq!(Money(-150).to_string(), "-1.50");
        assert_eq!(Money(1469).to_json().get(), "14.69");
        let json = serde_json::to_string(&serde_json::json!({ "a": 1 })).unwrap();
        assert_eq!(json, r#"{"a":1}"#);
        #[derive(serde::Serialize)]
        struct Wrapper {
            monto: Money,
        }
        assert_eq!(
            serde_json::to_string(&Wrapper { monto: Money(100) }).unwrap(),
            r#"{"monto":1.00}"#
        );
    }

    #[test]
    fn scaled_values_show_without_trailing_zeros() {
        assert_eq!(format_scaled(150_000, 5), "1.5");
        assert_eq!(format_scaled(200_000, 5), "2");
        assert_eq!(format_scaled(696_000, 5), "6.96");
        assert_eq!(format_scaled(1, 5), "0.00001");
    }
}
