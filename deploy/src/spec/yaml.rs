//! Reading a YAML file for a spec: syntax errors at file:line:column, `--set` words applied
//! on top, and typed decoding whose errors point at the field (its line and column in the
//! file, or the `--set` word that put it there) with a "did you mean" for misspelt keys.
//!
//! The file is parsed once into a tree that remembers where each node came from; the tree
//! becomes a `serde_json::Value` for serde, and error paths are looked up in the tree.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::Error;

/// A parsed spec file with its `--set` words applied.
#[derive(Debug)]
pub struct Document {
    pub file: PathBuf,
    pub value: Value,
    positions: Node,
    /// Dotted paths set on the command line, with the word that set each.
    sets: Vec<(String, String)>,
}

/// A node of the parsed file with its position (1-based line and column).
#[derive(Debug, Clone)]
enum Node {
    Map(Pos, Vec<(String, Pos, Node)>),
    Seq(Pos, Vec<Node>),
    Scalar(Pos),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos { line: m.line(), column: m.col() + 1 }
    }
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Node::Map(p, _) | Node::Seq(p, _) | Node::Scalar(p) => *p,
        }
    }
}

/// `--set private_network_connection true` (a word, then a bare value, as az's own flags take
/// them) is refused with the word it was meant to be.
fn bare_value_hint(sets: &[String]) -> Result<(), Error> {
    for pair in sets.windows(2) {
        let (word, next) = (&pair[0], &pair[1]);
        if !word.contains('=') && !next.contains('=') {
            return Err(Error::Parse(format!(
                "--set {word} {next}: expected KEY=VALUE; did you mean `{word}={next}`?"
            )));
        }
    }
    Ok(())
}

impl Document {
    /// Reads and parses `file`; `sets` are `--set` words (`a.b=value`), applied in order.
    pub fn load(file: &Path, sets: &[String]) -> Result<Document, Error> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::Parse(format!("{}: cannot read: {e}", file.display())))?;
        Document::parse(file, &text, sets)
    }

    /// An empty document (no file) that `--set` words alone fill.
    pub fn from_sets(sets: &[String]) -> Result<Document, Error> {
        Document::parse(Path::new("--set"), "{}", sets)
    }

    /// A spec as it stands (say, the current one from the daemon) with `--set` words on top.
    pub fn from_value(value: Value, sets: &[String]) -> Result<Document, Error> {
        let mut doc = Document::from_sets(&[])?;
        doc.value = value;
        bare_value_hint(sets)?;
        for word in sets {
            doc.apply_set(word)?;
        }
        Ok(doc)
    }

    pub fn parse(file: &Path, text: &str, sets: &[String]) -> Result<Document, Error> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser.load(&mut builder, false).map_err(|e| {
            let pos = Pos::from(*e.marker());
            Error::Parse(format!("{}:{}:{}: YAML syntax: {}", file.display(), pos.line, pos.column, e.info()))
        })?;
        if let Some(message) = builder.error {
            return Err(Error::Parse(format!("{}: {message}", file.display())));
        }
        let (value, positions) = match builder.stack.pop() {
            Some((v, n)) => (v, n),
            None => (Value::Object(Map::new()), Node::Map(Pos { line: 1, column: 1 }, Vec::new())),
        };
        let value = match value {
            Value::Null => Value::Object(Map::new()),
            v @ Value::Object(_) => v,
            _ => {
                return Err(Error::Parse(format!(
                    "{}:1:1: expected a mapping of fields at the top",
                    file.display()
                )));
            }
        };
        let mut doc = Document { file: file.to_path_buf(), value, positions, sets: Vec::new() };
        bare_value_hint(sets)?;
        for word in sets {
            doc.apply_set(word)?;
        }
        Ok(doc)
    }

    /// One `--set` word: a dotted path, `=`, and a YAML scalar.
    fn apply_set(&mut self, word: &str) -> Result<(), Error> {
        let Some((path, raw)) = word.split_once('=') else {
            return Err(Error::Parse(format!(
                "--set {word}: expected KEY=VALUE, e.g. environment.image=repo/img:v1"
            )));
        };
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(Error::Parse(format!("--set {word}: {path:?} is not a dotted field path")));
        }
        let value = scalar(raw);
        let mut node = &mut self.value;
        for (i, key) in keys.iter().enumerate() {
            let Value::Object(map) = node else {
                let parent = keys[..i].join(".");
                return Err(Error::Parse(format!("--set {word}: {parent} is not a mapping")));
            };
            if i + 1 == keys.len() {
                map.insert(key.to_string(), value);
                break;
            }
            node = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
        }
        self.sets.push((path.to_string(), word.to_string()));
        Ok(())
    }

    /// Was this field (or a field above it) set with `--set`? Returns the word.
    fn set_word(&self, path: &str) -> Option<&str> {
        self.sets
            .iter()
            .rev()
            .find(|(set, _)| {
                path == set || path.starts_with(&format!("{set}.")) || set.starts_with(&format!("{path}."))
            })
            .map(|(_, word)| word.as_str())
    }

    /// Decodes into `T`; an error names the field and where it came from.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_path_to_error::deserialize(self.value.clone()).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = e.inner().to_string();
            // An unknown key is best shown at the key, anything else at its value.
            let at = if message.starts_with("unknown field") { Point::Key } else { Point::Value };
            Error::Parse(self.locate_at(&path, &with_suggestion(&message), at))
        })
    }

    /// `file:line:column: field `path`: message`, or `--set word: message`.
    pub fn locate(&self, path: &str, message: &str) -> String {
        self.locate_at(path, message, Point::Value)
    }

    fn locate_at(&self, path: &str, message: &str, at: Point) -> String {
        if let Some(word) = self.set_word(path) {
            return format!("--set {word}: {message}");
        }
        let pos = self.position(path, at);
        if path.is_empty() {
            format!("{}:{}:{}: {message}", self.file.display(), pos.line, pos.column)
        } else {
            format!("{}:{}:{}: field `{path}`: {message}", self.file.display(), pos.line, pos.column)
        }
    }

    /// Where the field at a dotted path (`a.b[0].c`) is written, or the nearest field above:
    /// its key, or its value when that is a scalar and `at` asks for it.
    fn position(&self, path: &str, at: Point) -> Pos {
        let mut node = &self.positions;
        let mut pos = node.pos();
        for segment in segments(path) {
            let next = match (node, segment) {
                (Node::Map(_, entries), Segment::Key(k)) => {
                    entries.iter().find(|(key, _, _)| key == k).map(|(_, p, n)| match (at, n) {
                        (Point::Value, Node::Scalar(v)) => (*v, n),
                        _ => (*p, n),
                    })
                }
                (Node::Seq(_, items), Segment::Index(i)) => items.get(i).map(|n| (n.pos(), n)),
                _ => None,
            };
            match next {
                Some((p, n)) => {
                    pos = p;
                    node = n;
                }
                None => break,
            }
        }
        pos
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Key,
    Value,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits serde_path_to_error's `a.b[0].c` form.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for index in rest.split('[').map(|s| s.trim_end_matches(']')) {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

/// A `--set` value or a plain scalar of the file: YAML's core types.
fn scalar(raw: &str) -> Value {
    match Yaml::from_str(raw) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(r), Value::Number),
        _ => Value::String(raw.to_string()),
    }
}

/// Adds "did you mean" to serde's unknown-field message when a known field is close.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (strsim::damerau_levenshtein(field, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 3.max(candidate.len() / 4))
        .min();
    match best {
        Some((_, candidate)) => format!("{message}; did you mean `{candidate}`?"),
        None => message.to_string(),
    }
}

/// Builds the value and the position tree from parser events.
#[derive(Default)]
struct Builder {
    /// Open containers; a finished top-level node stays here alone.
    stack: Vec<(Value, Node)>,
    /// For each open mapping, the key read and waiting for its value.
    keys: Vec<Option<(String, Pos)>>,
    error: Option<String>,
}

impl Builder {
    fn push_value(&mut self, value: Value, node: Node) {
        let Some((parent, parent_node)) = self.stack.last_mut() else {
            self.stack.push((value, node));
            return;
        };
        match (parent, parent_node) {
            (Value::Array(items), Node::Seq(_, nodes)) => {
                items.push(value);
                nodes.push(node);
            }
            (Value::Object(map), Node::Map(_, entries)) => {
                let Some(slot) = self.keys.last_mut() else {
                    return;
                };
                match slot.take() {
                    None => match value {
                        Value::String(key) => *slot = Some((key, node.pos())),
                        Value::Number(n) => *slot = Some((n.to_string(), node.pos())),
                        Value::Bool(b) => *slot = Some((b.to_string(), node.pos())),
                        _ => {
                            let p = node.pos();
                            self.error.get_or_insert(format!(
                                "{}:{}: mapping keys must be plain scalars",
                                p.line, p.column
                            ));
                        }
                    },
                    Some((key, pos)) => {
                        if map.contains_key(&key) {
                            self.error
                                .get_or_insert(format!("{}:{}: duplicate key `{key}`", pos.line, pos.column));
                        }
                        map.insert(key.clone(), value);
                        entries.push((key, pos, node));
                    }
                }
            }
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match event {
            Event::Scalar(text, style, _, _) => {
                let value = if style == TScalarStyle::Plain { scalar(&text) } else { Value::String(text) };
                self.push_value(value, Node::Scalar(pos));
            }
            Event::SequenceStart(..) => {
                self.stack.push((Value::Array(Vec::new()), Node::Seq(pos, Vec::new())))
            }
            Event::MappingStart(..) => {
                self.stack.push((Value::Object(Map::new()), Node::Map(pos, Vec::new())));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if matches!(event, Event::MappingEnd) {
                    self.keys.pop();
                }
                if let Some((value, node)) = self.stack.pop() {
                    self.push_value(value, node);
                }
            }
            Event::Alias(_) => {
                self.error.get_or_insert(format!(
                    "{}:{}: YAML aliases are not supported in specs",
                    pos.line, pos.column
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Spec {
        name: String,
        instance_count: Option<u32>,
        environment: Option<Env>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Env {
        image: String,
    }

    fn doc(text: &str, sets: &[&str]) -> Result<Document, Error> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Document::parse(Path::new("d.yml"), text, &sets)
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn a_misspelt_key_is_located_and_gets_a_suggestion() {
        let d = doc("name: blue\ninstanc_count: 1\n", &[]).expect("parses");
        let e = message(d.decode::<Spec>().unwrap_err());
        assert!(e.starts_with("d.yml:2:1: field `instanc_count`: unknown field `instanc_count`"), "{e}");
        assert!(e.ends_with("did you mean `instance_count`?"), "{e}");
    }

    #[test]
    fn a_wrong_type_points_at_the_nested_field() {
        let d = doc("name: blue\nenvironment:\n  image: [1]\n", &[]).expect("parses");
        let e = message(d.decode::<Spec>().unwrap_err());
        assert!(e.starts_with("d.yml:3:3: field `environment.image`: invalid type"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = message(doc("name: blue\n  bad: [\n", &[]).unwrap_err());
        assert!(e.starts_with("d.yml:2:"), "{e}");
        assert!(e.contains("YAML syntax"), "{e}");
    }

    #[test]
    fn set_words_override_and_create_fields_as_yaml_scalars() {
        let d = doc(
            "name: blue\nenvironment:\n  image: old\n",
            &["environment.image=new:v1", "instance_count=3"],
        )
        .expect("parses");
        let s: Spec = d.decode().expect("decodes");
        assert_eq!(s.environment.expect("env").image, "new:v1");
        assert_eq!(s.instance_count, Some(3));
    }

    #[test]
    fn errors_in_set_values_name_the_word() {
        let d = doc("name: blue\n", &["instance_count=many"]).expect("parses");
        let e = message(d.decode::<Spec>().unwrap_err());
        assert!(e.starts_with("--set instance_count=many: invalid type: string \"many\""), "{e}");
    }

    #[test]
    fn malformed_set_words_are_refused() {
        assert!(message(doc("name: x\n", &["instance_count"]).unwrap_err()).contains("expected KEY=VALUE"));
        let hint = message(doc("name: x\n", &["private_network_connection", "true"]).unwrap_err());
        assert!(hint.contains("did you mean `private_network_connection=true`?"), "{hint}");
        assert!(message(doc("name: x\n", &["name.first=a"]).unwrap_err()).contains("name is not a mapping"));
        assert!(message(doc("name: x\n", &[".a=1"]).unwrap_err()).contains("not a dotted field path"));
    }

    #[test]
    fn quoted_scalars_stay_strings_and_duplicates_are_refused() {
        let d = doc("name: \"123\"\n", &[]).expect("parses");
        assert_eq!(d.value["name"], "123");
        assert!(message(doc("name: a\nname: b\n", &[]).unwrap_err()).contains("duplicate key `name`"));
    }

    #[test]
    fn the_top_must_be_a_mapping() {
        assert!(message(doc("- a\n", &[]).unwrap_err()).contains("expected a mapping"));
        assert!(doc("", &[]).is_ok());
    }
}
