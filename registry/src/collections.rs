//! Collections: RUN, TAGGED, CHAINED (nested search paths) and CALIBRATION.

use quanta_core::{validate_collection_name, CollectionType};
use serde::Serialize;

use crate::database::{Database, Row};
use crate::dialect::Parameters;
use crate::error::{RegistryError, Result};
use crate::registry::Registry;

/// A collection as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionRecord {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub collection_type: CollectionType,
    pub doc: Option<String>,
    /// For CHAINED collections, the direct children in search order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// How the datasets of one collection are found in SQL: the one place that
/// decides, per collection type, which table says a dataset is in a
/// collection. A search joins [`Membership::from`] and constrains
/// [`Membership::collection_column`] and [`Membership::type_column`]; the
/// dataset's own columns are always under the alias `d`, membership rows
/// (tags, certifications) under `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Membership {
    /// FROM items: `dataset AS d`, joined from the membership table where
    /// there is one.
    pub(crate) from: &'static str,
    /// The column that holds the collection's id.
    pub(crate) collection_column: &'static str,
    /// The column that holds the dataset type's id (a membership table
    /// carries it, so that its index serves the search).
    pub(crate) type_column: &'static str,
    /// The column that holds the data ID's canonical key.
    pub(crate) data_id_column: &'static str,
    /// The validity range's `[begin, end)` columns: a dataset is only in
    /// such a collection at a time.
    pub(crate) validity: Option<(&'static str, &'static str)>,
    /// Whether one dataset can be several rows of the membership: a RUN
    /// holds a dataset once (the dataset's own row) and a TAGGED
    /// collection once (its primary key), a CALIBRATION once per
    /// validity range it is certified for.
    pub(crate) may_repeat: bool,
}

impl Membership {
    /// How the datasets of a collection of `collection_type` are found;
    /// `None` for a CHAINED collection, which holds none of its own (its
    /// children are searched instead, see
    /// [`Registry::resolve_search_path`]).
    pub(crate) fn of(collection_type: CollectionType) -> Option<Self> {
        match collection_type {
            CollectionType::Run => Some(Self {
                from: "dataset AS d",
                collection_column: "d.run_id",
                type_column: "d.dataset_type_id",
                data_id_column: "d.data_id",
                validity: None,
                may_repeat: false,
            }),
            CollectionType::Tagged => Some(Self {
                from: "dataset_tags AS m JOIN dataset AS d ON d.id = m.dataset_id",
                collection_column: "m.collection_id",
                type_column: "m.dataset_type_id",
                data_id_column: "m.data_id",
                validity: None,
                may_repeat: false,
            }),
            CollectionType::Calibration => Some(Self {
                from: "dataset_calibs AS m JOIN dataset AS d ON d.id = m.dataset_id",
                collection_column: "m.collection_id",
                type_column: "m.dataset_type_id",
                data_id_column: "m.data_id",
                validity: Some(("m.valid_begin", "m.valid_end")),
                may_repeat: true,
            }),
            CollectionType::Chained => None,
        }
    }

    /// The conditions selecting the datasets of one type in one collection,
    /// their ids bound in `params`.
    pub(crate) fn conditions(
        &self,
        params: &mut Parameters,
        dataset_type_id: i64,
        collection_id: i64,
    ) -> String {
        format!(
            "{} = {} AND {} = {}",
            self.type_column,
            params.bind(dataset_type_id.into()),
            self.collection_column,
            params.bind(collection_id.into())
        )
    }
}

/// A `collection` row (`id, name, type, doc`), without its children.
fn collection_row(r: &Row<'_>) -> Result<CollectionRecord> {
    let name: String = r.get(1)?;
    let type_text: String = r.get(2)?;
    let collection_type = type_text.parse().map_err(|_| {
        RegistryError::Invalid(format!(
            "collection `{name}` has the unknown type `{type_text}` in the registry"
        ))
    })?;
    Ok(CollectionRecord {
        id: r.get(0)?,
        name,
        collection_type,
        doc: r.get(3)?,
        children: Vec::new(),
    })
}

/// Writes the children of the CHAINED collection `parent_id` in search
/// order (in the caller's transaction, after any previous chain is gone).
pub(crate) fn insert_chain(db: &Database, parent_id: i64, child_ids: &[i64]) -> Result<()> {
    for (position, child_id) in child_ids.iter().enumerate() {
        db.execute(
            "INSERT INTO collection_chain (parent_id, position, child_id) VALUES (?1, ?2, ?3)",
            &[&parent_id, &(position as i64), child_id],
        )?;
    }
    Ok(())
}

impl Registry {
    /// Registers a collection. Registering an existing one of the same type
    /// is a no-op (returns `false`); of another type, an error.
    pub fn register_collection(
        &mut self,
        name: &str,
        collection_type: CollectionType,
        doc: Option<&str>,
    ) -> Result<bool> {
        validate_collection_name(name)?;
        if let Some(existing) = self.find_collection(name)? {
            if existing.collection_type == collection_type {
                return Ok(false);
            }
            return Err(RegistryError::CollectionConflict(name.to_string()));
        }
        self.db.execute(
            "INSERT INTO collection (name, type, doc) VALUES (?1, ?2, ?3)",
            &[&name, &collection_type.as_str(), &doc],
        )?;
        Ok(true)
    }

    pub fn find_collection(&self, name: &str) -> Result<Option<CollectionRecord>> {
        let row = self.db.query_row(
            "SELECT id, name, type, doc FROM collection WHERE name = ?1",
            &[&name],
            collection_row,
        )?;
        match row {
            Some(mut record) => {
                if record.collection_type == CollectionType::Chained {
                    record.children = self.chain_children(record.id)?;
                }
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    pub fn collection(&self, name: &str) -> Result<CollectionRecord> {
        self.find_collection(name)?
            .ok_or_else(|| RegistryError::UnknownCollection(name.to_string()))
    }

    /// The collection, which must be of the given type.
    pub fn collection_of_type(
        &self,
        name: &str,
        wanted: CollectionType,
    ) -> Result<CollectionRecord> {
        let record = self.collection(name)?;
        if record.collection_type != wanted {
            return Err(RegistryError::WrongCollectionType {
                name: name.to_string(),
                actual: record.collection_type.to_string(),
                wanted: wanted.to_string(),
            });
        }
        Ok(record)
    }

    fn chain_children(&self, parent_id: i64) -> Result<Vec<String>> {
        self.db.query_rows(
            "SELECT c.name FROM collection_chain ch JOIN collection c ON c.id = ch.child_id \
             WHERE ch.parent_id = ?1 ORDER BY ch.position",
            &[&parent_id],
            |r| r.get(0),
        )
    }

    /// All collections, by name.
    pub fn list_collections(&self) -> Result<Vec<CollectionRecord>> {
        let names: Vec<String> =
            self.db
                .query_rows("SELECT name FROM collection ORDER BY name", &[], |r| {
                    r.get(0)
                })?;
        names.iter().map(|n| self.collection(n)).collect()
    }

    /// Creates the CHAINED collection `parent` if it does not exist and
    /// sets its children, all or nothing: when a child is unknown or would
    /// make a cycle, no collection is created.
    pub fn define_collection_chain(&mut self, parent: &str, children: &[String]) -> Result<()> {
        validate_collection_name(parent)?;
        if let Some(existing) = self.find_collection(parent)? {
            if existing.collection_type != CollectionType::Chained {
                return Err(RegistryError::CollectionConflict(parent.to_string()));
            }
            return self.set_collection_chain(parent, children);
        }
        // A new parent is in no chain yet, so no child can lead back to it.
        let child_ids = children
            .iter()
            .map(|child| Ok(self.collection(child)?.id))
            .collect::<Result<Vec<i64>>>()?;
        let tx = self.db.transaction()?;
        let parent_id = tx
            .prepare_keyed_insert(
                "INSERT INTO collection (name, type, doc) VALUES (?1, ?2, NULL)",
                "id",
            )?
            .insert(&[&parent, &CollectionType::Chained.as_str()])?
            .ok_or_else(|| RegistryError::Invalid(format!("collection `{parent}` not inserted")))?;
        insert_chain(&tx, parent_id, &child_ids)?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the children of a CHAINED collection (replacing any previous
    /// chain), refusing unknown children and cycles.
    pub fn set_collection_chain(&mut self, parent: &str, children: &[String]) -> Result<()> {
        let parent_record = self.collection_of_type(parent, CollectionType::Chained)?;
        let mut child_ids = Vec::with_capacity(children.len());
        for child in children {
            let record = self.collection(child)?;
            if child == parent || self.flatten_names(child)?.iter().any(|n| n == parent) {
                return Err(RegistryError::ChainCycle {
                    parent: parent.to_string(),
                    child: child.clone(),
                });
            }
            child_ids.push(record.id);
        }
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM collection_chain WHERE parent_id = ?1",
            &[&parent_record.id],
        )?;
        insert_chain(&tx, parent_record.id, &child_ids)?;
        tx.commit()?;
        Ok(())
    }

    /// The names reachable from `name` through chains (including itself and
    /// intermediate CHAINED collections), depth-first.
    fn flatten_names(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if out.contains(&n) {
                continue;
            }
            let record = self.collection(&n)?;
            out.push(n);
            for child in record.children.iter().rev() {
                stack.push(child.clone());
            }
        }
        Ok(out)
    }

    /// Resolves a search path of collection names into the ordered list of
    /// non-CHAINED collections to search: CHAINED collections expand
    /// depth-first in their order; a collection reached twice keeps its first
    /// position (find-first semantics).
    pub fn resolve_search_path(&self, names: &[String]) -> Result<Vec<CollectionRecord>> {
        let mut out: Vec<CollectionRecord> = Vec::new();
        let mut visiting = Vec::new();
        for name in names {
            self.expand_into(name, &mut out, &mut visiting)?;
        }
        Ok(out)
    }

    fn expand_into(
        &self,
        name: &str,
        out: &mut Vec<CollectionRecord>,
        visiting: &mut Vec<String>,
    ) -> Result<()> {
        if visiting.iter().any(|v| v == name) {
            return Err(RegistryError::ChainCycle {
                parent: visiting.last().cloned().unwrap_or_default(),
                child: name.to_string(),
            });
        }
        let record = self.collection(name)?;
        if record.collection_type == CollectionType::Chained {
            visiting.push(name.to_string());
            for child in &record.children {
                self.expand_into(child, out, visiting)?;
            }
            visiting.pop();
        } else if !out.iter().any(|c| c.id == record.id) {
            out.push(record);
        }
        Ok(())
    }
}
