//! Configuration errors: every error names its TOML key and, where the key is in the
//! file, its line and column. Validation collects all of them before reporting.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Value};

/// A position in the configuration tree, such as `upstream.servers[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// The path without its last segment, and that segment when it is a key.
    fn split_last_key(&self) -> (KeyPath, Option<&str>) {
        match self.0.split_last() {
            Some((Seg::Key(k), rest)) => (KeyPath(rest.to_vec()), Some(k.as_str())),
            _ => (self.clone(), None),
        }
    }

    /// Converts a path reported by `serde_ignored` (for unknown keys).
    pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        use serde_ignored::Path as P;
        match path {
            P::Root => KeyPath::root(),
            P::Seq { parent, index } => KeyPath::from_ignored(parent).index(*index),
            P::Map { parent, key } => KeyPath::from_ignored(parent).key(key),
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                KeyPath::from_ignored(parent)
            }
        }
    }

    /// Dotted form of the section this path is in, with indices dropped: `ws.auth`.
    pub(crate) fn section(&self) -> String {
        let keys: Vec<&str> = self
            .0
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(k.as_str()),
                Seg::Index(_) => None,
            })
            .collect();
        keys.join(".")
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) if first => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            write!(f, "(top level)")?;
        }
        Ok(())
    }
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key the problem is about.
    pub key: String,
    /// 1-based line and column of the key in the file, when it appears there.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(
                f,
                "line {line}, column {col}: {}: {}",
                self.key, self.message
            ),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// All the problems found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} error{} in the configuration",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {}: {e}", self.file)?;
        }
        Ok(())
    }
}

/// Collects errors during validation, locating each key in the source text.
pub struct Errors {
    text: String,
    doc: Option<ImDocument<String>>,
    list: Vec<ConfigError>,
}

impl Errors {
    pub fn new(text: &str) -> Self {
        Errors {
            text: text.to_string(),
            doc: ImDocument::parse(text.to_string()).ok(),
            list: Vec::new(),
        }
    }

    /// Records that the value at `path` is wrong.
    pub fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        let position = self
            .locate(path)
            .map(|span| line_col(&self.text, span.start));
        self.list.push(ConfigError {
            key: path.to_string(),
            position,
            message: message.into(),
        });
    }

    /// Records an error that the TOML parser or serde reported with a byte span.
    pub fn add_at(&mut self, key: String, span: Option<Range<usize>>, message: impl Into<String>) {
        self.list.push(ConfigError {
            key,
            position: span.map(|s| line_col(&self.text, s.start)),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_result<T>(self, file: &str, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.into_errors(file))
        }
    }

    /// The errors so far, in file order (keys not in the file last).
    pub fn into_errors(self, file: &str) -> ConfigErrors {
        let mut errors = self.list;
        errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        ConfigErrors {
            file: file.to_string(),
            errors,
        }
    }

    /// The byte span of the deepest part of `path` found in the document: the key itself
    /// when the path ends in a key, else the value.
    fn locate(&self, path: &KeyPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let (parent, last) = path.split_last_key();
        let mut item: Node<'_> = Node::Item(doc.as_item());
        let mut span = None;
        for seg in &parent.0 {
            item = match (seg, item) {
                (Seg::Key(k), node) => {
                    let (key, next) = node.table_like()?.get_key_value(k)?;
                    span = key.span().or(span);
                    Node::Item(next)
                }
                (Seg::Index(i), Node::Item(Item::ArrayOfTables(a))) => {
                    let t = a.get(*i)?;
                    span = t.span().or(span);
                    Node::Table(t)
                }
                (Seg::Index(i), node) => {
                    let v = node.array()?.get(*i)?;
                    span = v.span().or(span);
                    Node::Value(v)
                }
            };
        }
        if let Some(k) = last {
            if let Some((key, _)) = item.table_like().and_then(|t| t.get_key_value(k)) {
                return key.span().or(span);
            }
        }
        span.or_else(|| item.span())
    }
}

/// A node of the document while walking a path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(Value::InlineTable(t)) => Some(t),
            Node::Value(_) => None,
        }
    }

    fn array(self) -> Option<&'a toml_edit::Array> {
        match self {
            Node::Item(i) => i.as_array(),
            Node::Value(v) => v.as_array(),
            Node::Table(_) => None,
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The valid key closest to `unknown`, when one is close enough to be a likely typo.
pub fn suggest<'a>(unknown: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::jaro_winkler(unknown, v), *v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_in_tables_arrays_and_inline_tables() {
        let text = "[server]\nlisten = [\"a\", \"b\"]\n\n[upstream]\nhealth_check = { path = \"/x\", interval = \"5s\" }\n";
        let mut errs = Errors::new(text);
        errs.add(&KeyPath::root().key("server").key("listen").index(1), "bad");
        errs.add(
            &KeyPath::root()
                .key("upstream")
                .key("health_check")
                .key("interval"),
            "bad",
        );
        errs.add(
            &KeyPath::root().key("admin").key("listen"),
            "missing section",
        );
        let e = errs.into_result("f", ()).unwrap_err();
        assert_eq!(e.errors[0].position, Some((2, 16)));
        assert_eq!(e.errors[0].key, "server.listen[1]");
        assert_eq!(e.errors[1].position, Some((5, 31)));
        assert_eq!(e.errors[2].position, None);
    }

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("lisen", &["listen", "threads"]), Some("listen"));
        assert_eq!(suggest("zzz", &["listen", "threads"]), None);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
