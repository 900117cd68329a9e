//! Money: amounts in integer centavos, payment methods and channels, and the tariff.
//!
//! No amount ever goes through floating point: the client's amount is read from the exact
//! JSON text it sent (see [`parse_amount`]) and every computation is on `u64` centavos.

use crate::config::Settings;

/// The only currency PPE handles.
pub const CURRENCY: &str = "BOB";

/// How the payer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Código de pago de trámite: a code paid at Banco Unión, digitally or at a desk.
    Cpt,
    /// A QR code paid from a banking app.
    Qr,
    /// A credit or debit card, through the card operator's checkout.
    Tarjeta,
}

impl Method {
    /// The name in requests and answers (`metodoPago`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Cpt => "CPT",
            Method::Qr => "QR",
            Method::Tarjeta => "TARJETA",
        }
    }

    /// Parses the `metodoPago` of a request (exact, uppercase).
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "CPT" => Some(Method::Cpt),
            "QR" => Some(Method::Qr),
            "TARJETA" => Some(Method::Tarjeta),
            _ => None,
        }
    }

    /// The metering item of this method's fee (`ppe.cpt`, `ppe.qr`, `ppe.tarjeta`).
    pub fn fee_item(self) -> &'static str {
        match self {
            Method::Cpt => "ppe.cpt",
            Method::Qr => "ppe.qr",
            Method::Tarjeta => "ppe.tarjeta",
        }
    }

    /// The metric label value (lowercase, a small fixed set).
    pub fn label(self) -> &'static str {
        match self {
            Method::Cpt => "cpt",
            Method::Qr => "qr",
            Method::Tarjeta => "tarjeta",
        }
    }
}

/// Where a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A CPT paid through a digital channel (app, internet banking).
    Digital,
    /// A CPT paid at a bank desk.
    Caja,
    /// A QR paid from a banking app.
    Qr,
    /// A card payment.
    Tarjeta,
}

impl Channel {
    /// The name in requests and answers (`canalPago`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Digital => "DIGITAL",
            Channel::Caja => "CAJA",
            Channel::Qr => "QR",
            Channel::Tarjeta => "TARJETA",
        }
    }

    /// Parses a CPT channel (`DIGITAL` or `CAJA`, exact).
    pub fn parse_cpt(text: &str) -> Option<Channel> {
        match text {
            "DIGITAL" => Some(Channel::Digital),
            "CAJA" => Some(Channel::Caja),
            _ => None,
        }
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Digital => "digital",
            Channel::Caja => "caja",
            Channel::Qr => "qr",
            Channel::Tarjeta => "tarjeta",
        }
    }

    /// The channel through which a `method` other than CPT is always paid.
    pub fn of_method(method: Method) -> Option<Channel> {
        match method {
            Method::Cpt => None,
            Method::Qr => Some(Channel::Qr),
            Method::Tarjeta => Some(Channel::Tarjeta),
        }
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// Not a JSON number or a string holding a decimal number.
    NotANumber,
    /// Written with an exponent (`1.5e2`): not accepted, to keep one spelling per amount.
    Exponent,
    /// More than two decimal places: not a whole number of centavos.
    TooManyDecimals,
    /// Zero or negative.
    NotPositive,
    /// More than 13 integer digits.
    TooLarge,
}

impl AmountError {
    /// A sentence for the problem's detail.
    pub fn describe(&self) -> &'static str {
        match self {
            AmountError::NotANumber => {
                "montoTotal must be a decimal number such as 150.50 or \"150.50\""
            }
            AmountError::Exponent => "montoTotal must be written without an exponent",
            AmountError::TooManyDecimals => {
                "montoTotal has more than two decimal places (centavos)"
            }
            AmountError::NotPositive => "montoTotal must be greater than zero",
            AmountError::TooLarge => "montoTotal has more than 13 integer digits",
        }
    }
}

/// Most integer digits an amount may have (keeps centavos far inside `u64`).
const MAX_INTEGER_DIGITS: usize = 13;

/// Reads an amount from the raw JSON text of `montoTotal` (as the client sent it): a JSON
/// number (`150`, `150.5`, `150.50`) or a string holding one (`"150.50"`), with at most two
/// decimal places. Returns centavos.
pub fn parse_amount(raw_json: &str) -> Result<u64, AmountError> {
    let raw = raw_json.trim();
    let text: String = if raw.starts_with('"') {
        // A JSON string: its content must be the decimal, with nothing around it.
        serde_json::from_str::<String>(raw).map_err(|_| AmountError::NotANumber)?
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        raw.to_string()
    } else {
        return Err(AmountError::NotANumber);
    };
    parse_decimal(&text)
}

/// Parses `-?digits(.digits)?` into centavos, with the checks of [`parse_amount`].
fn parse_decimal(text: &str) -> Result<u64, AmountError> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if unsigned.contains(['e', 'E']) {
        let mantissa_ok = unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || ".eE+-".contains(c));
        return Err(if mantissa_ok {
            AmountError::Exponent
        } else {
            AmountError::NotANumber
        });
    }
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(AmountError::NotANumber);
    }
    // One spelling per amount: no leading zeros ("007.00"), as in JSON numbers.
    if whole.len() > 1 && whole.starts_with('0') {
        return Err(AmountError::NotANumber);
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 2 {
        return Err(AmountError::TooManyDecimals);
    }
    if whole.len() > MAX_INTEGER_DIGITS {
        return Err(AmountError::TooLarge);
    }
    let mut centavos: u64 = 0;
    for byte in whole
        .bytes()
        .chain(fraction.bytes())
        .chain("00"[fraction.len()..].bytes())
    {
        centavos = centavos * 10 + u64::from(byte - b'0');
    }
    if negative || centavos == 0 {
        return Err(AmountError::NotPositive);
    }
    Ok(centavos)
}

/// Formats centavos as bolivianos with two decimals (`15000` → `"150.00"`).
pub fn format_centavos(centavos: u64) -> String {
    format!("{}.{:02}", centavos / 100, centavos % 100)
}

/// The fee of a payment of `amount` made by `method` through `channel`, in centavos.
/// `None` while it cannot be known (a CPT not yet paid: its fee depends on the channel).
pub fn fee(
    settings: &Settings,
    method: Method,
    amount: u64,
    channel: Option<Channel>,
) -> Option<u64> {
    match method {
        Method::Qr => Some(settings.qr_fee),
        Method::Tarjeta => Some(percentage_half_up(amount, settings.card_basis_points)),
        Method::Cpt => match channel? {
            Channel::Caja => Some(settings.cpt_bank_desk_fee),
            _ => Some(settings.cpt_digital_fee),
        },
    }
}

/// `amount * basis_points / 10000`, rounded half up to the centavo, in integers.
pub fn percentage_half_up(amount: u64, basis_points: u64) -> u64 {
    // amount < 10^15 and basis_points <= 10^4: the product fits in u128 trivially and in
    // u64 too, but u128 keeps this correct for any input.
    let product = u128::from(amount) * u128::from(basis_points);
    u64::try_from((product + 5_000) / 10_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_with_up_to_two_decimals_are_read_exactly() {
        assert_eq!(parse_amount("150"), Ok(15_000));
        assert_eq!(parse_amount("150.5"), Ok(15_050));
        assert_eq!(parse_amount("150.50"), Ok(15_050));
        assert_eq!(parse_amount("\"123.45\""), Ok(12_345));
        assert_eq!(parse_amount("0.01"), Ok(1));
        assert_eq!(parse_amount("\"0.10\""), Ok(10));
        // A value that f64 cannot hold exactly is still exact here.
        assert_eq!(parse_amount("9999999999999.99"), Ok(999_999_999_999_999));
        assert_eq!(parse_amount("0.29"), Ok(29));
    }

    #[test]
    fn bad_amounts_are_refused_with_their_reason() {
        assert_eq!(parse_amount("123.456"), Err(AmountError::TooManyDecimals));
        assert_eq!(
            parse_amount("\"123.456\""),
            Err(AmountError::TooManyDecimals)
        );
        // Trailing zeros still count: three decimal places are refused.
        assert_eq!(parse_amount("1.100"), Err(AmountError::TooManyDecimals));
        assert_eq!(parse_amount("-5.00"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("\"-5\""), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("0"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("0.00"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("-0"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("1e2"), Err(AmountError::Exponent));
        assert_eq!(parse_amount("1.5E+2"), Err(AmountError::Exponent));
        assert_eq!(parse_amount("\"abc\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\"\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\" 12.00\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\"12,00\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\"+12\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\"12.\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\".5\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("\"007.00\""), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("true"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("null"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("{\"a\":1}"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("[1]"), Err(AmountError::NotANumber));
        assert_eq!(
            parse_amount("12345678901234.00"),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn centavos_format_with_two_decimals() {
        assert_eq!(format_centavos(1), "0.01");
        assert_eq!(format_centavos(15_050), "150.50");
        assert_eq!(format_centavos(5_000_000), "50000.00");
    }

    #[test]
    fn card_percentage_rounds_half_up() {
        // 1.7% of Bs 150.00 = Bs 2.55 exactly.
        assert_eq!(percentage_half_up(15_000, 170), 255);
        // 1.7% of Bs 100.50 = 170.85 centavos -> 171.
        assert_eq!(percentage_half_up(10_050, 170), 171);
        // 1.7% of Bs 0.50 = 0.85 centavos -> 1; of Bs 0.29 = 0.493 -> 0.
        assert_eq!(percentage_half_up(50, 170), 1);
        assert_eq!(percentage_half_up(29, 170), 0);
        // Exactly half a centavo rounds up: 1.7% of 250 centavos = 4.25 -> 4; of 150 = 2.55 -> 3.
        assert_eq!(percentage_half_up(250, 170), 4);
        assert_eq!(percentage_half_up(150, 170), 3);
        assert_eq!(percentage_half_up(1, 5_000), 1);
        assert_eq!(percentage_half_up(1_500_000, 170), 25_500);
    }

    #[test]
    fn names_round_trip() {
        for method in [Method::Cpt, Method::Qr, Method::Tarjeta] {
            assert_eq!(Method::parse(method.as_str()), Some(method));
        }
        assert_eq!(Method::parse("qr"), None);
        assert_eq!(Method::parse("CARD"), None);
        for channel in [Channel::Digital, Channel::Caja] {
            assert_eq!(Channel::parse_cpt(channel.as_str()), Some(channel));
        }
        assert_eq!(Channel::parse_cpt("QR"), None);
    }
}
