//! Attack detectors. Each detector looks for named signatures in a prepared value and
//! scores what it finds; the sensitivity in force sets the score a value must reach to be a
//! detection.
//!
//! Scores follow one scale across detectors, so one threshold fits all:
//! - 9 and more: a blatant payload on its own (`' OR '1'='1`, `<script`, `; cat /etc/passwd`);
//! - 6 to 8: a strong sign that rarely appears in legitimate data;
//! - 3 to 5: a weak sign, which only counts with others or at high sensitivity.
//!
//! A value's score is the sum of the distinct signatures it shows. False positives on
//! ordinary data (Spanish text, names with apostrophes, dates, JSON, base64) are kept low by
//! requiring the syntax around a keyword, not the keyword alone.

mod cmdi;
mod sqli;
mod ssrf;
mod traversal;
mod xss;

use crate::text::Prepared;

/// An attack category, one per detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
    /// Path traversal and probing of sensitive files.
    Traversal,
    /// OS command injection (and remote code execution through lookups such as Log4Shell).
    Cmdi,
    /// Server-side request forgery.
    Ssrf,
}

impl Category {
    /// Every category, in the order they are checked and reported.
    pub const ALL: [Category; 5] = [
        Category::Sqli,
        Category::Xss,
        Category::Traversal,
        Category::Cmdi,
        Category::Ssrf,
    ];

    /// The short name used in configuration, metrics and evidence (`sqli`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sqli => "sqli",
            Category::Xss => "xss",
            Category::Traversal => "traversal",
            Category::Cmdi => "cmdi",
            Category::Ssrf => "ssrf",
        }
    }

    /// The name in Spanish, for people.
    pub fn name_es(self) -> &'static str {
        match self {
            Category::Sqli => "inyección SQL",
            Category::Xss => "cross-site scripting (XSS)",
            Category::Traversal => "recorrido de rutas (path traversal)",
            Category::Cmdi => "inyección de comandos",
            Category::Ssrf => "falsificación de solicitudes del lado del servidor (SSRF)",
        }
    }

    /// The name in English, for people.
    pub fn name_en(self) -> &'static str {
        match self {
            Category::Sqli => "SQL injection",
            Category::Xss => "cross-site scripting (XSS)",
            Category::Traversal => "path traversal",
            Category::Cmdi => "command injection",
            Category::Ssrf => "server-side request forgery (SSRF)",
        }
    }

    /// Scans a prepared value for this category's signatures.
    pub fn scan(self, value: &Prepared<'_>) -> Hits {
        let mut hits = Hits::default();
        match self {
            Category::Sqli => sqli::scan(&value.flat, &mut hits),
            Category::Xss => xss::scan(&value.flat, &mut hits),
            Category::Traversal => traversal::scan(&value.flat, &mut hits),
            Category::Cmdi => cmdi::scan(&value.norm, &mut hits),
            Category::Ssrf => ssrf::scan(&value.flat, &mut hits),
        }
        hits
    }
}

/// One signature found in a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The signature's name, stable (it appears in incidents).
    pub signature: &'static str,
    /// Its score.
    pub score: u32,
    /// Where it starts in the normalized value.
    pub at: usize,
}

/// The signatures found in one value, each once (the strongest occurrence).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    hits: Vec<Hit>,
}

impl Hits {
    /// Records a signature at `at`; a signature already found keeps its higher score.
    pub fn add(&mut self, signature: &'static str, score: u32, at: usize) {
        match self.hits.iter_mut().find(|hit| hit.signature == signature) {
            Some(hit) if hit.score >= score => {}
            Some(hit) => {
                hit.score = score;
                hit.at = at;
            }
            None => self.hits.push(Hit {
                signature,
                score,
                at,
            }),
        }
    }

    /// The value's score: the sum over its distinct signatures.
    pub fn score(&self) -> u32 {
        self.hits.iter().map(|hit| hit.score).sum()
    }

    /// The signatures, strongest first.
    pub fn sorted(&self) -> Vec<Hit> {
        let mut hits = self.hits.clone();
        hits.sort_by(|a, b| b.score.cmp(&a.score).then(a.at.cmp(&b.at)));
        hits
    }
}

/// Test helpers: the score and signature names a category gives a raw value.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Scans `value` for `category`.
    pub fn scan(category: Category, value: &str) -> (u32, Vec<&'static str>) {
        let prepared = Prepared::new(value);
        let hits = category.scan(&prepared);
        let names = hits.sorted().iter().map(|hit| hit.signature).collect();
        (hits.score(), names)
    }

    /// The score of `value` for `category`.
    pub fn score(category: Category, value: &str) -> u32 {
        scan(category, value).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_keep_each_signature_once_with_its_best_score() {
        let mut hits = Hits::default();
        hits.add("a", 3, 10);
        hits.add("b", 5, 2);
        hits.add("a", 7, 4);
        hits.add("a", 1, 0);
        assert_eq!(hits.score(), 12);
        let sorted = hits.sorted();
        assert_eq!(sorted[0].signature, "a");
        assert_eq!(sorted[0].at, 4);
        assert_eq!(sorted[1].signature, "b");
        assert_eq!(Hits::default().score(), 0);
    }
}
