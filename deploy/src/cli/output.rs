//! `-o json|jsonc|yaml|yamlc|tsv|table|none` and `--query` (JMESPath, applied before
//! formatting), as `az` does. `jsonc` and `yamlc` are colored on a terminal and plain
//! otherwise, so a script that asks for them still reads clean text; `none` prints nothing
//! (the query is still checked).

use std::fmt::Write;

use clap::ValueEnum;
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Jsonc,
    Yaml,
    Yamlc,
    Tsv,
    Table,
    None,
}

/// The text for stdout; `color` says whether it is a terminal (for `jsonc` and `yamlc`).
pub fn render(value: Value, format: Format, query: Option<&str>, color: bool) -> Result<String, Error> {
    let value = match query {
        Some(q) => apply_query(value, q)?,
        None => value,
    };
    let json = |value: &Value| {
        serde_json::to_string_pretty(value).map(|t| t + "\n").map_err(|e| Error::other("encoding JSON", e))
    };
    Ok(match format {
        Format::Json => json(&value)?,
        Format::Jsonc if color => {
            let mut out = String::new();
            colored_json(&mut out, &value, 0);
            out + "\n"
        }
        Format::Jsonc => json(&value)?,
        Format::Yaml => yaml(&value),
        Format::Yamlc if color => yaml(&value).lines().map(colored_yaml_line).collect(),
        Format::Yamlc => yaml(&value),
        Format::Tsv => tsv(&value),
        Format::Table => table(&value),
        Format::None => String::new(),
    })
}

const KEY: &str = "\x1b[94m";
const TEXT: &str = "\x1b[32m";
const OTHER: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// Pretty JSON, keys, strings and other scalars each in a color of their own.
fn colored_json(out: &mut String, value: &Value, indent: usize) {
    let pad = |n: usize| "  ".repeat(n);
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                let _ = write!(out, "{}{KEY}{}{RESET}: ", pad(indent + 1), quoted(k));
                colored_json(out, v, indent + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(indent));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                colored_json(out, v, indent + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(indent));
        }
        Value::String(s) => {
            let _ = write!(out, "{TEXT}{}{RESET}", quoted(s));
        }
        other => {
            let _ = write!(out, "{OTHER}{other}{RESET}");
        }
    }
}

/// A YAML line with its key colored (list dashes and values as they are).
fn colored_yaml_line(line: &str) -> String {
    let body = line.trim_start_matches([' ', '-']);
    let lead = &line[..line.len() - body.len()];
    match body.split_once(':') {
        Some((key, rest)) if !key.is_empty() && !key.starts_with(['"', '{', '[']) => {
            format!("{lead}{KEY}{key}{RESET}:{rest}\n")
        }
        _ => format!("{line}\n"),
    }
}

fn apply_query(value: Value, query: &str) -> Result<Value, Error> {
    // jmespath's messages draw a caret on extra lines; the first line says it all.
    let bad = |e: jmespath::JmespathError| {
        let text = e.to_string();
        Error::Parse(format!("--query {query:?}: {}", text.lines().next().unwrap_or_default()))
    };
    let expression = jmespath::compile(query).map_err(bad)?;
    let found = expression.search(value).map_err(bad)?;

    serde_json::to_value(&*found).map_err(|e| Error::other("--query result", e))
}

/// A cell as az writes it in TSV (Python's `str` of the value): strings raw, `None`, `True` and
/// `False`, a nested list as its length and a nested map as nothing, so that every row of a
/// list keeps its columns whatever a value holds.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.len().to_string(),
        Value::Object(_) => String::new(),
        Value::Number(n) => n.to_string(),
    }
}

/// az's TSV: one row per item of a list (or the one value); a row's cells are an object's
/// values or a list's items. A result that is null prints nothing.
fn tsv(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out = String::new();
    for row in rows {
        let line = match row {
            Value::Object(map) => map.values().map(cell).collect::<Vec<_>>().join("\t"),
            Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join("\t"),
            other => cell(other),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A table cell: scalars as they read, nothing for what has no single value.
fn table_cell(value: &Value) -> String {
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        if let Value::Object(map) = row {
            for (k, v) in map {
                if !v.is_object() && !v.is_array() && !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    if columns.is_empty() {
        return tsv(value);
    }
    let grid: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c).map(table_cell).unwrap_or_default()).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| grid.iter().map(|r| r[i].chars().count()).chain([c.chars().count()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    out.push_str(&line(&columns));
    out.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
    for row in &grid {
        out.push_str(&line(row));
    }
    out
}

fn yaml(value: &Value) -> String {
    let mut out = String::new();
    yaml_into(&mut out, value, 0, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !matches!(
                    yaml_rust2::Yaml::from_str(s),
                    yaml_rust2::Yaml::Integer(_)
                        | yaml_rust2::Yaml::Real(_)
                        | yaml_rust2::Yaml::Boolean(_)
                        | yaml_rust2::Yaml::Null
                )
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@+".contains(c))
                && !s.starts_with(['-', ':', '@']);
            if plain { s.clone() } else { serde_json::to_string(s).unwrap_or_default() }
        }
        other => other.to_string(),
    }
}

fn yaml_into(out: &mut String, value: &Value, indent: usize, in_list: bool) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (i, (k, v)) in map.iter().enumerate() {
                let lead = if in_list && i == 0 { String::new() } else { pad.clone() };
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{lead}{k}:");
                        yaml_into(out, v, indent + 2, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{lead}{k}:");
                        yaml_into(out, v, indent, false);
                    }
                    Value::Object(_) => {
                        let _ = writeln!(out, "{lead}{k}: {{}}");
                    }
                    Value::Array(_) => {
                        let _ = writeln!(out, "{lead}{k}: []");
                    }
                    scalar => {
                        let _ = writeln!(out, "{lead}{k}: {}", yaml_scalar(scalar));
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                let _ = write!(out, "{pad}- ");
                match item {
                    Value::Object(m) if !m.is_empty() => yaml_into(out, item, indent + 2, true),
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        yaml_into(out, item, indent + 2, false);
                    }
                    other => {
                        let _ = writeln!(out, "{}", yaml_scalar(other));
                    }
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        scalar => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tsv_prints_strings_raw_and_rows_per_list_item() {
        let creds = json!({"primaryKey": "abc", "secondaryKey": "def"});
        assert_eq!(render(creds.clone(), Format::Tsv, Some("primaryKey"), false).expect("tsv"), "abc\n");
        assert_eq!(render(creds, Format::Tsv, None, false).expect("tsv"), "abc\tdef\n");
        let list = json!([{"name": "a", "n": 1}, {"name": "b", "n": 2}]);
        assert_eq!(render(list.clone(), Format::Tsv, Some("[].name"), false).expect("tsv"), "a\nb\n");
        assert_eq!(render(list, Format::Tsv, Some("[].[name, n]"), false).expect("tsv"), "a\t1\nb\t2\n");
    }

    /// az's rules for whole objects, case by case, as `az ... -o tsv` prints them.
    #[test]
    fn tsv_follows_azs_rules_for_nested_values_none_and_booleans() {
        for (value, expected) in [
            (json!({"a": "x", "b": null}), "x\tNone\n"),
            (json!({"ok": true, "no": false}), "True\tFalse\n"),
            (json!({"list": [1, 2, 3], "map": {"k": "v"}, "n": 2}), "3\t\t2\n"),
            (json!({"f": 1.5, "empty": [], "s": ""}), "1.5\t0\t\n"),
            (json!([{"name": "a", "tags": {}}, {"name": "b", "tags": {"x": "y"}}]), "a\t\nb\t\n"),
            (json!([["a", null], ["b", true]]), "a\tNone\nb\tTrue\n"),
            (json!("plain"), "plain\n"),
            (json!(null), ""),
            (json!(7), "7\n"),
        ] {
            assert_eq!(render(value.clone(), Format::Tsv, None, false).expect("tsv"), expected, "{value}");
        }
    }

    #[test]
    fn a_bad_query_is_a_parse_error() {
        let e = render(json!({}), Format::None, Some("[?"), false).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn yaml_output_reads_back_as_the_same_value() {
        let v = json!({"name": "blue", "count": 2, "tags": {}, "list": [{"a": "1", "b": true}, "x"], "path": "/a b", "t": "true", "n": null});
        let text = render(v.clone(), Format::Yaml, None, false).expect("yaml");
        let doc = crate::spec::Document::parse(std::path::Path::new("o.yml"), &text, &[]).expect("parses");
        assert_eq!(doc.value, v, "{text}");
    }

    #[test]
    fn colored_formats_are_plain_off_a_terminal_and_none_prints_nothing() {
        let v = json!({"name": "blue", "n": 2, "tags": {"a": "b"}, "list": ["x", null]});
        for (colored, plain) in [(Format::Jsonc, Format::Json), (Format::Yamlc, Format::Yaml)] {
            let off = render(v.clone(), colored, None, false).expect("render");
            assert_eq!(off, render(v.clone(), plain, None, false).expect("render"));
            let on = render(v.clone(), colored, None, true).expect("render");
            assert!(on.contains("\x1b["), "{on}");
            let stripped = on.replace(KEY, "").replace(TEXT, "").replace(OTHER, "").replace(RESET, "");
            assert_eq!(stripped, off, "the same text under the colors");
        }
        assert_eq!(render(v, Format::None, Some("name"), true).expect("none"), "");
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let t = render(json!([{"name": "ep1", "state": "Succeeded"}]), Format::Table, None, false)
            .expect("table");
        assert_eq!(t, "name  state\n----  ---------\nep1   Succeeded\n");
    }
}
