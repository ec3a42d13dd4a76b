//! Ingest manifests, the files users write to ingest many datasets at once:
//! CSV whose header is `path` then dimension names
//! (`path,instrument,exposure,detector`), or JSON lines
//! (`{"path": "...", "data_id": {"instrument": "Cam", ...}}`). Relative paths
//! are relative to the manifest's directory.

use std::path::{Path, PathBuf};

use quanta_core::{DataId, DataIdValue, DimensionUniverse, FieldType};

use crate::error::ButlerError;
use crate::ingest::IngestItem;

fn bad(
    path: &Path,
    line: usize,
    column: Option<usize>,
    message: impl std::fmt::Display,
) -> ButlerError {
    let place = match column {
        Some(c) => format!("line {line}, column {c}"),
        None => format!("line {line}"),
    };
    ButlerError::Invalid(format!("{}: {place}: {message}", path.display()))
}

/// Reads a manifest into the files and data IDs to ingest.
pub fn read_manifest(
    path: &Path,
    universe: &DimensionUniverse,
) -> Result<Vec<IngestItem>, ButlerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ButlerError::Invalid(format!("reading {}: {e}", path.display())))?;
    parse_manifest(&text, path, universe)
}

/// Parses manifest `text` as if read from `path`, which names it in errors
/// and whose directory relative paths are resolved against (for callers
/// holding the text already, and the fuzz targets).
pub fn parse_manifest(
    text: &str,
    path: &Path,
    universe: &DimensionUniverse,
) -> Result<Vec<IngestItem>, ButlerError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let mut items = Vec::new();
    if text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            path: String,
            data_id: DataId,
        }
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line =
                serde_json::from_str(line).map_err(|e| bad(path, i + 1, Some(e.column()), e))?;
            items.push(IngestItem {
                path: resolve(&parsed.path),
                data_id: parsed.data_id,
            });
        }
        return Ok(items);
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(path, 1, None, e))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.first().map(String::as_str) != Some("path") {
        return Err(bad(
            path,
            1,
            Some(1),
            "the first column must be `path`, then dimension names",
        ));
    }
    let mut types = Vec::new();
    for (col, name) in header.iter().enumerate().skip(1) {
        let dim = universe
            .dimension(name)
            .map_err(|e| bad(path, 1, Some(col + 1), e))?;
        types.push(
            dim.key
                .as_ref()
                .map(|k| k.field_type)
                .unwrap_or(FieldType::String),
        );
    }
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| bad(path, line, None, e))?;
        let mut data_id = DataId::empty();
        for (col, cell) in row.iter().enumerate().skip(1) {
            let value = DataIdValue::parse_typed(cell, types[col - 1])
                .map_err(|e| bad(path, line, Some(col + 1), e))?;
            data_id.insert(header[col].clone(), value);
        }
        items.push(IngestItem {
            path: resolve(row.get(0).unwrap_or_default()),
            data_id,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_give_the_same_items() {
        let dir = tempfile::tempdir().unwrap();
        let u = DimensionUniverse::default_universe();
        let csv = dir.path().join("m.csv");
        std::fs::write(
            &csv,
            "path,instrument,exposure,detector\nraw/a.json,Cam,3,4\n/abs/b.json,Cam,5,6\n",
        )
        .unwrap();
        let jsonl = dir.path().join("m.jsonl");
        std::fs::write(
            &jsonl,
            "{\"path\": \"raw/a.json\", \"data_id\": {\"instrument\": \"Cam\", \"exposure\": 3, \"detector\": 4}}\n\
             {\"path\": \"/abs/b.json\", \"data_id\": {\"instrument\": \"Cam\", \"exposure\": 5, \"detector\": 6}}\n",
        )
        .unwrap();
        let a = read_manifest(&csv, &u).unwrap();
        let b = read_manifest(&jsonl, &u).unwrap();
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.path, y.path);
            let g = u.conform(&["exposure", "detector"]).unwrap();
            assert_eq!(
                x.data_id.standardize(&g, &u).unwrap(),
                y.data_id.standardize(&g, &u).unwrap()
            );
        }
        assert_eq!(a[0].path, dir.path().join("raw/a.json"));
        assert_eq!(a[1].path, PathBuf::from("/abs/b.json"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let u = DimensionUniverse::default_universe();
        let m = dir.path().join("m.csv");
        std::fs::write(&m, "path,instrument,exposure\nx.json,Cam,three\n").unwrap();
        let err = read_manifest(&m, &u).unwrap_err().to_string();
        assert!(
            err.contains("m.csv: line 2, column 3") && err.contains("three"),
            "{err}"
        );
        std::fs::write(&m, "path,instrument,exposre\n").unwrap();
        let err = read_manifest(&m, &u).unwrap_err().to_string();
        assert!(
            err.contains("line 1, column 3") && err.contains("exposre"),
            "{err}"
        );
    }
}
