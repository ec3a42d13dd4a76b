//! Formatters turn in-memory datasets into file bytes and back, one per
//! storage class. Json and Bytes are built in; other crates register more
//! (FITS, Parquet, …) in a [`FormatterRegistry`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{DatastoreError, FormatterError};

/// A dataset in memory. Formatters of other crates carry their own types in
/// [`InMemoryDataset::Other`] and downcast them back.
pub enum InMemoryDataset {
    Json(serde_json::Value),
    Bytes(Vec<u8>),
    Other(Box<dyn Any + Send + Sync>),
}

impl InMemoryDataset {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            InMemoryDataset::Json(_) => "Json",
            InMemoryDataset::Bytes(_) => "Bytes",
            InMemoryDataset::Other(_) => "Other",
        }
    }

    pub fn into_json(self) -> Option<serde_json::Value> {
        match self {
            InMemoryDataset::Json(v) => Some(v),
            _ => None,
        }
    }

    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            InMemoryDataset::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The value of an `Other` dataset, if it is a `T`.
    pub fn downcast<T: Any>(self) -> Option<Box<T>> {
        match self {
            InMemoryDataset::Other(b) => b.downcast().ok(),
            _ => None,
        }
    }
}

impl fmt::Debug for InMemoryDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InMemoryDataset::Json(v) => f.debug_tuple("Json").field(v).finish(),
            InMemoryDataset::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            InMemoryDataset::Other(_) => f.write_str("Other(..)"),
        }
    }
}

/// Read parameters (`bbox=0,0,100,100`, `columns=X,Y`): names and their
/// text, which the formatter parses. Which names a storage class accepts is
/// `quanta_core::StorageClasses`' business; the reader checks them before
/// the formatter sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadParameters(BTreeMap<String, String>);

impl ReadParameters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `NAME=VALUE` items (one per `--parameters` flag); a name
    /// given twice or an item without `=` is refused.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, FormatterError> {
        let mut out = Self::new();
        for item in items {
            let Some((name, value)) = item.split_once('=') else {
                return Err(FormatterError::BadParameter(format!(
                    "`{item}`: expected NAME=VALUE (e.g. bbox=0,0,100,100)"
                )));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(FormatterError::BadParameter(format!(
                    "`{item}`: empty name"
                )));
            }
            if out
                .0
                .insert(name.to_string(), value.trim().to_string())
                .is_some()
            {
                return Err(FormatterError::BadParameter(format!(
                    "`{name}` is given twice"
                )));
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) a parameter.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_string(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Reads and writes the files of one storage class.
pub trait Formatter: Send + Sync {
    /// Recorded with every file written, to pick the formatter on read.
    fn name(&self) -> &str;
    /// The storage class this formatter serves.
    fn storage_class(&self) -> &str;
    /// File extension without the dot (`json`, `fits.fz`).
    fn extension(&self) -> &str;
    /// The file bytes for `obj`.
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError>;
    /// The dataset in `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError>;
    /// Streams the encoding of `obj` to `out`; override to avoid building the
    /// whole file in memory first.
    fn encode_to(&self, obj: &InMemoryDataset, out: &mut dyn Write) -> Result<(), FormatterError> {
        out.write_all(&self.encode(obj)?)?;
        Ok(())
    }
    /// Reads the file at `path`: the whole dataset, or only `component`
    /// (of the storage class's components), restricted by `parameters`
    /// (checked against the storage class by the caller). A formatter of a
    /// composite overrides this to read only the part of the file a
    /// component or parameter needs; the default reads the whole file and
    /// accepts neither.
    fn read(
        &self,
        path: &Path,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        if let Some(c) = component {
            return Err(FormatterError::BadParameter(format!(
                "formatter `{}` reads no component (asked for `{c}`)",
                self.name()
            )));
        }
        if let Some(p) = parameters.names().next() {
            return Err(FormatterError::BadParameter(format!(
                "formatter `{}` takes no read parameter (got `{p}`)",
                self.name()
            )));
        }
        self.decode(&std::fs::read(path)?)
    }
    /// A JSON summary of `obj` for display (`quanta get` without
    /// `--output`), when the formatter has one.
    fn describe(&self, _obj: &InMemoryDataset) -> Option<serde_json::Value> {
        None
    }
    /// Whether this formatter splits its datasets into stored components
    /// (a composite the datastore may disassemble, one file per component).
    fn disassembles(&self) -> bool {
        false
    }
    /// The stored components of `obj` (name → the dataset of the
    /// component's storage class), for a formatter that
    /// [`Formatter::disassembles`].
    fn disassemble(
        &self,
        _obj: &InMemoryDataset,
    ) -> Result<Vec<(String, InMemoryDataset)>, FormatterError> {
        Err(FormatterError::Other(format!(
            "formatter `{}` does not disassemble its datasets",
            self.name()
        )))
    }
    /// The composite from its parts (as [`Formatter::disassemble`] gives
    /// them, already restricted by the `parameters` their storage classes
    /// accept); applies what else `parameters` mean for the whole.
    fn assemble(
        &self,
        _parts: Vec<(String, InMemoryDataset)>,
        _parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        Err(FormatterError::Other(format!(
            "formatter `{}` does not assemble parts",
            self.name()
        )))
    }
}

/// Compact JSON of a `serde_json::Value`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFormatter;

impl JsonFormatter {
    pub const NAME: &'static str = "Json";
    pub const STORAGE_CLASS: &'static str = "Json";

    fn value<'a>(&self, obj: &'a InMemoryDataset) -> Result<&'a serde_json::Value, FormatterError> {
        match obj {
            InMemoryDataset::Json(v) => Ok(v),
            other => Err(FormatterError::WrongType {
                expected: "Json",
                got: other.kind(),
            }),
        }
    }
}

impl Formatter for JsonFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        Self::STORAGE_CLASS
    }
    fn extension(&self) -> &str {
        "json"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        Ok(serde_json::to_vec(self.value(obj)?)?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Json(serde_json::from_slice(bytes)?))
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        match obj {
            InMemoryDataset::Json(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// Opaque bytes, written as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct BytesFormatter;

impl BytesFormatter {
    pub const NAME: &'static str = "Bytes";
    pub const STORAGE_CLASS: &'static str = "Bytes";

    fn bytes<'a>(&self, obj: &'a InMemoryDataset) -> Result<&'a [u8], FormatterError> {
        match obj {
            InMemoryDataset::Bytes(b) => Ok(b),
            other => Err(FormatterError::WrongType {
                expected: "Bytes",
                got: other.kind(),
            }),
        }
    }
}

impl Formatter for BytesFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        Self::STORAGE_CLASS
    }
    fn extension(&self) -> &str {
        "bin"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        Ok(self.bytes(obj)?.to_vec())
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Bytes(bytes.to_vec()))
    }
    fn encode_to(&self, obj: &InMemoryDataset, out: &mut dyn Write) -> Result<(), FormatterError> {
        out.write_all(self.bytes(obj)?)?;
        Ok(())
    }
}

/// Formatters by storage class and by name.
#[derive(Clone)]
pub struct FormatterRegistry {
    by_storage_class: HashMap<String, Arc<dyn Formatter>>,
    by_name: HashMap<String, Arc<dyn Formatter>>,
}

impl FormatterRegistry {
    /// A registry with no formatters.
    pub fn empty() -> Self {
        Self {
            by_storage_class: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Adds a formatter. Refuses a second formatter for a storage class or
    /// name, and extensions that are not `[A-Za-z0-9]` words joined by `.`
    /// (an extension ends up in every file name).
    pub fn register(&mut self, formatter: Arc<dyn Formatter>) -> Result<(), DatastoreError> {
        let name = formatter.name().to_string();
        let bad = |reason: String| DatastoreError::BadFormatter {
            formatter: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty name".into()));
        }
        let ext = formatter.extension();
        let ext_ok = ext.len() <= 32
            && ext
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !ext_ok || ext == "parts.json" || ext.ends_with(".parts.json") {
            return Err(bad(format!(
                "extension `{ext}`: use words of letters and digits joined by `.` (not `parts.json`, the index of a disassembled composite)"
            )));
        }
        let storage_class = formatter.storage_class().to_string();
        quanta_core::validate_storage_class(&storage_class).map_err(|e| bad(e.to_string()))?;
        if self.by_storage_class.contains_key(&storage_class) {
            return Err(bad(format!(
                "storage class `{storage_class}` already has a formatter"
            )));
        }
        if self.by_name.contains_key(&name) {
            return Err(bad("a formatter of that name is already registered".into()));
        }
        self.by_storage_class
            .insert(storage_class, Arc::clone(&formatter));
        self.by_name.insert(name, formatter);
        Ok(())
    }

    pub fn for_storage_class(
        &self,
        storage_class: &str,
    ) -> Result<&Arc<dyn Formatter>, DatastoreError> {
        self.by_storage_class.get(storage_class).ok_or_else(|| {
            DatastoreError::NoFormatterForStorageClass {
                storage_class: storage_class.to_string(),
            }
        })
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn Formatter>> {
        self.by_name.get(name)
    }

    /// The registered storage classes, sorted.
    pub fn storage_classes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_storage_class.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

impl Default for FormatterRegistry {
    /// The built-in Json and Bytes formatters.
    fn default() -> Self {
        let mut r = Self::empty();
        for f in [
            Arc::new(JsonFormatter) as Arc<dyn Formatter>,
            Arc::new(BytesFormatter),
        ] {
            r.register(f)
                .expect("built-in formatters are valid and distinct");
        }
        r
    }
}

impl fmt::Debug for FormatterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormatterRegistry")
            .field("storage_classes", &self.storage_classes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static str, &'static str, &'static str);
    impl Formatter for Fake {
        fn name(&self) -> &str {
            self.0
        }
        fn storage_class(&self) -> &str {
            self.1
        }
        fn extension(&self) -> &str {
            self.2
        }
        fn encode(&self, _: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
            Ok(Vec::new())
        }
        fn decode(&self, _: &[u8]) -> Result<InMemoryDataset, FormatterError> {
            Ok(InMemoryDataset::Other(Box::new(42u32)))
        }
    }

    #[test]
    fn registry_finds_and_refuses_duplicates_and_bad_extensions() {
        let mut r = FormatterRegistry::default();
        assert_eq!(r.storage_classes(), ["Bytes", "Json"]);
        r.register(Arc::new(Fake("FitsFormatter", "Fits", "fits.fz")))
            .unwrap();
        assert_eq!(r.for_storage_class("Fits").unwrap().extension(), "fits.fz");
        assert!(r.by_name("FitsFormatter").is_some());
        let decoded = r.by_name("FitsFormatter").unwrap().decode(b"").unwrap();
        assert_eq!(*decoded.downcast::<u32>().unwrap(), 42);
        assert!(matches!(
            r.for_storage_class("Parquet"),
            Err(DatastoreError::NoFormatterForStorageClass { .. })
        ));
        for (name, sc, ext) in [
            ("Other", "Fits", "fits"),
            ("FitsFormatter", "Fits2", "fits"),
            ("A", "Sc", "../x"),
            ("B", "Sc", "a/b"),
            ("C", "Sc", ".json"),
            ("D", "Sc", ""),
            ("", "Sc", "x"),
            ("E", "", "x"),
        ] {
            assert!(
                r.register(Arc::new(Fake(name, sc, ext))).is_err(),
                "{name} {sc} {ext}"
            );
        }
    }

    #[test]
    fn wrong_dataset_kind_is_a_typed_error() {
        let err = JsonFormatter
            .encode(&InMemoryDataset::Bytes(vec![1]))
            .unwrap_err();
        assert!(matches!(
            err,
            FormatterError::WrongType { got: "Bytes", .. }
        ));
        let err = BytesFormatter
            .encode(&InMemoryDataset::Json(serde_json::json!(1)))
            .unwrap_err();
        assert!(matches!(err, FormatterError::WrongType { got: "Json", .. }));
        assert!(JsonFormatter.decode(b"{not json").is_err());
    }
}
