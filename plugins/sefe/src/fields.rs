//! Typed reading of JSON members, each failure recorded with its JSON pointer.
//!
//! Validation never stops at the first error: every reader records what is wrong in an
//! error list and returns `None`, so a client gets every failing field in one answer.
//! `null` counts as absent, as the SIN's nullable fields are often sent explicitly.

use crate::decimal::{self, NumberError, AMOUNT_SCALE};
use crate::json::{self, Node};
use crate::problem::FieldError;
use serde_json::value::RawValue;

/// Most integer digits of an amount: up to Bs 9,999,999,999,999.99.
pub const AMOUNT_DIGITS: u32 = 13;

/// Every failure found so far.
pub type Errors = Vec<FieldError>;

/// An object being read: members are taken by name, the rest reported by [`Object::finish`].
pub struct Object<'a> {
    pointer: String,
    members: Vec<(String, &'a RawValue)>,
    taken: Vec<bool>,
}

/// A member that was present (not `null`): its pointer and value.
pub struct Member<'a> {
    /// The member's JSON pointer.
    pub pointer: String,
    /// Its value, one level deep.
    pub node: Node<'a>,
}

fn type_error(pointer: &str, expected: (&str, &str), found: &Node) -> FieldError {
    let (found_es, found_en) = found.type_name();
    FieldError::new(
        pointer,
        "type",
        format!(
            "se esperaba {}, se recibió {found_es} / expected {}, got {found_en}",
            expected.0, expected.1
        ),
    )
}

impl<'a> Object<'a> {
    /// Reads `raw` as an object located at `pointer`; anything else is recorded as a type
    /// error and gives `None`.
    pub fn read(raw: &'a RawValue, pointer: &str, errors: &mut Errors) -> Option<Self> {
        match json::node(raw) {
            Ok(Node::Object(members)) => Some(Object {
                pointer: pointer.to_string(),
                taken: vec![false; members.len()],
                members,
            }),
            Ok(other) => {
                errors.push(type_error(pointer, ("objeto", "object"), &other));
                None
            }
            Err(message) => {
                errors.push(FieldError::new(pointer, "type", message));
                None
            }
        }
    }

    /// The JSON pointer of member `name`.
    pub fn pointer_of(&self, name: &str) -> String {
        format!("{}/{}", self.pointer, json::pointer_token(name))
    }

    /// Takes member `name`: `None` if it is absent or `null`. A member that is there but
    /// cannot be looked into, or that appears more than once, is recorded and also gives
    /// `None` (a repeated member is refused whatever its copies say: a parser that keeps the
    /// first and one that keeps the last would see different invoices).
    pub fn take(&mut self, name: &str, errors: &mut Errors) -> Option<Member<'a>> {
        let index = self.members.iter().position(|(key, _)| key == name)?;
        let pointer = self.pointer_of(name);
        let mut copies = 0;
        for (taken, (key, _)) in self.taken.iter_mut().zip(&self.members) {
            if key == name {
                *taken = true;
                copies += 1;
            }
        }
        if copies > 1 {
            errors.push(FieldError::new(
                pointer,
                "duplicate-key",
                "el miembro aparece más de una vez / the member appears more than once",
            ));
            return None;
        }
        match json::node(self.members[index].1) {
            Ok(Node::Null) => None,
            Ok(node) => Some(Member { pointer, node }),
            Err(message) => {
                errors.push(FieldError::new(pointer, "type", message));
                None
            }
        }
    }

    /// Like [`Object::take`], recording `required` when the member is absent or `null`.
    pub fn require(&mut self, name: &str, errors: &mut Errors) -> Option<Member<'a>> {
        let member = self.take(name, errors);
        if member.is_none() && !errors.iter().any(|e| e.pointer == self.pointer_of(name)) {
            errors.push(FieldError::new(
                self.pointer_of(name),
                "required",
                "es obligatorio / is required",
            ));
        }
        member
    }

    /// Records the members that were not taken: repeated ones always, unknown ones unless
    /// `allow_unknown`.
    pub fn finish(self, allow_unknown: bool, errors: &mut Errors) {
        for (index, (key, _)) in self.members.iter().enumerate() {
            if self.taken[index] {
                continue;
            }
            let pointer = format!("{}/{}", self.pointer, json::pointer_token(key));
            if self.members[..index]
                .iter()
                .any(|(earlier, _)| earlier == key)
            {
                errors.push(FieldError::new(
                    pointer,
                    "duplicate-key",
                    "el miembro aparece más de una vez / the member appears more than once",
                ));
            } else if !self.taken[index] && !allow_unknown {
                errors.push(FieldError::new(
                    pointer,
                    "unknown-field",
                    "miembro desconocido / unknown member",
                ));
            }
        }
    }
}

/// How a member is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// It must be there and not `null`.
    Required,
    /// It may be absent or `null`.
    Optional,
}

fn member<'a>(
    object: &mut Object<'a>,
    name: &str,
    presence: Presence,
    errors: &mut Errors,
) -> Option<Member<'a>> {
    match presence {
        Presence::Required => object.require(name, errors),
        Presence::Optional => object.take(name, errors),
    }
}

/// A text member: a string, not blank, at most `max_chars` characters, without control
/// characters. Returns it trimmed.
pub fn text(
    object: &mut Object,
    name: &str,
    presence: Presence,
    max_chars: usize,
    errors: &mut Errors,
) -> Option<String> {
    let Member { pointer, node } = member(object, name, presence, errors)?;
    let Node::String(value) = node else {
        errors.push(type_error(&pointer, ("texto", "string"), &node));
        return None;
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        errors.push(FieldError::new(
            pointer,
            "empty",
            "no puede estar vacío / must not be blank",
        ));
        return None;
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        errors.push(FieldError::new(
            pointer,
            "length",
            format!(
                "tiene {chars} caracteres, el máximo es {max_chars} / has {chars} characters, at most {max_chars} allowed"
            ),
        ));
        return None;
    }
    if trimmed.chars().any(char::is_control) {
        errors.push(FieldError::new(
            pointer,
            "format",
            "contiene caracteres de control / contains control characters",
        ));
        return None;
    }
    Some(trimmed.to_string())
}

/// A code made of digits, given as a string or as a JSON integer (`"1020703023"` or
/// `1020703023`), with `min_len..=max_len` digits. Returns the digits.
pub fn digits(
    object: &mut Object,
    name: &str,
    presence: Presence,
    (min_len, max_len): (usize, usize),
    errors: &mut Errors,
) -> Option<String> {
    let Member { pointer, node } = member(object, name, presence, errors)?;
    let value = match node {
        Node::String(value) => value,
        Node::Number(literal) => literal.to_string(),
        other => {
            errors.push(type_error(
                &pointer,
                ("texto de dígitos", "string of digits"),
                &other,
            ));
            return None;
        }
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(FieldError::new(
            pointer,
            "format",
            "solo puede contener dígitos / must contain digits only",
        ));
        return None;
    }
    if !(min_len..=max_len).contains(&value.len()) {
        errors.push(FieldError::new(
            pointer,
            "length",
            format!(
                "debe tener de {min_len} a {max_len} dígitos, tiene {} / must have {min_len} to {max_len} digits, has {}",
                value.len(),
                value.len()
            ),
        ));
        return None;
    }
    Some(value)
}

/// An integer member written without fraction or exponent, within `min..=max`.
pub fn integer(
    object: &mut Object,
    name: &str,
    presence: Presence,
    (min, max): (i64, i64),
    errors: &mut Errors,
) -> Option<i64> {
    let Member { pointer, node } = member(object, name, presence, errors)?;
    let Node::Number(literal) = node else {
        errors.push(type_error(&pointer, ("entero", "integer"), &node));
        return None;
    };
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(FieldError::new(
            pointer,
            "type",
            format!(
                "se esperaba un entero, se recibió {literal} / expected an integer, got {literal}"
            ),
        ));
        return None;
    }
    match literal.parse::<i64>() {
        Ok(value) if (min..=max).contains(&value) => Some(value),
        _ => {
            errors.push(FieldError::new(
                pointer,
                "range",
                format!("debe estar entre {min} y {max} / must be between {min} and {max}"),
            ));
            None
        }
    }
}

/// A non-negative decimal member scaled by `10^scale`, with at most `scale` decimals and
/// `max_integer_digits` integer digits; `positive` also refuses zero.
pub fn scaled(
    object: &mut Object,
    name: &str,
    presence: Presence,
    (scale, max_integer_digits): (u32, u32),
    positive: bool,
    errors: &mut Errors,
) -> Option<i128> {
    let Member { pointer, node } = member(object, name, presence, errors)?;
    let Node::Number(literal) = node else {
        errors.push(type_error(&pointer, ("número", "number"), &node));
        return None;
    };
    let (code, detail) = match decimal::parse_scaled(literal, scale, max_integer_digits) {
        Ok(value) if positive && value == 0 => (
            "range",
            "debe ser mayor que cero / must be greater than zero".to_string(),
        ),
        Ok(value) => return Some(value),
        Err(NumberError::Negative) => (
            "range",
            "no puede ser negativo / must not be negative".to_string(),
        ),
        Err(NumberError::Decimals(places)) => (
            "decimals",
            format!("admite a lo sumo {places} decimales / at most {places} decimal places allowed"),
        ),
        Err(NumberError::TooLarge(digits)) => (
            "range",
            format!("admite a lo sumo {digits} dígitos enteros / at most {digits} integer digits allowed"),
        ),
        Err(NumberError::Exponent) => (
            "format",
            "escriba el número sin exponente (1500.00, no 1.5e3) / write the number without an exponent"
                .to_string(),
        ),
        Err(NumberError::NotANumber) => (
            "type",
            "se esperaba un número / expected a number".to_string(),
        ),
    };
    errors.push(FieldError::new(pointer, code, detail));
    None
}

/// An amount of money: a non-negative number with at most two decimals, in centavos.
pub fn amount(
    object: &mut Object,
    name: &str,
    presence: Presence,
    errors: &mut Errors,
) -> Option<i128> {
    scaled(
        object,
        name,
        presence,
        (AMOUNT_SCALE, AMOUNT_DIGITS),
        false,
        errors,
    )
}

/// An optional amount that defaults to zero: `None` only when it is there but invalid
/// (the failure is then recorded), so that checks depending on it can be skipped.
pub fn amount_or_zero(object: &mut Object, name: &str, errors: &mut Errors) -> Option<i128> {
    let before = errors.len();
    match amount(object, name, Presence::Optional, errors) {
        Some(value) => Some(value),
        None if errors.len() > before => None,
        None => Some(0),
    }
}

/// An identifier given as text (at most `max_chars`, see [`text`]) or as a JSON integer
/// (its digits), returned as text.
pub fn identifier(
    object: &mut Object,
    name: &str,
    presence: Presence,
    max_chars: usize,
    errors: &mut Errors,
) -> Option<String> {
    let pointer = object.pointer_of(name);
    let index = object.members.iter().position(|(key, _)| key == name);
    let is_number = index
        .is_some_and(|index| matches!(json::node(object.members[index].1), Ok(Node::Number(_))));
    if !is_number {
        return text(object, name, presence, max_chars, errors);
    }
    let Member { node, .. } = member(object, name, presence, errors)?;
    match node {
        Node::Number(literal) if literal.bytes().all(|b| b.is_ascii_digit()) => {
            Some(literal.to_string())
        }
        _ => {
            errors.push(FieldError::new(
                pointer,
                "format",
                "un número de documento numérico debe ser un entero sin signo / a numeric document number must be an unsigned integer",
            ));
            None
        }
    }
}

/// An array member, returning its raw items.
pub fn array<'a>(
    object: &mut Object<'a>,
    name: &str,
    presence: Presence,
    errors: &mut Errors,
) -> Option<(String, Vec<&'a RawValue>)> {
    let Member { pointer, node } = member(object, name, presence, errors)?;
    match node {
        Node::Array(items) => Some((pointer, items)),
        other => {
            errors.push(type_error(&pointer, ("arreglo", "array"), &other));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T>(document: &str, f: impl FnOnce(&mut Object, &mut Errors) -> T) -> (T, Errors) {
        let raw = json::parse_document(document.as_bytes()).unwrap();
        let mut errors = Vec::new();
        let mut object = Object::read(raw, "", &mut errors).unwrap();
        let value = f(&mut object, &mut errors);
        object.finish(false, &mut errors);
        (value, errors)
    }

    fn codes(errors: &Errors) -> Vec<(&str, &str)> {
        errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code))
            .collect()
    }

    #[test]
    fn text_members() {
        let (value, errors) = read(r#"{"a": "  x  "}"#, |o, e| {
            text(o, "a", Presence::Required, 3, e)
        });
        assert_eq!((value.as_deref(), errors.len()), (Some("x"), 0));
        let (_, errors) = read(
            r#"{"a": " ", "b": "abcd", "c": 1, "d": "x\u0007", "e": null}"#,
            |o, e| {
                for name in ["a", "b", "c", "d", "e", "f"] {
                    text(o, name, Presence::Required, 3, e);
                }
            },
        );
        assert_eq!(
            codes(&errors),
            [
                ("/a", "empty"),
                ("/b", "length"),
                ("/c", "type"),
                ("/d", "format"),
                ("/e", "required"),
                ("/f", "required")
            ]
        );
        assert_eq!(
            errors[2].detail,
            "se esperaba texto, se recibió número / expected string, got number"
        );
        // Length counts characters, not bytes.
        let (value, _) = read(r#"{"a": "ñññ"}"#, |o, e| {
            text(o, "a", Presence::Required, 3, e)
        });
        assert_eq!(value.as_deref(), Some("ñññ"));
    }

    #[test]
    fn optional_members_may_be_absent_or_null() {
        let (value, errors) = read(r#"{"a": null}"#, |o, e| {
            (
                text(o, "a", Presence::Optional, 3, e),
                integer(o, "b", Presence::Optional, (0, 9), e),
            )
        });
        assert_eq!(value, (None, None));
        assert!(errors.is_empty());
    }

    #[test]
    fn digit_codes_accept_strings_and_integers() {
        let (value, errors) = read(
            r#"{"a": "0123", "b": 4567, "c": "12a", "d": 1.5, "e": "1"}"#,
            |o, e| {
                [
                    digits(o, "a", Presence::Required, (1, 4), e),
                    digits(o, "b", Presence::Required, (1, 4), e),
                    digits(o, "c", Presence::Required, (1, 4), e),
                    digits(o, "d", Presence::Required, (1, 4), e),
                    digits(o, "e", Presence::Required, (2, 4), e),
                ]
            },
        );
        assert_eq!(value[0].as_deref(), Some("0123"));
        assert_eq!(value[1].as_deref(), Some("4567"));
        assert_eq!(
            codes(&errors),
            [("/c", "format"), ("/d", "format"), ("/e", "length")]
        );
    }

    #[test]
    fn integers_are_exact_and_bounded() {
        let (value, errors) = read(
            r#"{"a": 7, "b": 7.0, "c": 10, "d": "7", "e": -1, "f": 99999999999999999999}"#,
            |o, e| {
                [
                    integer(o, "a", Presence::Required, (0, 9), e),
                    integer(o, "b", Presence::Required, (0, 9), e),
                    integer(o, "c", Presence::Required, (0, 9), e),
                    integer(o, "d", Presence::Required, (0, 9), e),
                    integer(o, "e", Presence::Required, (0, 9), e),
                    integer(o, "f", Presence::Required, (0, 9), e),
                ]
            },
        );
        assert_eq!(value[0], Some(7));
        assert_eq!(
            codes(&errors),
            [
                ("/b", "type"),
                ("/c", "range"),
                ("/d", "type"),
                ("/e", "range"),
                ("/f", "range")
            ]
        );
    }

    #[test]
    fn amounts_are_read_in_centavos() {
        let (value, errors) = read(
            r#"{"a": 12.5, "b": 12.345, "c": -1, "d": 1e2, "e": "1.00", "f": 0}"#,
            |o, e| {
                [
                    amount(o, "a", Presence::Required, e),
                    amount(o, "b", Presence::Required, e),
                    amount(o, "c", Presence::Required, e),
                    amount(o, "d", Presence::Required, e),
                    amount(o, "e", Presence::Required, e),
                    scaled(o, "f", Presence::Required, (5, 10), true, e),
                ]
            },
        );
        assert_eq!(value[0], Some(1250));
        assert_eq!(
            codes(&errors),
            [
                ("/b", "decimals"),
                ("/c", "range"),
                ("/d", "format"),
                ("/e", "type"),
                ("/f", "range")
            ]
        );
    }

    #[test]
    fn unknown_and_repeated_members_are_reported() {
        let (_, errors) = read(r#"{"a": 1, "x/y": 2, "a": 3}"#, |o, e| {
            integer(o, "a", Presence::Required, (0, 9), e)
        });
        assert_eq!(
            codes(&errors),
            [("/a", "duplicate-key"), ("/x~1y", "unknown-field")]
        );
        // Allowed unknown members pass; duplicates never do.
        let raw = json::parse_document(br#"{"z": 1, "z": 2}"#).unwrap();
        let mut errors = Vec::new();
        let object = Object::read(raw, "/detalle/0", &mut errors).unwrap();
        object.finish(true, &mut errors);
        assert_eq!(codes(&errors), [("/detalle/0/z", "duplicate-key")]);
    }

    #[test]
    fn non_objects_and_arrays_are_type_errors() {
        let raw = json::parse_document(b"[1]").unwrap();
        let mut errors = Vec::new();
        assert!(Object::read(raw, "", &mut errors).is_none());
        assert_eq!(codes(&errors), [("", "type")]);
        let (value, errors) = read(r#"{"a": [1, 2], "b": {}}"#, |o, e| {
            (
                array(o, "a", Presence::Required, e).map(|(p, items)| (p, items.len())),
                array(o, "b", Presence::Required, e).is_some(),
            )
        });
        assert_eq!(value.0, Some(("/a".to_string(), 2)));
        assert_eq!(codes(&errors), [("/b", "type")]);
    }
}
