//! File templates: where in the datastore a dataset's file goes.
//!
//! A template is text such as
//! `{run}/{datasetType}/{visit?}/{datasetType}_{detector?}_{id}` with fields
//! `{run}`, `{datasetType}`, `{id}` (the dataset UUID) and any data ID key.
//! A `?` marks an optional field: when the data ID lacks it the field is
//! dropped together with the `_`, `-`, `.` or `/` written just before it. The
//! formatter adds the extension.
//!
//! Path safety does not depend on the values being well behaved: every value
//! is encoded (see [`encode_path_component`]) so that it is exactly one
//! harmless path component, and the finished path is checked again by
//! [`validate_relative_path`] before any file is touched.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

use quanta_core::{DataIdValue, DatasetRef};

use crate::error::DatastoreError;

/// The default template. Directories group datasets by the dimensions that
/// keep directory sizes reasonable (never one directory per detector); the
/// file name repeats the common dimensions for humans, and `{id}` makes every
/// path unique whatever dimensions a dataset type has, including dimensions of
/// custom universes that the template does not mention.
pub const DEFAULT_TEMPLATE: &str = "{run}/{datasetType}/{tract?}/{patch?}/{band?}/{day_obs?}/\
{physical_filter?}/{visit?}/{exposure?}/{datasetType}_{band?}_{instrument?}_{skymap?}_{tract?}_\
{patch?}_{detector?}_{physical_filter?}_{visit?}_{exposure?}_{id}";

/// Longest path component written. Longer ones are cut and suffixed with a
/// hash so that a huge data ID value still gives a usable file name; 200
/// leaves room for an extension under the usual 255-byte `NAME_MAX`.
pub const MAX_COMPONENT_BYTES: usize = 200;
/// Longest encoded RUN kept as a directory tree.
pub const MAX_RUN_BYTES: usize = 512;
/// Longest relative path accepted (below the usual 4096-byte `PATH_MAX`, to
/// leave room for the root).
pub const MAX_RELATIVE_PATH_BYTES: usize = 3072;
/// Marks a shortened component; never produced by [`encode_path_component`]
/// nor allowed in template text, so a shortened name cannot equal a normal one.
const SHORTENED_MARK: char = '~';
const SEPARATORS: [char; 4] = ['_', '-', '.', '/'];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Field { name: String, optional: bool },
}

/// A parsed and validated file template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTemplate {
    text: String,
    tokens: Vec<Token>,
    /// Whether a required `{id}` makes every rendered path unique by itself.
    has_id: bool,
}

impl FileTemplate {
    /// Parses `text`, refusing unbalanced or nested braces, empty or
    /// malformed field names, unsafe literal text, and templates that cannot
    /// give unique paths (neither `{id}` nor both `{run}` and
    /// `{datasetType}` as required fields).
    pub fn parse(text: &str) -> Result<Self, DatastoreError> {
        let bad = |reason: String| DatastoreError::BadTemplate {
            template: text.to_string(),
            reason,
        };
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' => {
                    let mut field = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => {
                                return Err(bad(format!("nested `{{` in the field at byte {pos}")))
                            }
                            c => field.push(c),
                        }
                    }
                    if !closed {
                        return Err(bad(format!("the `{{` at byte {pos} is never closed")));
                    }
                    let (name, optional) = match field.strip_suffix('?') {
                        Some(n) => (n, true),
                        None => (field.as_str(), false),
                    };
                    if !is_field_name(name) {
                        return Err(bad(format!(
                            "`{{{field}}}` is not a field: use `{{name}}` or `{{name?}}` with a \
                             name of letters, digits and `_`"
                        )));
                    }
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    tokens.push(Token::Field {
                        name: name.to_string(),
                        optional,
                    });
                }
                '}' => return Err(bad(format!("unbalanced `}}` at byte {pos}"))),
                c if c.is_ascii_alphanumeric()
                    || matches!(c, '_' | '-' | '.' | '/' | '+' | '=') =>
                {
                    literal.push(c)
                }
                c => {
                    return Err(bad(format!(
                        "character {c:?} at byte {pos}: template text may only use letters, \
                         digits and `_ - . / + =`"
                    )))
                }
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }

        if text.starts_with('/') {
            return Err(bad("must be relative (no leading `/`)".into()));
        }
        if text.ends_with('/') {
            return Err(bad("must end with a file name, not `/`".into()));
        }
        if text.contains("//") {
            return Err(bad("contains an empty path component (`//`)".into()));
        }
        // A component that starts with literal `.` could be `..`, hidden, or
        // collide with the datastore's temporary files.
        let mut at_component_start = true;
        for token in &tokens {
            match token {
                Token::Literal(s) => {
                    for (i, part) in s.split('/').enumerate() {
                        if (i > 0 || at_component_start) && part.starts_with('.') {
                            return Err(bad(format!(
                                "a path component may not start with `.` (`{part}`)"
                            )));
                        }
                    }
                    at_component_start = s.ends_with('/');
                }
                Token::Field { .. } => at_component_start = false,
            }
        }

        let required = |want: &str| {
            tokens
                .iter()
                .any(|t| matches!(t, Token::Field { name, optional: false } if name == want))
        };
        let has_id = required("id");
        let unique_without_id = required("run") && required("datasetType");
        if !(has_id || unique_without_id) {
            return Err(bad(
                "paths would not be unique: use a required `{id}`, or both `{run}` and \
                 `{datasetType}`"
                    .into(),
            ));
        }
        Ok(Self {
            text: text.to_string(),
            tokens,
            has_id,
        })
    }

    /// The template text as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The field names used, in order (with repeats), for callers that want
    /// to check them against a dimension universe.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Field { name, .. } => Some(name.as_str()),
            Token::Literal(_) => None,
        })
    }

    /// The relative path (without extension, `/`-separated) for `r`.
    ///
    /// Without `{id}` every data ID key must appear in the template, so that
    /// the path is unique per run, dataset type and data ID.
    pub fn render(&self, r: &DatasetRef) -> Result<String, DatastoreError> {
        let fail = |reason: String| DatastoreError::Render {
            dataset: r.to_string(),
            template: self.text.clone(),
            reason,
        };
        if !self.has_id {
            if let Some(key) = r.data_id.keys().find(|k| !self.fields().any(|f| f == *k)) {
                return Err(fail(format!(
                    "the template has no `{{id}}` and does not use the data ID key `{key}`, so \
                     paths would not be unique"
                )));
            }
        }

        let mut out = String::with_capacity(self.text.len() + 64);
        // Separators are only dropped when they came from template text, never
        // from a value.
        let mut ends_with_literal = false;
        let mut drop_next_separator = false;
        for token in &self.tokens {
            match token {
                Token::Literal(s) => {
                    let mut s = s.as_str();
                    if drop_next_separator {
                        if let Some(rest) = s.strip_prefix(SEPARATORS) {
                            s = rest;
                        }
                        drop_next_separator = false;
                    }
                    if !s.is_empty() {
                        out.push_str(s);
                        ends_with_literal = true;
                    }
                }
                Token::Field { name, optional } => match field_value(r, name) {
                    Some(value) => {
                        out.push_str(&value);
                        ends_with_literal = false;
                        drop_next_separator = false;
                    }
                    None if *optional => {
                        if out.is_empty() {
                            drop_next_separator = true;
                        } else if ends_with_literal && out.ends_with(SEPARATORS) {
                            out.pop();
                            ends_with_literal = false;
                        }
                    }
                    None => return Err(fail(format!("the data ID has no value for `{name}`"))),
                },
            }
        }

        let mut path = String::with_capacity(out.len());
        for (i, component) in out.split('/').enumerate() {
            if component.is_empty() {
                return Err(fail(format!("the path `{out}` has an empty component")));
            }
            if i > 0 {
                path.push('/');
            }
            path.push_str(&shorten_component(component));
        }
        validate_relative_path(&path).map_err(|e| fail(e.to_string()))?;
        Ok(path)
    }
}

fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The encoded value of one field, `None` when the data ID lacks it.
fn field_value<'a>(r: &'a DatasetRef, name: &str) -> Option<Cow<'a, str>> {
    match name {
        "run" => Some(Cow::Owned(encode_run(&r.run))),
        "datasetType" => Some(encode_path_component(&r.dataset_type)),
        "id" => Some(Cow::Owned(r.id.hyphenated().to_string())),
        key => r.data_id.get(key).map(|v| match v {
            DataIdValue::Int(i) => Cow::Owned(i.to_string()),
            DataIdValue::Str(s) => encode_path_component(s),
        }),
    }
}

/// Encodes a value as exactly one safe path component: `[A-Za-z0-9._-]` are
/// kept, every other byte becomes `%XX` (so `/` is `%2F`, NUL `%00`), a
/// leading `.` becomes `%2E` (no `.`, `..` or hidden names), and the empty
/// value becomes `%` (which no non-empty value encodes to).
pub fn encode_path_component(value: &str) -> Cow<'_, str> {
    if value.is_empty() {
        return Cow::Borrowed("%");
    }
    let keep = |i: usize, b: u8| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0)
    };
    if value.bytes().enumerate().all(|(i, b)| keep(i, b)) {
        return Cow::Borrowed(value);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() + 8);
    for (i, b) in value.bytes().enumerate() {
        if keep(i, b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    Cow::Owned(out)
}

/// Encodes a RUN name: `/` stays a directory separator (`u/alice/run1` is
/// three directories) and each segment is encoded like any value. A run
/// whose encoding would exceed [`MAX_RUN_BYTES`] (far beyond valid collection
/// names) becomes one shortened component, so it cannot blow the path length.
pub fn encode_run(run: &str) -> String {
    let mut out = String::with_capacity(run.len() + 8);
    for (i, segment) in run.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&encode_path_component(segment));
    }
    if out.len() > MAX_RUN_BYTES {
        return shorten_forced(&encode_path_component(run));
    }
    out
}

fn shorten_component(component: &str) -> Cow<'_, str> {
    if component.len() <= MAX_COMPONENT_BYTES {
        return Cow::Borrowed(component);
    }
    Cow::Owned(shorten_forced(component))
}

/// A readable prefix, [`SHORTENED_MARK`] and 16 hex digits of BLAKE3 of the
/// whole component.
fn shorten_forced(component: &str) -> String {
    // Keep the prefix without splitting a `%XX` escape or a character.
    let mut cut = (MAX_COMPONENT_BYTES - 1 - 16).min(component.len());
    while !component.is_char_boundary(cut) {
        cut -= 1;
    }
    let bytes = component.as_bytes();
    if cut >= 1 && bytes[cut - 1] == b'%' {
        cut -= 1;
    } else if cut >= 2 && bytes[cut - 2] == b'%' {
        cut -= 2;
    }
    let digest = quanta_core::hash::blake3_hex(component.as_bytes());
    format!("{}{SHORTENED_MARK}{}", &component[..cut], &digest[..16])
}

/// Checks, on the text alone, that `path` is a safe path relative to the
/// datastore root: not empty or absolute, no empty, `.`, `..` or
/// dot-prefixed component (those also keep clear of temporary files), no NUL
/// or backslash, and not over the length limits.
pub fn validate_relative_path(path: &str) -> Result<(), DatastoreError> {
    let unsafe_path = |reason: &str| DatastoreError::UnsafePath {
        path: path.escape_debug().to_string(),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(unsafe_path("empty"));
    }
    if path.len() > MAX_RELATIVE_PATH_BYTES {
        return Err(unsafe_path("too long"));
    }
    if path.contains(['\0', '\\']) {
        return Err(unsafe_path("contains NUL or backslash"));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("absolute"));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(unsafe_path("empty component"));
        }
        if component.starts_with('.') {
            return Err(unsafe_path("a component starts with `.`"));
        }
        if component.len() > 255 {
            return Err(unsafe_path("a component is longer than 255 bytes"));
        }
    }
    // Belt and braces: the platform's own reading of the path. On Unix the
    // checks above already leave only plain components (and this runs per
    // file on merge's verification path, where it cost as much as the
    // checks), elsewhere a path may have prefixes they do not know.
    if cfg!(not(unix))
        && !Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(unsafe_path("not a plain relative path"));
    }
    Ok(())
}

/// Whether a recorded file path is *direct*: the absolute path of a file
/// outside the datastore, recorded by a `direct` ingest or import (LSST's
/// transfer mode of that name). The datastore reads such a file where it
/// is and never writes, moves or removes it; every other recorded path is
/// relative to the root and the datastore's own.
pub fn is_direct_path(path: &str) -> bool {
    path.starts_with('/')
}

/// Checks, on the text alone, that `path` is a usable direct path
/// ([`is_direct_path`]): absolute, normalized (no empty, `.` or `..`
/// component), no NUL or backslash, within the platform's length limit.
pub fn validate_direct_path(path: &str) -> Result<(), DatastoreError> {
    let unsafe_path = |reason: &str| DatastoreError::UnsafePath {
        path: path.escape_debug().to_string(),
        reason: reason.to_string(),
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(unsafe_path("a direct path must be absolute"));
    };
    if path.len() > MAX_DIRECT_PATH_BYTES {
        return Err(unsafe_path("too long"));
    }
    if path.contains(['\0', '\\']) {
        return Err(unsafe_path("contains NUL or backslash"));
    }
    for component in rest.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(unsafe_path("not a normalized absolute path"));
        }
        if component.len() > 255 {
            return Err(unsafe_path("a component is longer than 255 bytes"));
        }
    }
    Ok(())
}

/// Linux's `PATH_MAX`, counting the terminating NUL.
const MAX_DIRECT_PATH_BYTES: usize = 4095;

/// The default template plus per-dataset-type overrides.
#[derive(Debug, Clone)]
pub struct FileTemplates {
    default: FileTemplate,
    overrides: HashMap<String, FileTemplate>,
}

impl FileTemplates {
    /// Parses and validates every template.
    pub fn new(
        default: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, DatastoreError> {
        let default = FileTemplate::parse(default)?;
        let overrides = overrides
            .iter()
            .map(|(name, text)| {
                FileTemplate::parse(text)
                    .map(|t| (name.clone(), t))
                    .map_err(|e| match e {
                        DatastoreError::BadTemplate { template, reason } => {
                            DatastoreError::BadTemplate {
                                template,
                                reason: format!("(for dataset type `{name}`) {reason}"),
                            }
                        }
                        other => other,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { default, overrides })
    }

    /// The template for a dataset type: its own override, else that of its
    /// parent for a component (`calexp.wcs` → `calexp`), else the default.
    pub fn for_dataset_type(&self, name: &str) -> &FileTemplate {
        let mut candidate = name;
        loop {
            if let Some(t) = self.overrides.get(candidate) {
                return t;
            }
            match candidate.rsplit_once('.') {
                Some((parent, _)) => candidate = parent,
                None => return &self.default,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quanta_core::{DataId, Uuid};

    fn dataset(ty: &str, run: &str, pairs: &[(&str, DataIdValue)]) -> DatasetRef {
        DatasetRef {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            dataset_type: ty.to_string(),
            data_id: DataId::from_pairs(pairs.iter().cloned()),
            run: run.to_string(),
        }
    }

    const ID: &str = "01234567-89ab-cdef-0123-456789abcdef";

    #[test]
    fn renders_required_and_optional_fields() {
        let t = FileTemplate::parse(
            "{run}/{datasetType}/{instrument}/{exposure}/{datasetType}_{instrument}_{exposure}_{detector?}_{id}",
        )
        .unwrap();
        let with = dataset(
            "raw",
            "Cam/raw/all",
            &[
                ("instrument", "Cam".into()),
                ("exposure", 12.into()),
                ("detector", 3.into()),
            ],
        );
        assert_eq!(
            t.render(&with).unwrap(),
            format!("Cam/raw/all/raw/Cam/12/raw_Cam_12_3_{ID}")
        );
        let without = dataset(
            "raw",
            "r",
            &[("instrument", "Cam".into()), ("exposure", 12.into())],
        );
        assert_eq!(
            t.render(&without).unwrap(),
            format!("r/raw/Cam/12/raw_Cam_12_{ID}")
        );
    }

    #[test]
    fn optional_fields_drop_their_separator_anywhere() {
        let t = FileTemplate::parse("{a?}/{b?}/{run}/{c?}/{datasetType}_{d?}-{e?}_{id}").unwrap();
        let none = dataset("x", "r", &[]);
        assert_eq!(t.render(&none).unwrap(), format!("r/x_{ID}"));
        let all = dataset(
            "x",
            "r",
            &[
                ("a", 1.into()),
                ("b", 2.into()),
                ("c", 3.into()),
                ("d", 4.into()),
                ("e", 5.into()),
            ],
        );
        assert_eq!(t.render(&all).unwrap(), format!("1/2/r/3/x_4-5_{ID}"));
        let some = dataset("x", "r", &[("b", 2.into()), ("e", 5.into())]);
        assert_eq!(t.render(&some).unwrap(), format!("2/r/x-5_{ID}"));
    }

    #[test]
    fn separator_inside_a_value_is_never_dropped() {
        let t = FileTemplate::parse("{run}/{datasetType}_{v}{w?}_{id}").unwrap();
        let d = dataset("x", "r", &[("v", "a-".into())]);
        assert_eq!(t.render(&d).unwrap(), format!("r/x_a-_{ID}"));
    }

    #[test]
    fn missing_required_field_is_an_error_naming_it() {
        let t = FileTemplate::parse("{run}/{datasetType}/{visit}_{id}").unwrap();
        let err = t
            .render(&dataset("calexp", "r", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`visit`") && err.contains("calexp"), "{err}");
    }

    #[test]
    fn default_template_works_for_any_data_id() {
        let t = FileTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            t.render(&dataset("summary", "r", &[])).unwrap(),
            format!("r/summary/summary_{ID}")
        );
        let d = dataset(
            "calexp",
            "u/a/run1",
            &[
                ("instrument", "Cam".into()),
                ("visit", 7.into()),
                ("detector", 3.into()),
                ("custom", "q".into()),
            ],
        );
        assert_eq!(
            t.render(&d).unwrap(),
            format!("u/a/run1/calexp/7/calexp_Cam_3_7_{ID}")
        );
    }

    #[test]
    fn invalid_templates_are_refused() {
        for bad in [
            "{run}/{datasetType}/{id",
            "{run}/{datasetType}/id}",
            "{run}/{{datasetType}}_{id}",
            "{run}/{}_{id}",
            "{run}/{data set}_{id}",
            "{run}/{9x}_{id}",
            "/{run}/{id}",
            "{run}/{id}/",
            "{run}//{id}",
            "{run}/../{id}",
            "{run}/.hidden_{id}",
            "{run}/a b_{id}",
            "{run}/x\\{id}",
            "{run}/{datasetType?}_{visit}",
            "{visit}_{detector}",
            "",
        ] {
            let err = FileTemplate::parse(bad);
            assert!(
                matches!(err, Err(DatastoreError::BadTemplate { .. })),
                "{bad:?} gave {err:?}"
            );
        }
        assert!(
            FileTemplate::parse("{run}/{datasetType}/visit={visit}/{datasetType}.v1_{id}").is_ok()
        );
    }

    #[test]
    fn templates_without_id_must_use_every_data_id_key() {
        let t = FileTemplate::parse("{run}/{datasetType}/{exposure}").unwrap();
        assert_eq!(
            t.render(&dataset("raw", "r", &[("exposure", 1.into())]))
                .unwrap(),
            "r/raw/1"
        );
        let err = t
            .render(&dataset(
                "raw",
                "r",
                &[("exposure", 1.into()), ("detector", 2.into())],
            ))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`detector`"), "{err}");
    }

    #[test]
    fn overrides_apply_to_their_type_and_its_components() {
        let overrides = BTreeMap::from([(
            "calexp".to_string(),
            "{run}/special/{datasetType}_{id}".to_string(),
        )]);
        let ts = FileTemplates::new(DEFAULT_TEMPLATE, &overrides).unwrap();
        assert_eq!(
            ts.for_dataset_type("calexp").as_str(),
            "{run}/special/{datasetType}_{id}"
        );
        assert_eq!(
            ts.for_dataset_type("calexp.wcs").as_str(),
            "{run}/special/{datasetType}_{id}"
        );
        assert_eq!(ts.for_dataset_type("raw").as_str(), DEFAULT_TEMPLATE);
        let bad = BTreeMap::from([("raw".to_string(), "{run".to_string())]);
        let err = FileTemplates::new(DEFAULT_TEMPLATE, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`raw`"), "{err}");
    }

    #[test]
    fn encoding_keeps_safe_bytes_and_escapes_the_rest() {
        assert_eq!(encode_path_component("HSC-R2_x.y"), "HSC-R2_x.y");
        assert_eq!(encode_path_component("a/b"), "a%2Fb");
        assert_eq!(encode_path_component("."), "%2E");
        assert_eq!(encode_path_component(".."), "%2E.");
        assert_eq!(encode_path_component(".git"), "%2Egit");
        assert_eq!(encode_path_component("a\0b"), "a%00b");
        assert_eq!(encode_path_component("é"), "%C3%A9");
        assert_eq!(encode_path_component("%"), "%25");
        assert_eq!(encode_path_component(""), "%");
        assert_eq!(encode_run("u/alice/../x"), "u/alice/%2E./x");
        assert_eq!(encode_run("/abs"), "%/abs");
        let deep = encode_run(&"/..".repeat(500));
        assert!(
            !deep.contains('/')
                && deep.contains(SHORTENED_MARK)
                && deep.len() <= MAX_COMPONENT_BYTES
        );
        let many_small = encode_run(&"a/".repeat(300));
        assert!(!many_small.contains('/') && many_small.contains(SHORTENED_MARK));
    }

    #[test]
    fn long_values_are_shortened_distinctly() {
        let t = FileTemplate::parse("{run}/{datasetType}/{v}/{datasetType}_{id}").unwrap();
        let a = t
            .render(&dataset("x", "r", &[("v", "a".repeat(5000).into())]))
            .unwrap();
        let b = t
            .render(&dataset(
                "x",
                "r",
                &[("v", format!("{}b", "a".repeat(4999)).into())],
            ))
            .unwrap();
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.split('/').all(|c| c.len() <= MAX_COMPONENT_BYTES), "{p}");
            assert!(p.contains(SHORTENED_MARK));
        }
        // A cut never splits an escape.
        let c = t
            .render(&dataset("x", "r", &[("v", "/".repeat(500).into())]))
            .unwrap();
        let dir = c.split('/').nth(2).unwrap();
        let (prefix, _) = dir.split_once(SHORTENED_MARK).unwrap();
        assert!(
            prefix.len() % 3 == 0
                && prefix
                    .chars()
                    .collect::<Vec<_>>()
                    .chunks(3)
                    .all(|c| c == ['%', '2', 'F'])
        );
    }

    #[test]
    fn relative_path_validation() {
        assert!(validate_relative_path("a/b/c.json").is_ok());
        for bad in [
            "", "/a", "a//b", "a/./b", "a/../b", "..", ".", "a/.tmp-1", "a\\b", "a\0b", "a/",
        ] {
            assert!(validate_relative_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_relative_path(&"a/".repeat(2000)).is_err());
        assert!(validate_relative_path(&"a".repeat(256)).is_err());
    }
}
