//! The LSST export file (`export.yaml`, `butler.export(..., format="yaml")`,
//! format version 1.0.x) as a typed document, read from and written to
//! YAML with `serde_yaml_ng`, and quanta's sidecar of extras
//! (`quanta-extras.json`), which LSST's reader never opens.
//!
//! LSST's file (`lsst.daf.butler.transfers._yaml`): top-level
//! `description`, `version`, `universe_version`, `universe_namespace` and a
//! `data:` list whose entries have a `type`: `dimension` (`element`,
//! `records`), `collection` (`collection_type` RUN / TAGGED / CHAINED with
//! `children` / CALIBRATION, `name`, optional `doc`; a RUN also `host`,
//! `timespan_begin`, `timespan_end`), `dataset_type` (`name`, `dimensions`,
//! `storage_class`, `is_calibration`), `dataset` (`dataset_type`, `run`,
//! `records`: `dataset_id` (list of `!uuid`), `data_id` (list of required
//! data IDs), `path`, `formatter`) and `associations` (TAGGED:
//! `dataset_ids`; CALIBRATION: `validity_ranges` of a `timespan`
//! (`!lsst.daf.butler.Timespan` with `begin`/`end` times or null) and
//! `dataset_ids`). Times are `!butler_time/tai/iso 'YYYY-MM-DD
//! HH:MM:SS.nnnnnnnnn'`. LSST's reader raises on an unknown entry type and
//! on an unknown record field, which is why quanta's extras live in a file
//! of their own.

use std::collections::BTreeMap;
use std::path::Path;

use quanta_core::{CollectionType, DataId, DataIdValue, Uuid};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value as Yaml};

use super::mapping::{iso_to_mjd, mjd_to_iso};
use super::TransferError;

/// The export file's name inside an export directory.
pub const EXPORT_FILE: &str = "export.yaml";
/// quanta's sidecar of extras inside an export directory.
pub const EXTRAS_FILE: &str = "quanta-extras.json";
/// The format version quanta writes; it reads 1.0.x.
pub const FORMAT_VERSION: &str = "1.0.2";

const UUID_TAG: &str = "!uuid";
const TIME_TAG: &str = "!butler_time/tai/iso";
const TIMESPAN_TAG: &str = "!lsst.daf.butler.Timespan";

/// One collection entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionEntry {
    pub name: String,
    pub collection_type: CollectionType,
    pub doc: Option<String>,
    /// CHAINED only.
    pub children: Vec<String>,
}

/// One dataset type entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetTypeEntry {
    pub name: String,
    pub dimensions: Vec<String>,
    pub storage_class: String,
    pub is_calibration: bool,
}

/// One file of a dataset entry (LSST allows several datasets per file;
/// quanta writes one).
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    pub dataset_ids: Vec<Uuid>,
    /// Required dimensions → value, one per dataset ID: typed as read
    /// (integers and strings; anything else as its text, which the
    /// dimension's type check then refuses), not yet standardized.
    pub data_ids: Vec<DataId>,
    pub path: String,
    pub formatter: Option<String>,
}

/// The datasets of one type in one RUN.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetEntry {
    pub dataset_type: String,
    pub run: String,
    pub files: Vec<FileEntry>,
    /// Where the entry starts in the file (1-based), when known.
    pub line: Option<usize>,
}

/// A validity range: MJD (TAI), infinite for an open end.
pub type ValidityRange = (f64, f64);

/// The datasets certified for one validity range.
pub type CalibGroup = (ValidityRange, Vec<Uuid>);

/// An export document. Dimension records carry LSST's field names; their
/// times (`datetime_begin`, …) are MJD numbers here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportDocument {
    pub universe_version: i64,
    pub universe_namespace: String,
    pub dimensions: Vec<(String, Vec<Map<String, Json>>)>,
    pub collections: Vec<CollectionEntry>,
    pub dataset_types: Vec<DatasetTypeEntry>,
    pub datasets: Vec<DatasetEntry>,
    pub tags: Vec<(String, Vec<Uuid>)>,
    pub calibs: Vec<(String, Vec<CalibGroup>)>,
}

/// What LSST's format has no room for: file sizes and checksums, fields of
/// dimension records LSST would refuse (regions), and where the files are
/// when the export did not transfer them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Extras {
    pub format: String,
    pub version: u32,
    /// Absolute datastore root the paths are relative to (`--transfer
    /// none`); absent when the files are in the export directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_root: Option<String>,
    /// Dataset UUID → [size, BLAKE3]; written in UUID order.
    #[serde(default, serialize_with = "in_key_order")]
    pub files: foldhash::HashMap<Uuid, (u64, String)>,
    /// Element → per record of the export's entry, in order, the fields
    /// that are not in export.yaml.
    #[serde(default)]
    pub record_fields: BTreeMap<String, Vec<Map<String, Json>>>,
    /// The provenance of the datasets (`--with-provenance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<quanta_registry::ProvenanceBatch>,
}

impl Extras {
    pub const FORMAT: &'static str = "quanta-export-extras";
}

/// A map written with its keys in order, so that the same export writes
/// the same file.
fn in_key_order<S: serde::Serializer, K: Ord + Serialize, V: Serialize>(
    map: &foldhash::HashMap<K, V>,
    out: S,
) -> Result<S::Ok, S::Error> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.collect_map(entries)
}

fn tagged(tag: &str, value: Yaml) -> Yaml {
    Yaml::Tagged(Box::new(TaggedValue {
        tag: Tag::new(tag),
        value,
    }))
}

fn s(text: &str) -> Yaml {
    Yaml::String(text.to_string())
}

fn time(mjd: f64) -> Yaml {
    match mjd_to_iso(mjd) {
        Some(iso) => tagged(TIME_TAG, Yaml::String(iso)),
        None => Yaml::Null,
    }
}

fn uuids(ids: &[Uuid]) -> Yaml {
    Yaml::Sequence(
        ids.iter()
            .map(|id| tagged(UUID_TAG, Yaml::String(id.to_string())))
            .collect(),
    )
}

fn json_to_yaml(v: &Json) -> Yaml {
    serde_yaml_ng::to_value(v).unwrap_or(Yaml::Null)
}

/// A record with LSST's field names as YAML: the time fields tagged.
fn record_yaml(record: &Map<String, Json>) -> Yaml {
    let mut m = Mapping::new();
    for (k, v) in record {
        let value = match (k.as_str(), v.as_f64()) {
            ("datetime_begin" | "datetime_end", Some(mjd)) => time(mjd),
            _ => json_to_yaml(v),
        };
        m.insert(s(k), value);
    }
    Yaml::Mapping(m)
}

fn entry(pairs: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Mapping(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn to_text(value: &Yaml) -> std::io::Result<String> {
    serde_yaml_ng::to_string(value).map_err(std::io::Error::other)
}

fn collection_yaml(c: &CollectionEntry) -> Yaml {
    let mut pairs = vec![
        ("type", s("collection")),
        ("collection_type", s(c.collection_type.as_str())),
        ("name", s(&c.name)),
    ];
    if let Some(doc) = &c.doc {
        pairs.push(("doc", s(doc)));
    }
    match c.collection_type {
        CollectionType::Run => {
            pairs.push(("host", Yaml::Null));
            pairs.push(("timespan_begin", Yaml::Null));
            pairs.push(("timespan_end", Yaml::Null));
        }
        CollectionType::Chained => pairs.push((
            "children",
            Yaml::Sequence(c.children.iter().map(|n| s(n)).collect()),
        )),
        _ => {}
    }
    entry(pairs)
}

impl ExportDocument {
    /// The document as LSST's YAML.
    pub fn to_yaml(&self) -> Result<String, TransferError> {
        let mut out = Vec::new();
        self.write_yaml(&mut out)
            .map_err(|e| TransferError::Format {
                file: EXPORT_FILE.into(),
                line: None,
                reason: format!("cannot write YAML: {e}"),
            })?;
        Ok(String::from_utf8(out).expect("YAML is UTF-8"))
    }

    /// Writes the document as LSST's YAML: the `dataset` entries in the
    /// fixed layout of [`super::fast_yaml`], every other entry (a few per
    /// collection, type and dimension element) through `serde_yaml_ng`.
    pub fn write_yaml(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let head = entry(vec![
            ("description", s("Butler Data Repository Export")),
            ("version", s(FORMAT_VERSION)),
            (
                "universe_version",
                Yaml::Number(self.universe_version.into()),
            ),
            ("universe_namespace", s(&self.universe_namespace)),
        ]);
        out.write_all(to_text(&head)?.as_bytes())?;
        out.write_all(b"data:\n")?;
        let item = |out: &mut dyn std::io::Write, value: Yaml| -> std::io::Result<()> {
            out.write_all(to_text(&Yaml::Sequence(vec![value]))?.as_bytes())
        };
        for (element, records) in &self.dimensions {
            item(
                out,
                entry(vec![
                    ("type", s("dimension")),
                    ("element", s(element)),
                    (
                        "records",
                        Yaml::Sequence(records.iter().map(record_yaml).collect()),
                    ),
                ]),
            )?;
        }
        for c in &self.collections {
            item(out, collection_yaml(c))?;
        }
        for d in &self.datasets {
            if let Some(dt) = self.dataset_types.iter().find(|t| t.name == d.dataset_type) {
                item(
                    out,
                    entry(vec![
                        ("type", s("dataset_type")),
                        ("name", s(&dt.name)),
                        (
                            "dimensions",
                            Yaml::Sequence(dt.dimensions.iter().map(|n| s(n)).collect()),
                        ),
                        ("storage_class", s(&dt.storage_class)),
                        ("is_calibration", Yaml::Bool(dt.is_calibration)),
                    ]),
                )?;
            }
            super::fast_yaml::write_dataset_entry(out, d)?;
        }
        for (collection, ranges) in &self.calibs {
            let ranges = ranges
                .iter()
                .map(|((begin, end), ids)| {
                    entry(vec![
                        (
                            "timespan",
                            tagged(
                                TIMESPAN_TAG,
                                entry(vec![("begin", time(*begin)), ("end", time(*end))]),
                            ),
                        ),
                        ("dataset_ids", uuids(ids)),
                    ])
                })
                .collect();
            item(
                out,
                entry(vec![
                    ("type", s("associations")),
                    ("collection", s(collection)),
                    ("collection_type", s("CALIBRATION")),
                    ("validity_ranges", Yaml::Sequence(ranges)),
                ]),
            )?;
        }
        for (collection, ids) in &self.tags {
            item(
                out,
                entry(vec![
                    ("type", s("associations")),
                    ("collection", s(collection)),
                    ("collection_type", s("TAGGED")),
                    ("dataset_ids", uuids(ids)),
                ]),
            )?;
        }
        Ok(())
    }

    /// Parses an export file's text; `file` names it in errors, which
    /// carry the line of the offending `data:` entry.
    pub fn parse(text: &str, file: &Path) -> Result<Self, TransferError> {
        if let Some(parsed) = Self::parse_by_entry(text, file) {
            return parsed;
        }
        Self::parse_whole(text, file)
    }

    /// The top-level fields of a parsed document, checked.
    fn read_header(root: &Yaml, text: &str, file: &Path) -> Result<Self, TransferError> {
        let top = Reader {
            value: root,
            where_: "the file".into(),
            line: Some(1),
        };
        let version = top.str("version")?;
        let mut parts = version.split('.');
        if parts.next() != Some("1") || parts.next() != Some("0") {
            return Err(TransferError::Format {
                file: file.display().to_string(),
                line: line_of(text, "version:"),
                reason: format!(
                    "export format version {version} is not supported (quanta reads 1.0.x)"
                ),
            });
        }
        Ok(ExportDocument {
            universe_version: top
                .opt("universe_version")
                .and_then(Yaml::as_i64)
                .unwrap_or(0),
            universe_namespace: top
                .opt("universe_namespace")
                .and_then(Yaml::as_str)
                .unwrap_or("daf_butler")
                .to_string(),
            ..Default::default()
        })
    }

    /// The whole text through the general YAML parser.
    fn parse_whole(text: &str, file: &Path) -> Result<Self, TransferError> {
        let err = |line: Option<usize>, reason: String| TransferError::Format {
            file: file.display().to_string(),
            line,
            reason,
        };
        let root: Yaml = serde_yaml_ng::from_str(text).map_err(|e| {
            err(
                e.location().map(|l| l.line()),
                format!("not valid YAML: {e}"),
            )
        })?;
        let mut doc = Self::read_header(&root, text, file).map_err(|e| with_file(e, file))?;
        let top = Reader {
            value: &root,
            where_: "the file".into(),
            line: Some(1),
        };
        let data = top.seq("data").map_err(|e| with_file(e, file))?;
        let lines = entry_lines(text, data.len());
        for (i, value) in data.iter().enumerate() {
            let line = lines.as_ref().map(|l| l[i]);
            let r = Reader {
                value,
                where_: format!("data entry {}", i + 1),
                line,
            };
            doc.read_entry(&r).map_err(|e| match e {
                TransferError::Format { reason, .. } => err(line, reason),
                other => other,
            })?;
        }
        Ok(doc)
    }

    /// The text entry by entry, when its `data:` list is in block style at
    /// column 0 (as LSST and quanta write it): `dataset` entries in the
    /// fixed layout by [`super::fast_yaml`], every other entry (and the
    /// header) through the general parser. `None` (parse the whole text
    /// instead) when the layout is another or some piece is not valid YAML
    /// on its own, so that the general parser reports where.
    fn parse_by_entry(text: &str, file: &Path) -> Option<Result<Self, TransferError>> {
        // (line number, byte offset, line without its end)
        let mut lines = Vec::new();
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let l = raw.strip_suffix('\n').unwrap_or(raw);
            lines.push((i + 1, offset, l.strip_suffix('\r').unwrap_or(l)));
            offset += raw.len();
        }
        let data_at = lines.iter().position(|(_, _, l)| *l == "data:")?;
        let mut starts = Vec::new();
        for (k, (_, _, l)) in lines.iter().enumerate().skip(data_at + 1) {
            if l.starts_with("- type:") {
                starts.push(k);
            } else if !(l.is_empty() || l.starts_with(' ')) {
                return None;
            }
        }
        if lines[data_at + 1..starts.first().copied().unwrap_or(lines.len())]
            .iter()
            .any(|(_, _, l)| !l.trim().is_empty())
        {
            return None;
        }
        let head = format!("{}data: []\n", &text[..lines[data_at].1]);
        let root: Yaml = serde_yaml_ng::from_str(&head).ok()?;
        let mut doc = match Self::read_header(&root, text, file) {
            Ok(doc) => doc,
            Err(e) => return Some(Err(with_file(e, file))),
        };
        for (n, &k) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(lines.len());
            let line = lines[k].0;
            if lines[k].2 == "- type: dataset" {
                let entry_lines: Vec<&str> = lines[k..end].iter().map(|(_, _, l)| *l).collect();
                if let Some(entry) = super::fast_yaml::read_dataset_entry(&entry_lines, line) {
                    doc.datasets.push(entry);
                    continue;
                }
            }
            let end_byte = lines.get(end).map_or(text.len(), |(_, o, _)| *o);
            let value: Yaml = serde_yaml_ng::from_str(&text[lines[k].1..end_byte]).ok()?;
            let Yaml::Sequence(items) = &value else {
                return None;
            };
            let [item] = items.as_slice() else {
                return None;
            };
            let r = Reader {
                value: item,
                where_: format!("data entry {}", n + 1),
                line: Some(line),
            };
            if let Err(e) = doc.read_entry(&r) {
                return Some(Err(with_file(e, file)));
            }
        }
        Some(Ok(doc))
    }

    fn read_entry(&mut self, r: &Reader<'_>) -> Result<(), TransferError> {
        match r.str("type")? {
            "dimension" => {
                let records = r
                    .seq("records")?
                    .iter()
                    .map(|v| record_json(v).map_err(|reason| r.fail(reason)))
                    .collect::<Result<_, _>>()?;
                self.dimensions
                    .push((r.str("element")?.to_string(), records));
            }
            "collection" | "run" => self.collections.push(r.collection()?),
            "dataset_type" => self.dataset_types.push(DatasetTypeEntry {
                name: r.str("name")?.to_string(),
                dimensions: r
                    .seq("dimensions")?
                    .iter()
                    .map(|d| {
                        d.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| r.fail("`dimensions` must be names".into()))
                    })
                    .collect::<Result<_, _>>()?,
                storage_class: r.str("storage_class")?.to_string(),
                is_calibration: r
                    .opt("is_calibration")
                    .and_then(Yaml::as_bool)
                    .unwrap_or(false),
            }),
            "dataset" => {
                let files = r
                    .seq("records")?
                    .iter()
                    .map(|v| r.file(v))
                    .collect::<Result<_, _>>()?;
                self.datasets.push(DatasetEntry {
                    dataset_type: r.str("dataset_type")?.to_string(),
                    run: r.str("run")?.to_string(),
                    files,
                    line: r.line,
                });
            }
            "associations" => match r.str("collection_type")? {
                "TAGGED" => self.tags.push((
                    r.str("collection")?.to_string(),
                    r.ids(r.get("dataset_ids")?)?,
                )),
                "CALIBRATION" => {
                    let mut ranges = Vec::new();
                    for v in r.seq("validity_ranges")? {
                        let range = Reader {
                            value: v,
                            where_: r.where_.clone(),
                            line: r.line,
                        };
                        let span = match range.opt("timespan") {
                            Some(t) => untag(t),
                            None => v,
                        };
                        let span = Reader {
                            value: span,
                            where_: r.where_.clone(),
                            line: r.line,
                        };
                        let begin = span.time_or(span.opt("begin"), f64::NEG_INFINITY)?;
                        let end = span.time_or(span.opt("end"), f64::INFINITY)?;
                        ranges.push(((begin, end), range.ids(range.get("dataset_ids")?)?));
                    }
                    self.calibs.push((r.str("collection")?.to_string(), ranges));
                }
                other => {
                    return Err(r.fail(format!(
                        "associations of a {other} collection are not supported"
                    )))
                }
            },
            other => return Err(r.fail(format!("unknown entry type `{other}`"))),
        }
        Ok(())
    }
}

/// A format error of a [`Reader`] with the file's name.
fn with_file(e: TransferError, file: &Path) -> TransferError {
    match e {
        TransferError::Format { line, reason, .. } => TransferError::Format {
            file: file.display().to_string(),
            line,
            reason,
        },
        other => other,
    }
}

/// The value under a tag (or the value itself).
fn untag(v: &Yaml) -> &Yaml {
    match v {
        Yaml::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// A dimension record as JSON; times as MJD numbers.
fn record_json(v: &Yaml) -> Result<Map<String, Json>, String> {
    let Yaml::Mapping(m) = untag(v) else {
        return Err("a dimension record must be a mapping".into());
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = k.as_str().ok_or("a record field name must be a string")?;
        let value = match v {
            Yaml::Tagged(t) if t.tag == Tag::new(TIME_TAG) => {
                let text = untag(&t.value).as_str().unwrap_or_default();
                Json::from(iso_to_mjd(text).ok_or(format!("field `{key}`: bad time `{text}`"))?)
            }
            Yaml::Tagged(t) => {
                return Err(format!(
                    "field `{key}`: values tagged {} cannot be read by quanta",
                    t.tag
                ))
            }
            other => serde_json::to_value(other).map_err(|e| format!("field `{key}`: {e}"))?,
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// A data ID read as a mapping: integers and strings as they are,
/// anything else as its JSON text.
fn data_id_of(map: &Map<String, Json>) -> DataId {
    let mut data_id = DataId::empty();
    for (k, v) in map {
        data_id.insert(k, data_id_value(v));
    }
    data_id
}

/// A data ID value from JSON: integers and strings as they are, anything
/// else as its JSON text.
fn data_id_value(v: &Json) -> DataIdValue {
    match v {
        Json::Number(n) if n.is_i64() => DataIdValue::Int(n.as_i64().unwrap_or_default()),
        Json::String(s) => DataIdValue::Str(s.as_str().into()),
        other => DataIdValue::Str(other.to_string().into()),
    }
}

/// The line of the first line starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
}

/// The line of each `data:` entry, found as block-style `- type:` lines at
/// the list's indentation (how LSST and quanta write them); `None` when
/// their number is not `n` (flow style, other layouts).
fn entry_lines(text: &str, n: usize) -> Option<Vec<usize>> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("- type:") || l.starts_with("  - type:"))
        .map(|(i, _)| i + 1)
        .collect();
    (lines.len() == n).then_some(lines)
}

/// A YAML mapping with where it is, for errors.
struct Reader<'a> {
    value: &'a Yaml,
    where_: String,
    line: Option<usize>,
}

impl<'a> Reader<'a> {
    fn fail(&self, reason: String) -> TransferError {
        TransferError::Format {
            file: String::new(),
            line: self.line,
            reason: format!("{}: {reason}", self.where_),
        }
    }

    fn opt(&self, key: &str) -> Option<&'a Yaml> {
        untag(self.value).as_mapping()?.get(key).map(untag)
    }

    fn get(&self, key: &str) -> Result<&'a Yaml, TransferError> {
        self.opt(key)
            .ok_or_else(|| self.fail(format!("missing `{key}`")))
    }

    fn str(&self, key: &str) -> Result<&'a str, TransferError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.fail(format!("`{key}` must be a string")))
    }

    fn seq(&self, key: &str) -> Result<&'a Vec<Yaml>, TransferError> {
        match self.get(key)? {
            Yaml::Sequence(s) => Ok(s),
            _ => Err(self.fail(format!("`{key}` must be a list"))),
        }
    }

    fn ids(&self, v: &Yaml) -> Result<Vec<Uuid>, TransferError> {
        let items: Vec<&Yaml> = match untag(v) {
            Yaml::Sequence(s) => s.iter().collect(),
            one => vec![one],
        };
        items
            .into_iter()
            .map(|v| {
                let text = untag(v).as_str().ok_or_else(|| {
                    self.fail(
                        "dataset IDs must be UUIDs (integer IDs of old exports are not supported)"
                            .into(),
                    )
                })?;
                Uuid::parse_str(text)
                    .map_err(|e| self.fail(format!("bad dataset ID `{text}`: {e}")))
            })
            .collect()
    }

    fn time_or(&self, v: Option<&Yaml>, open: f64) -> Result<f64, TransferError> {
        match v.map(untag) {
            None | Some(Yaml::Null) => Ok(open),
            Some(Yaml::String(text)) => {
                iso_to_mjd(text).ok_or_else(|| self.fail(format!("bad time `{text}`")))
            }
            Some(other) => Err(self.fail(format!("bad time {other:?}"))),
        }
    }

    fn collection(&self) -> Result<CollectionEntry, TransferError> {
        let collection_type = match self.opt("collection_type").and_then(Yaml::as_str) {
            None if self.str("type")? == "run" => CollectionType::Run,
            None => return Err(self.fail("missing `collection_type`".into())),
            Some(t) => t
                .parse()
                .map_err(|_| self.fail(format!("unknown collection type `{t}`")))?,
        };
        let children = match self.opt("children") {
            Some(Yaml::Sequence(items)) => items
                .iter()
                .map(|c| match untag(c) {
                    Yaml::String(n) => Ok(n.clone()),
                    // Old form: [name, dataset type restriction].
                    Yaml::Sequence(pair) if !pair.is_empty() => pair[0]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.fail("bad chain child".into())),
                    _ => Err(self.fail("bad chain child".into())),
                })
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(CollectionEntry {
            name: self.str("name")?.to_string(),
            collection_type,
            doc: self.opt("doc").and_then(Yaml::as_str).map(str::to_string),
            children,
        })
    }

    fn file(&self, v: &Yaml) -> Result<FileEntry, TransferError> {
        let f = Reader {
            value: v,
            where_: self.where_.clone(),
            line: self.line,
        };
        let data_id = |d: &Yaml| {
            record_json(d)
                .map(|m| data_id_of(&m))
                .map_err(|e| f.fail(e))
        };
        let data_ids: Vec<DataId> = match f.get("data_id")? {
            Yaml::Sequence(items) => items.iter().map(data_id).collect::<Result<_, _>>()?,
            one => vec![data_id(one)?],
        };
        let dataset_ids = f.ids(f.get("dataset_id")?)?;
        if dataset_ids.len() != data_ids.len() {
            return Err(f.fail("`dataset_id` and `data_id` differ in length".into()));
        }
        Ok(FileEntry {
            dataset_ids,
            data_ids,
            path: f.str("path")?.to_string(),
            formatter: f
                .opt("formatter")
                .and_then(Yaml::as_str)
                .map(str::to_string),
        })
    }
}
