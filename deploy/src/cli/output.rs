//! `-o json|yaml|tsv|table` and `--query` (JMESPath, applied before formatting), as `az` does.

use std::fmt::Write;

use clap::ValueEnum;
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Tsv,
    Table,
}

pub fn render(value: Value, format: Format, query: Option<&str>) -> Result<String, Error> {
    let value = match query {
        Some(q) => apply_query(value, q)?,
        None => value,
    };
    Ok(match format {
        Format::Json => {
            serde_json::to_string_pretty(&value).map_err(|e| Error::other("encoding JSON", e))? + "\n"
        }
        Format::Yaml => yaml(&value),
        Format::Tsv => tsv(&value),
        Format::Table => table(&value),
    })
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

/// A scalar as a shell wants it: strings raw, null empty.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join("\t"),
        other => other.to_string(),
    }
}

/// A list is one row per item; an object's values (or a list's items) are tab-joined.
fn tsv(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out = String::new();
    for row in rows {
        let line = match row {
            Value::Object(map) => {
                map.values().filter(|v| !v.is_object()).map(cell).collect::<Vec<_>>().join("\t")
            }
            other => cell(other),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
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
        .map(|row| columns.iter().map(|c| row.get(c).map(cell).unwrap_or_default()).collect())
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
        assert_eq!(render(creds.clone(), Format::Tsv, Some("primaryKey")).expect("tsv"), "abc\n");
        assert_eq!(render(creds, Format::Tsv, None).expect("tsv"), "abc\tdef\n");
        let list = json!([{"name": "a", "n": 1}, {"name": "b", "n": 2}]);
        assert_eq!(render(list.clone(), Format::Tsv, Some("[].name")).expect("tsv"), "a\nb\n");
        assert_eq!(render(list, Format::Tsv, Some("[].[name, n]")).expect("tsv"), "a\t1\nb\t2\n");
    }

    #[test]
    fn a_bad_query_is_a_parse_error() {
        let e = render(json!({}), Format::Json, Some("[?")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn yaml_output_reads_back_as_the_same_value() {
        let v = json!({"name": "blue", "count": 2, "tags": {}, "list": [{"a": "1", "b": true}, "x"], "path": "/a b", "t": "true", "n": null});
        let text = render(v.clone(), Format::Yaml, None).expect("yaml");
        let doc = crate::spec::Document::parse(std::path::Path::new("o.yml"), &text, &[]).expect("parses");
        assert_eq!(doc.value, v, "{text}");
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let t = render(json!([{"name": "ep1", "state": "Succeeded"}]), Format::Table, None).expect("table");
        assert_eq!(t, "name  state\n----  ---------\nep1   Succeeded\n");
    }
}
