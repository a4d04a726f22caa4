//! Configuration errors that say where, what, and what to write instead.

use std::fmt;

/// One problem in a configuration, located by key path (and line when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `cluster.app.algorithm` or `listener[0].bind`.
    pub key: String,
    /// 1-based line in the file, when it could be located.
    pub line: Option<usize>,
    /// What is wrong and what to write instead (lowercase, no trailing period).
    pub message: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// A configuration was refused; it lists every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// Every problem, in file order where known.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// An error about one key.
    pub fn single(file: Option<String>, problem: Problem) -> Self {
        Self {
            file,
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: ")?;
            if let Some(file) = &self.file {
                write!(f, "{file}:")?;
                if let Some(line) = p.line {
                    write!(f, "{line}:")?;
                }
                write!(f, " ")?;
            } else if let Some(line) = p.line {
                write!(f, "line {line}: ")?;
            }
            if p.key.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "`{}`: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

/// Finds the lines of key paths (`cluster.app.backends[1].weight`) in one
/// configuration text.
///
/// The text is parsed once and its line starts indexed once, so giving a
/// line to each of many problems (a file with an error at every one of
/// 10 000 backends) stays linear in the file instead of parsing it again
/// per problem.
pub(crate) struct Locator<'t> {
    text: &'t str,
    doc: Option<toml_edit::ImDocument<&'t str>>,
    /// Byte offset where each line after the first begins.
    line_starts: Vec<usize>,
}

impl<'t> Locator<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
            line_starts: text.match_indices('\n').map(|(i, _)| i + 1).collect(),
        }
    }

    /// The 1-based line of `key`, or of its closest parent found in the text.
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        let start = self.span(key)?.start.min(self.text.len());
        Some(self.line_starts.partition_point(|&s| s <= start) + 1)
    }

    fn span(&self, key: &str) -> Option<std::ops::Range<usize>> {
        use toml_edit::{Item, Table, TableLike, Value};

        enum Cursor<'a> {
            Item(&'a Item),
            Table(&'a Table),
            Value(&'a Value),
        }

        fn table_like<'a>(c: &Cursor<'a>) -> Option<&'a dyn TableLike> {
            match c {
                Cursor::Item(i) => i.as_table_like(),
                Cursor::Table(t) => Some(*t as &dyn TableLike),
                Cursor::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            }
        }

        let doc = self.doc.as_ref()?;
        let mut cursor = Cursor::Table(doc.as_table());
        let mut span: Option<std::ops::Range<usize>> = None;
        for segment in split_key(key) {
            let next = match segment {
                Segment::Key(k) => {
                    let table = table_like(&cursor)?;
                    match table.get_key_value(k) {
                        Some((key, item)) => {
                            span = key.span().or(span);
                            Some(Cursor::Item(item))
                        }
                        None => None,
                    }
                }
                Segment::Index(i) => match cursor {
                    Cursor::Item(Item::ArrayOfTables(a)) => a.get(i).map(|t| {
                        span = t.span().or(span.clone());
                        Cursor::Table(t)
                    }),
                    Cursor::Item(Item::Value(Value::Array(a))) | Cursor::Value(Value::Array(a)) => {
                        a.get(i).map(|v| {
                            span = v.span().or(span.clone());
                            Cursor::Value(v)
                        })
                    }
                    _ => None,
                },
            };
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        span
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_key(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

/// The known key closest to `unknown`, if it is a plausible typo.
pub(crate) fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(unknown, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
