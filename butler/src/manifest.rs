//! Ingest manifests, the files users write to ingest many datasets at once:
//! CSV whose header is `path` then dimension names
//! (`path,instrument,exposure,detector`), or JSON lines
//! (`{"path": "...", "data_id": {"instrument": "Cam", ...}}`). Relative paths
//! are relative to the manifest's directory.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use quanta_core::{DataId, DataIdValue, DimensionUniverse, FieldType};

use crate::error::ButlerError;
use crate::ingest::{IngestItem, IngestItems, ItemIter};

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

/// A manifest file, read item by item each time an ingest goes over its
/// items (twice: once to check them all, once to write them), so that an
/// ingest of millions of files never holds them all in memory.
pub struct Manifest {
    path: PathBuf,
    universe: DimensionUniverse,
}

impl Manifest {
    pub fn new(path: &Path, universe: &DimensionUniverse) -> Self {
        Self {
            path: path.to_path_buf(),
            universe: universe.clone(),
        }
    }
}

impl IngestItems for Manifest {
    fn items(&self) -> Result<ItemIter<'_>, ButlerError> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| ButlerError::Invalid(format!("reading {}: {e}", self.path.display())))?;
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        stream_manifest(reader, &self.path, &self.universe)
    }
}

/// Reads a manifest into the files and data IDs to ingest, all at once.
pub fn read_manifest(
    path: &Path,
    universe: &DimensionUniverse,
) -> Result<Vec<IngestItem>, ButlerError> {
    Manifest::new(path, universe).items()?.collect()
}

/// Parses manifest `text` as if read from `path`, which names it in errors
/// and whose directory relative paths are resolved against (for callers
/// holding the text already, and the fuzz targets).
pub fn parse_manifest(
    text: &str,
    path: &Path,
    universe: &DimensionUniverse,
) -> Result<Vec<IngestItem>, ButlerError> {
    stream_manifest(text.as_bytes(), path, universe)?.collect()
}

/// The items of the manifest `reader` holds, parsed as they are read.
fn stream_manifest<'a, R: BufRead + 'a>(
    mut reader: R,
    path: &'a Path,
    universe: &'a DimensionUniverse,
) -> Result<ItemIter<'a>, ButlerError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = move |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    // JSON lines start with `{`; a CSV header with `path`.
    let starts_json = reader
        .fill_buf()
        .map_err(|e| bad(path, 1, None, e))?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b'{');
    if starts_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            path: String,
            data_id: DataId,
        }
        let lines = reader.lines().enumerate().filter_map(move |(i, line)| {
            let line = match line {
                Ok(line) if line.trim().is_empty() => return None,
                Ok(line) => line,
                Err(e) => return Some(Err(bad(path, i + 1, None, e))),
            };
            Some(
                serde_json::from_str::<Line>(&line)
                    .map_err(|e| bad(path, i + 1, Some(e.column()), e))
                    .map(|parsed| IngestItem {
                        path: resolve(&parsed.path),
                        data_id: parsed.data_id,
                    }),
            )
        });
        return Ok(Box::new(lines));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
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
    let rows = reader.into_records().enumerate().map(move |(i, row)| {
        let line = i + 2;
        let row = row.map_err(|e| bad(path, line, None, e))?;
        let mut data_id = DataId::empty();
        for (col, cell) in row.iter().enumerate().skip(1) {
            let value = DataIdValue::parse_typed(cell, types[col - 1])
                .map_err(|e| bad(path, line, Some(col + 1), e))?;
            data_id.insert(header[col].clone(), value);
        }
        Ok(IngestItem {
            path: resolve(row.get(0).unwrap_or_default()),
            data_id,
        })
    });
    Ok(Box::new(rows))
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
