//! SQL injection: keywords only count in SQL syntax (a quote closing a string, a
//! comparison, a statement after `;`), so prose that mentions "select" or "or" does not.

use super::Hits;
use crate::text::{find_all, find_words, floor_boundary, is_word_byte, skip_spaces, word_at};

/// Scans a flat normalized value (lowercase, one space between words, no comments).
pub fn scan(text: &str, hits: &mut Hits) {
    union_select(text, hits);
    quote_logic(text, hits);
    numeric_tautology(text, hits);
    stacked_query(text, hits);
    functions(text, hits);
    select_from(text, hits);
}

/// Up to `len` bytes of `text` from `at`, cut at a char boundary.
fn window(text: &str, at: usize, len: usize) -> &str {
    let start = floor_boundary(text, at);
    let end = floor_boundary(text, at.saturating_add(len));
    &text[start..end]
}

/// `UNION [ALL|DISTINCT] SELECT`: the classic way to read other tables.
fn union_select(text: &str, hits: &mut Hits) {
    for at in find_words(text, "union") {
        let mut next = skip_spaces(text, at + "union".len());
        for modifier in ["all", "distinct"] {
            if word_at(text, next, modifier) {
                next = skip_spaces(text, next + modifier.len());
            }
        }
        while text.as_bytes().get(next) == Some(&b'(') {
            next = skip_spaces(text, next + 1);
        }
        if word_at(text, next, "select") {
            hits.add("union_select", 9, at);
        }
    }
}

/// Whether an expression (the start of `rest`) compares things: `1=1`, `'a'='a`, `2>1`,
/// `x like x`, `x is null`, `x between`, `x in (`.
fn has_comparison(rest: &str) -> bool {
    let expression = rest.split([';', ')']).next().unwrap_or_default();
    [
        "=",
        "<",
        ">",
        " like ",
        " is ",
        " between ",
        " in (",
        " in(",
    ]
    .iter()
    .any(|operator| crate::text::contains(expression, operator))
}

/// Whether the expression starts with a constant that is true by itself (`1`, `true`, `not 0`).
fn truthy_operand(rest: &str) -> Option<usize> {
    let rest_bytes = rest.as_bytes();
    let digits = rest_bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0
        && rest_bytes
            .get(digits)
            .is_none_or(|b| !b.is_ascii_alphabetic())
    {
        return Some(digits);
    }
    ["true", "not "]
        .iter()
        .find(|word| rest.starts_with(**word))
        .map(|word| word.len())
}

/// Whether `rest` starts with a comment that cuts the rest of the query off.
fn starts_comment(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.starts_with("--") || rest.starts_with('#') || rest.starts_with("/*")
}

/// Whether `rest` is where a statement ends: nothing more, a comment, `;` or `)`.
fn ends_statement(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.is_empty()
        || rest.starts_with("--")
        || rest.starts_with('#')
        || rest.starts_with(';')
        || rest.starts_with(')')
        || rest.starts_with("/*")
}

/// A quote that closes a string and then SQL logic or a comment: `' OR '1'='1`,
/// `" or 1=1 --`, `admin'--`, `1') or true#`.
fn quote_logic(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        if byte != b'\'' && byte != b'"' && byte != b'`' {
            continue;
        }
        let mut next = at + 1;
        while bytes.get(next).is_some_and(|&b| b == b')' || b == b' ') {
            next += 1;
        }
        let after_quote = &text[floor_boundary(text, at + 1)..];
        // `'--`, `');--`, `'#` end the statement so the rest of the query is ignored.
        let terminator = after_quote.trim_start_matches(')');
        let terminator = terminator.strip_prefix(';').unwrap_or(terminator);
        // `#` only at the end: `'a' #1 seller` is prose.
        let hash_comment = terminator.starts_with('#') && terminator[1..].trim().is_empty();
        if terminator.starts_with("--") || terminator.starts_with("/*") || hash_comment {
            hits.add("comment_terminator", 6, at);
        }
        let (operator_len, strong) = if word_at(text, next, "or") {
            (2, true)
        } else if word_at(text, next, "and") {
            (3, false)
        } else if text[floor_boundary(text, next)..].starts_with("||") {
            (2, true)
        } else if text[floor_boundary(text, next)..].starts_with("&&") {
            (2, false)
        } else {
            continue;
        };
        let operand_at = skip_spaces(text, next + operator_len);
        let rest = window(text, operand_at, 40);
        if has_comparison(rest) {
            hits.add("tautology", if strong { 9 } else { 7 }, at);
        } else if let Some(len) = truthy_operand(rest) {
            if ends_statement(&rest[len..]) {
                hits.add("tautology", if strong { 9 } else { 6 }, at);
            } else {
                hits.add("quote_boolean", 3, at);
            }
        } else {
            hits.add("quote_boolean", 3, at);
        }
    }
}

/// `1 OR 1=1` without quotes (numeric parameters).
fn numeric_tautology(text: &str, hits: &mut Hits) {
    for word in ["or", "and"] {
        for at in find_words(text, word) {
            let before = text[..at].trim_end();
            if !before.as_bytes().last().is_some_and(u8::is_ascii_digit) {
                continue;
            }
            let operand_at = skip_spaces(text, at + word.len());
            let rest = window(text, operand_at, 24);
            let left = rest.bytes().take_while(u8::is_ascii_digit).count();
            if left == 0 {
                continue;
            }
            let after = rest[left..].trim_start();
            let comparison = ["=", "<>", "!=", ">", "<"]
                .iter()
                .find(|operator| after.starts_with(**operator));
            if let Some(operator) = comparison {
                let right = after[operator.len()..].trim_start();
                if right.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    hits.add("numeric_tautology", 6, at);
                }
            } else if starts_comment(&rest[left..]) {
                // `1 or 1--`: a constant that is true on its own, the rest cut off. Without
                // the comment it is prose ("floor 2 or 3").
                hits.add("numeric_tautology", 5, at);
            }
        }
    }
}

/// A second statement after `;`: `; DROP TABLE x`, `; exec xp_cmdshell`. The keyword needs
/// its companion (`DELETE FROM`, `INSERT INTO`, `UPDATE x SET`) to count fully, since a
/// list separated by `;` can hold an English word.
fn stacked_query(text: &str, hits: &mut Hits) {
    const STATEMENTS: &[(&str, &[&str], u32)] = &[
        (
            "drop",
            &["table", "database", "schema", "user", "view", "index"],
            9,
        ),
        ("truncate", &["table"], 9),
        ("alter", &["table", "user", "database"], 8),
        ("delete", &["from"], 8),
        ("insert", &["into"], 8),
        ("update", &[" set "], 8),
        ("select", &[" from ", "@@", "("], 8),
        ("exec", &["xp_", "sp_", "master", "("], 8),
        ("execute", &["xp_", "sp_", "immediate", "("], 8),
        ("declare", &["@"], 8),
        (
            "create",
            &["table", "user", "function", "procedure", "trigger"],
            8,
        ),
        ("grant", &[" to "], 7),
        ("shutdown", &[""], 8),
    ];
    for at in find_all(text, ";") {
        let start = skip_spaces(text, at + 1);
        for (keyword, companions, score) in STATEMENTS {
            if !word_at(text, start, keyword) {
                continue;
            }
            let rest = window(text, start + keyword.len(), 48);
            let companion = companions.iter().any(|companion| {
                if companion.is_empty() {
                    ends_statement(rest)
                } else {
                    crate::text::contains(rest, companion)
                }
            });
            if companion {
                hits.add("stacked_query", *score, at);
            } else {
                hits.add("stacked_keyword", 3, at);
            }
        }
    }
    for at in find_words(text, "drop") {
        let next = skip_spaces(text, at + 4);
        if ["table", "database", "schema"]
            .iter()
            .any(|object| word_at(text, next, object))
        {
            hits.add("drop_statement", 6, at);
        }
    }
}

/// SQL functions and objects that only an attack puts in a parameter.
fn functions(text: &str, hits: &mut Hits) {
    const SIGNATURES: &[(&str, &str, u32)] = &[
        ("sleep(", "time_delay", 7),
        ("pg_sleep(", "time_delay", 7),
        ("benchmark(", "time_delay", 7),
        ("waitfor delay", "time_delay", 8),
        ("waitfor time", "time_delay", 8),
        ("dbms_lock.sleep", "time_delay", 8),
        ("dbms_pipe.receive_message", "time_delay", 8),
        ("information_schema", "schema_probe", 7),
        ("sqlite_master", "schema_probe", 7),
        ("pg_catalog", "schema_probe", 7),
        ("mysql.user", "schema_probe", 7),
        ("sysobjects", "schema_probe", 7),
        ("syscolumns", "schema_probe", 7),
        ("pg_shadow", "schema_probe", 7),
        ("all_tab_columns", "schema_probe", 7),
        ("@@version", "schema_probe", 7),
        ("load_file(", "file_access", 9),
        ("into outfile", "file_access", 9),
        ("into dumpfile", "file_access", 9),
        ("pg_read_file(", "file_access", 9),
        ("xp_cmdshell", "file_access", 9),
        ("utl_http", "file_access", 8),
        ("extractvalue(", "error_based", 7),
        ("updatexml(", "error_based", 7),
        ("floor(rand(", "error_based", 7),
        ("exp(~(", "error_based", 7),
        ("group_concat(", "string_building", 6),
        ("concat_ws(", "string_building", 3),
        ("concat(", "string_building", 3),
        ("char(", "string_building", 3),
        ("chr(", "string_building", 3),
    ];
    let bytes = text.as_bytes();
    for (needle, signature, score) in SIGNATURES {
        for at in find_all(text, needle) {
            // Only as a whole name: `reconcat(`, `asleep(` are someone else's words.
            if at > 0 && is_word_byte(bytes[at - 1]) && bytes[at - 1] != b'@' {
                continue;
            }
            if matches!(*needle, "char(" | "chr(") {
                // `char(` counts with a numeric code: `CHAR(65)`.
                let code = bytes.get(at + needle.len());
                if !code.is_some_and(u8::is_ascii_digit) {
                    continue;
                }
            }
            hits.add(signature, *score, at);
            break;
        }
    }
    // Long hexadecimal literals encode strings without quotes: 0x61646d696e.
    for at in find_all(text, "0x") {
        let digits = bytes[at + 2..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits >= 8 && (at == 0 || !is_word_byte(bytes[at - 1])) {
            hits.add("hex_literal", 3, at);
            break;
        }
    }
}

/// `SELECT ... FROM` with no other sign: a query in a parameter, weak on its own because
/// English prose can say "select one from the list".
fn select_from(text: &str, hits: &mut Hits) {
    for at in find_words(text, "select") {
        let rest = window(text, at + 6, 80);
        if find_words(rest, "from").next().is_some() {
            hits.add("select_from", 4, at);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::testing::{scan, score};
    use crate::detect::Category::Sqli;

    #[test]
    fn blatant_payloads_score_high() {
        for payload in [
            "' OR '1'='1",
            "' or 1=1--",
            "admin' OR 1=1 #",
            "\" or \"\"=\"",
            "1' UNION SELECT username, password FROM users--",
            "-1 UNION ALL SELECT NULL,NULL,@@version",
            "x'/**/UNION/**/SELECT/**/1,2,3",
            "1'/*!50000UNION*/ SELECT 1",
            "1; DROP TABLE usuarios",
            "1'; exec xp_cmdshell 'dir'--",
            "') or true--",
            "1' AND SLEEP(5)--",
            "1' and extractvalue(1,concat(0x7e,(select @@version)))--",
            "' OR 'a' LIKE 'a",
            "1' || '1'='1",
        ] {
            assert!(
                score(Sqli, payload) >= 9,
                "{payload}: {:?}",
                scan(Sqli, payload)
            );
        }
    }

    #[test]
    fn signatures_are_named() {
        let (_, names) = scan(Sqli, "1' UNION SELECT password FROM usuarios--");
        assert_eq!(names, vec!["union_select", "select_from"]);
        assert_eq!(scan(Sqli, "admin')--").1, vec!["comment_terminator"]);
        let (_, names) = scan(Sqli, "' or 'x'='x");
        assert_eq!(names, vec!["tautology"]);
        let (_, names) = scan(Sqli, "1 OR 1=1");
        assert_eq!(names, vec!["numeric_tautology"]);
        let (_, names) = scan(Sqli, "x; delete from pagos");
        assert_eq!(names, vec!["stacked_query"]);
        let (_, names) = scan(Sqli, "1' and benchmark(5000000,md5(1))");
        assert!(names.contains(&"time_delay"));
        let (_, names) = scan(
            Sqli,
            "1 and 1=2 union select table_name from information_schema.tables",
        );
        assert!(names.contains(&"schema_probe") && names.contains(&"union_select"));
    }

    #[test]
    fn middle_scores_for_strong_but_lone_signs() {
        assert_eq!(score(Sqli, "1 OR 1=1"), 6);
        assert_eq!(score(Sqli, "admin'--"), 6);
        assert_eq!(score(Sqli, "' and 1=1"), 7);
        assert_eq!(score(Sqli, "sleep(10)"), 7);
        assert_eq!(score(Sqli, "select nombre from personas"), 4);
        assert_eq!(score(Sqli, "concat(a,b)"), 3);
        assert_eq!(score(Sqli, "1 or 1--"), 5);
    }

    #[test]
    fn ordinary_text_scores_low() {
        for text in [
            "O'Brien",
            "Patrick O'Brien and Mary O'Neil",
            "D'Alessandro, Juan Carlos",
            "Calle 21 de Calacoto #1234, La Paz",
            "2024-01-15T10:30:00-04:00",
            "15/01/2024",
            "Solicito la unión de expedientes; seleccione una opción o la otra",
            "Pago de la deuda 5323-7998-3145 por QR; monto Bs 150.00",
            "El 'trámite' o la 'solicitud' deben estar firmados",
            "He said 'yes' and left",
            "Choose 'red' or 'blue'",
            "Estado: pendiente; update required",
            "nombre; apellido; id; fecha",
            "rock 'n' roll",
            "SELECT your favourite option",
            "Juan \"el Grande\" Pérez",
            "100% garantizado -- oferta",
            "dGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IG9yIGlzIGl0Pw==",
            "https://ws.agetic.gob.bo/segip/v2/personas?ci=1234567&complemento=1A",
            "SELECT nombre FROM la lista",
            "Piso 2 or 3",
        ] {
            assert!(score(Sqli, text) < 6, "{text}: {:?}", scan(Sqli, text));
        }
        // Most of it scores nothing at all.
        assert_eq!(score(Sqli, "O'Brien"), 0);
        assert_eq!(score(Sqli, "2024-01-15T10:30:00-04:00"), 0);
        assert_eq!(score(Sqli, "nombre; apellido; id; fecha"), 0);
    }
}
