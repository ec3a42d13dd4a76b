//! Data IDs: dimension name → value labels for datasets and quanta.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::dimensions::{DimensionGroup, DimensionUniverse, FieldType};
use crate::error::CoreError;

/// The value of one dimension key: an integer (`exposure: 12`) or a string
/// (`instrument: Cam`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum DataIdValue {
    Int(i64),
    /// Inline up to 24 bytes (instrument names, bands, filters): no heap
    /// allocation per value.
    Str(CompactString),
}

/// An integer or a string, read by type rather than as serde's untagged
/// enum, which buffers each value and formats an error for every string
/// it first tries as an integer (a registry's data IDs are read by the
/// million).
impl<'de> Deserialize<'de> for DataIdValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DataIdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data ID value (an integer or a string)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DataIdValue, E> {
                Ok(DataIdValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DataIdValue, E> {
                i64::try_from(v).map(DataIdValue::Int).map_err(|_| {
                    E::invalid_value(serde::de::Unexpected::Unsigned(v), &"a 64-bit integer")
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DataIdValue, E> {
                Ok(DataIdValue::Str(CompactString::new(v)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl DataIdValue {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            DataIdValue::Int(i) => Some(*i),
            DataIdValue::Str(_) => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            DataIdValue::Str(s) => Some(s),
            DataIdValue::Int(_) => None,
        }
    }

    /// Parses command-line text (`exposure=12`) according to the key's type.
    pub fn parse_typed(text: &str, field_type: FieldType) -> Result<Self, String> {
        match field_type {
            FieldType::Int => text
                .trim()
                .parse()
                .map(DataIdValue::Int)
                .map_err(|_| format!("`{text}` is not an integer")),
            _ => Ok(DataIdValue::Str(CompactString::new(text))),
        }
    }
}

impl fmt::Display for DataIdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataIdValue::Int(i) => write!(f, "{i}"),
            DataIdValue::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for DataIdValue {
    fn from(v: i64) -> Self {
        DataIdValue::Int(v)
    }
}

impl From<&str> for DataIdValue {
    fn from(v: &str) -> Self {
        DataIdValue::Str(CompactString::new(v))
    }
}

impl From<String> for DataIdValue {
    fn from(v: String) -> Self {
        // `CompactString::from(String)` would keep the heap buffer.
        DataIdValue::Str(CompactString::new(&v))
    }
}

/// A data ID: `{instrument: Cam, exposure: 12, detector: 3}`.
///
/// Once standardized against a universe its keys are exactly a
/// [`DimensionGroup`] in universe order, so two equal data IDs compare equal
/// and hash alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DataId {
    /// Keys are dimension names, short enough to live inline: a graph holds
    /// millions of data IDs, and a heap string per key was a third of
    /// preflight's allocations.
    entries: Vec<(CompactString, DataIdValue)>,
}

impl DataId {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a data ID keeping the given order (use [`DataId::standardize`]
    /// to validate it against a universe).
    pub fn from_pairs<K: AsRef<str>, V: Into<DataIdValue>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (CompactString::new(k.as_ref()), v.into()))
                .collect(),
        }
    }

    /// Parses `k=v,k=v` command-line text, typing values by the universe.
    pub fn parse_cli(text: &str, universe: &DimensionUniverse) -> Result<Self, CoreError> {
        let mut entries = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CoreError::BadDataId(format!("`{part}` is not of the form dimension=value"))
            })?;
            let k = k.trim();
            let dim = universe.dimension(k)?;
            if entries
                .iter()
                .any(|(have, _): &(CompactString, DataIdValue)| have == k)
            {
                return Err(CoreError::BadDataId(format!(
                    "`{text}` gives dimension `{k}` more than once"
                )));
            }
            if v.contains('\0') {
                return Err(CoreError::BadDataId(format!(
                    "{k}: the value contains a NUL character"
                )));
            }
            let t = dim
                .key
                .as_ref()
                .map(|k| k.field_type)
                .unwrap_or(FieldType::String);
            let value = DataIdValue::parse_typed(v.trim(), t)
                .map_err(|e| CoreError::BadDataId(format!("{k}: {e}")))?;
            entries.push((CompactString::new(k), value));
        }
        Ok(Self { entries })
    }

    /// Checks that the keys are exactly `group` (no more, no fewer) with
    /// values of the right types, and puts them in universe order.
    pub fn standardize(
        &self,
        group: &DimensionGroup,
        universe: &DimensionUniverse,
    ) -> Result<DataId, CoreError> {
        self.standardized(group, universe).map(Cow::into_owned)
    }

    /// [`DataId::standardize`] without a copy when the keys already are
    /// exactly `group` in universe order, as in data IDs a bundle or an
    /// earlier standardization produced (the registry's bulk insert path
    /// standardizes every dataset's).
    pub fn standardized(
        &self,
        group: &DimensionGroup,
        universe: &DimensionUniverse,
    ) -> Result<Cow<'_, DataId>, CoreError> {
        let in_order = self.entries.len() == group.len()
            && self
                .entries
                .iter()
                .zip(group.iter())
                .all(|((k, _), dim)| k == dim);
        if in_order {
            for (dim, value) in &self.entries {
                self.check_type(dim, value, universe)?;
            }
            return Ok(Cow::Borrowed(self));
        }
        for (k, _) in &self.entries {
            if !group.contains(k) {
                universe.dimension(k)?;
                return Err(CoreError::BadDataId(format!(
                    "{self}: `{k}` is not one of the dimensions {group}"
                )));
            }
        }
        let mut entries = Vec::with_capacity(group.len());
        for dim in group.iter() {
            let value = self.get(dim).ok_or_else(|| {
                CoreError::BadDataId(format!("{self}: missing a value for `{dim}`"))
            })?;
            self.check_type(dim, value, universe)?;
            entries.push((CompactString::new(dim), value.clone()));
        }
        Ok(Cow::Owned(DataId { entries }))
    }

    fn check_type(
        &self,
        dim: &str,
        value: &DataIdValue,
        universe: &DimensionUniverse,
    ) -> Result<(), CoreError> {
        let ok = match (universe.key_type(dim), value) {
            (FieldType::Int, DataIdValue::Int(_)) => true,
            (FieldType::Int, DataIdValue::Str(_)) => false,
            (_, DataIdValue::Str(_)) => true,
            (_, DataIdValue::Int(_)) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(CoreError::BadDataId(format!(
                "{self}: `{dim}` must be {:?}, got `{value}`",
                universe.key_type(dim)
            )))
        }
    }

    pub fn get(&self, key: &str) -> Option<&DataIdValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of the `index`-th key, in the data ID's order: for
    /// reading many data IDs with the same keys by positions found once.
    pub fn value_at(&self, index: usize) -> Option<&DataIdValue> {
        self.entries.get(index).map(|(_, v)| v)
    }

    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<DataIdValue>) {
        let key = key.as_ref();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((CompactString::new(key), value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &DataIdValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The values for `group`'s dimensions, if all are present: the data ID
    /// projected onto a smaller group (a quantum's data ID → an output's).
    pub fn project(&self, group: &DimensionGroup) -> Option<DataId> {
        let mut entries = Vec::with_capacity(group.len());
        for dim in group.iter() {
            entries.push((CompactString::new(dim), self.get(dim)?.clone()));
        }
        Some(DataId { entries })
    }

    /// An unambiguous text key (a JSON array of the values in key order),
    /// used for uniqueness in the registry.
    pub fn canonical_key(&self) -> String {
        // Hand-written rather than through serde_json: this runs once per
        // dataset on the registry's bulk insert path.
        let mut key = String::with_capacity(8 * self.entries.len() + 2);
        key.push('[');
        for (i, (_, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            push_json_value(&mut key, v);
        }
        key.push(']');
        key
    }

    /// The data ID as a JSON object (`{"instrument":"Cam","detector":1}`),
    /// exactly as `serde_json::to_string` writes it, without its
    /// per-value dispatch: the registry stores one per quantum.
    pub fn to_json(&self) -> String {
        let mut json = String::with_capacity(24 * self.entries.len() + 2);
        json.push('{');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            push_json_str(&mut json, k);
            json.push(':');
            push_json_value(&mut json, v);
        }
        json.push('}');
        json
    }
}

fn push_json_value(out: &mut String, value: &DataIdValue) {
    match value {
        DataIdValue::Int(n) => out.push_str(itoa::Buffer::new().format(*n)),
        DataIdValue::Str(s) => push_json_str(out, s),
    }
}

/// Appends `s` as a JSON string, as serde_json writes it.
fn push_json_str(out: &mut String, s: &str) {
    // The characters JSON requires escaped; anything else is copied as is.
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = serde_json::to_writer(string_sink(out), s);
    }
}

/// Adapts a `String` as an `io::Write` sink for serde_json, which only ever
/// writes valid UTF-8.
fn string_sink(s: &mut String) -> impl std::io::Write + '_ {
    struct W<'a>(&'a mut String);
    impl std::io::Write for W<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
            self.0.push_str(text);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    W(s)
}

impl fmt::Display for DataId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                DataIdValue::Int(n) => write!(f, "{k}: {n}")?,
                DataIdValue::Str(s) => write!(f, "{k}: {s:?}")?,
            }
        }
        f.write_str("}")
    }
}

impl Serialize for DataId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DataId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DataId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of dimension names to int or string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DataId, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<CompactString, DataIdValue>()? {
                    entries.push((k, v));
                }
                Ok(DataId { entries })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardize_orders_checks_types_and_keys() {
        let u = DimensionUniverse::default_universe();
        let g = u.conform(&["exposure", "detector"]).unwrap();
        let raw = DataId::from_pairs([
            ("detector", DataIdValue::Int(3)),
            ("exposure", DataIdValue::Int(12)),
            ("instrument", DataIdValue::from("Cam")),
        ]);
        let std = raw.standardize(&g, &u).unwrap();
        assert_eq!(
            std.to_string(),
            r#"{instrument: "Cam", detector: 3, exposure: 12}"#
        );
        assert_eq!(std.canonical_key(), r#"["Cam",3,12]"#);

        let wrong_type = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("exposure", DataIdValue::from("twelve")),
            ("detector", DataIdValue::Int(3)),
        ]);
        assert!(wrong_type.standardize(&g, &u).is_err());
        let missing = DataId::from_pairs([("instrument", "Cam")]);
        assert!(missing
            .standardize(&g, &u)
            .unwrap_err()
            .to_string()
            .contains("detector"));
    }

    #[test]
    fn a_standard_data_id_is_checked_in_place_and_any_other_is_reordered() {
        let u = DimensionUniverse::default_universe();
        let g = u.conform(&["exposure", "detector"]).unwrap();
        let standard = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(3)),
            ("exposure", DataIdValue::Int(12)),
        ]);
        assert!(matches!(
            standard.standardized(&g, &u).unwrap(),
            Cow::Borrowed(d) if d == &standard
        ));
        let shuffled = DataId::from_pairs([
            ("exposure", DataIdValue::Int(12)),
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::Int(3)),
        ]);
        assert!(matches!(
            shuffled.standardized(&g, &u).unwrap(),
            Cow::Owned(d) if d == standard
        ));
        // The in-place path still checks the value types.
        let in_order_wrong_type = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("detector", DataIdValue::from("three")),
            ("exposure", DataIdValue::Int(12)),
        ]);
        let err = in_order_wrong_type.standardized(&g, &u).unwrap_err();
        assert!(err.to_string().contains("`detector` must be"), "{err}");
    }

    #[test]
    fn json_text_and_keys_are_what_serde_json_writes() {
        let awkward = [
            "Cam",
            "",
            "quote \" and backslash \\",
            "tab\tnew line\ncontrol \u{1}",
            "é/ünïcode ✓",
        ];
        for s in awkward {
            let d = DataId::from_pairs([
                ("instrument", DataIdValue::from(s)),
                ("exposure", DataIdValue::Int(i64::MIN)),
                ("detector", DataIdValue::Int(-7)),
            ]);
            assert_eq!(d.to_json(), serde_json::to_string(&d).unwrap(), "{s:?}");
            let values: Vec<serde_json::Value> = vec![s.into(), i64::MIN.into(), (-7).into()];
            assert_eq!(
                d.canonical_key(),
                serde_json::to_string(&values).unwrap(),
                "{s:?}"
            );
        }
        assert_eq!(DataId::empty().to_json(), "{}");
        assert_eq!(DataId::empty().canonical_key(), "[]");
    }

    #[test]
    fn parse_cli_types_values() {
        let u = DimensionUniverse::default_universe();
        let d = DataId::parse_cli("instrument=Cam,exposure=3,detector=4", &u).unwrap();
        assert_eq!(d.get("exposure"), Some(&DataIdValue::Int(3)));
        assert!(DataId::parse_cli("exposure=x", &u).is_err());
        assert!(DataId::parse_cli("nonsense=1", &u).is_err());
    }

    #[test]
    fn json_round_trip() {
        let d = DataId::from_pairs([
            ("instrument", DataIdValue::from("Cam")),
            ("exposure", DataIdValue::Int(1)),
        ]);
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(text, r#"{"instrument":"Cam","exposure":1}"#);
        assert_eq!(serde_json::from_str::<DataId>(&text).unwrap(), d);
    }

    #[test]
    fn values_read_by_their_json_type() {
        let values: Vec<DataIdValue> =
            serde_json::from_str(r#"["Cam", 12, -7, "3", 9223372036854775807]"#).unwrap();
        assert_eq!(
            values,
            [
                DataIdValue::from("Cam"),
                DataIdValue::Int(12),
                DataIdValue::Int(-7),
                DataIdValue::from("3"),
                DataIdValue::Int(i64::MAX),
            ]
        );
        for bad in ["9223372036854775808", "1.5", "null", "true", "[1]"] {
            let err = serde_json::from_str::<DataIdValue>(bad).unwrap_err();
            assert!(
                err.to_string().contains("integer"),
                "{bad}: {err} should say what a value may be"
            );
        }
    }
}
