//! Behaviour of the datastore on a real filesystem (temporary directories).

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Component, Path};
use std::sync::{Arc, Barrier};

use quanta_core::{DataId, DataIdValue, DatasetRef, Uuid};
use quanta_datastore::{
    Datastore, DatastoreConfig, DatastoreError, Formatter, FormatterError, InMemoryDataset,
    StoredFileInfo, TransferMode,
};
use serde::{Deserialize, Serialize};

fn dataset(n: u128, ty: &str, run: &str, pairs: Vec<(&str, DataIdValue)>) -> DatasetRef {
    DatasetRef {
        id: Uuid::from_u128(n),
        dataset_type: ty.to_string(),
        data_id: DataId::from_pairs(pairs),
        run: run.to_string(),
    }
}

fn raw(n: u128) -> DatasetRef {
    dataset(
        n,
        "raw",
        "Cam/raw/all",
        vec![
            ("instrument", "Cam".into()),
            ("exposure", 12.into()),
            ("detector", (n as i64).into()),
        ],
    )
}

fn store(dir: &Path) -> Datastore {
    Datastore::new(dir.join("repo"), DatastoreConfig::default()).unwrap()
}

/// Every file under `dir` whose name starts with `.tmp-`.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[test]
fn json_and_bytes_round_trip_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let value = serde_json::json!({"b": [1, 2.5, "x"], "a": {"nested": null}, "u": "é\u{0}"});
    let info = ds
        .write(
            &raw(1),
            "Json",
            &InMemoryDataset::Json(value.clone()),
            false,
        )
        .unwrap();
    assert_eq!(info.formatter, "Json");
    assert!(info.path.ends_with(".json"), "{}", info.path);
    let first = ds.read_bytes(&info.path).unwrap();
    assert_eq!(info.size, first.len() as u64);
    assert_eq!(info.checksum, quanta_core::hash::blake3_hex(&first));
    let back = ds.read(&info).unwrap().into_json().unwrap();
    assert_eq!(back, value);
    let again = ds
        .write(&raw(2), "Json", &InMemoryDataset::Json(back), false)
        .unwrap();
    assert_eq!(ds.read_bytes(&again.path).unwrap(), first);
    assert_eq!(again.checksum, info.checksum);

    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let info = ds
        .write(
            &raw(3),
            "Bytes",
            &InMemoryDataset::Bytes(bytes.clone()),
            false,
        )
        .unwrap();
    assert!(info.path.ends_with(".bin"));
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.checksum, quanta_core::hash::blake3_hex(&bytes));
    assert_eq!(
        ds.read_verified(&info).unwrap().into_bytes().unwrap(),
        bytes
    );
    let empty = ds
        .write(&raw(4), "Bytes", &InMemoryDataset::Bytes(Vec::new()), false)
        .unwrap();
    assert_eq!(empty.size, 0);
    assert!(ds.read(&empty).unwrap().into_bytes().unwrap().is_empty());
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Summary {
    name: String,
    counts: Vec<u32>,
}

#[test]
fn typed_json_helpers() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let s = Summary {
        name: "n".into(),
        counts: vec![1, 2],
    };
    let info = ds.put_json(&raw(1), &s, false).unwrap();
    assert_eq!(
        ds.read_bytes(&info.path).unwrap(),
        br#"{"name":"n","counts":[1,2]}"#
    );
    assert_eq!(ds.get_json::<Summary>(&info.path).unwrap(), s);
    ds.verify(&info).unwrap();
    let err = ds.get_json::<Vec<String>>(&info.path).unwrap_err();
    assert!(matches!(err, DatastoreError::Decode { .. }), "{err}");
}

#[test]
fn no_clobber_unless_asked_and_no_temp_files_left() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let r = raw(1);
    let one = ds
        .write(&r, "Bytes", &InMemoryDataset::Bytes(b"one".to_vec()), false)
        .unwrap();
    let err = ds
        .write(&r, "Bytes", &InMemoryDataset::Bytes(b"two".to_vec()), false)
        .unwrap_err();
    match &err {
        DatastoreError::AlreadyExists { path, what } => {
            assert_eq!(path, &one.path);
            assert!(what.contains("raw"), "{what}");
        }
        other => panic!("expected AlreadyExists, got {other}"),
    }
    assert_eq!(ds.read_bytes(&one.path).unwrap(), b"one");
    let two = ds
        .write(&r, "Bytes", &InMemoryDataset::Bytes(b"two".to_vec()), true)
        .unwrap();
    assert_eq!(two.path, one.path);
    assert_eq!(ds.read_bytes(&one.path).unwrap(), b"two");
    let err = ds
        .write_bytes_at(&one.path, b"three", "Bytes", false)
        .unwrap_err();
    assert!(matches!(err, DatastoreError::AlreadyExists { .. }));
    assert!(
        temp_files(ds.root()).is_empty(),
        "{:?}",
        temp_files(ds.root())
    );
}

/// Writes half its output and then fails, like a process dying mid-write.
struct FailsHalfway;
impl Formatter for FailsHalfway {
    fn name(&self) -> &str {
        "FailsHalfway"
    }
    fn storage_class(&self) -> &str {
        "Broken"
    }
    fn extension(&self) -> &str {
        "dat"
    }
    fn encode(&self, _: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        Err(FormatterError::Other("unused".into()))
    }
    fn decode(&self, _: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Err(FormatterError::Other("unused".into()))
    }
    fn encode_to(&self, _: &InMemoryDataset, out: &mut dyn Write) -> Result<(), FormatterError> {
        out.write_all(&vec![7u8; 200_000])?;
        Err(FormatterError::Other("ran out of pixels".into()))
    }
}

#[test]
fn failed_write_leaves_neither_partial_file_nor_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ds = store(tmp.path());
    ds.register_formatter(Arc::new(FailsHalfway)).unwrap();
    let r = raw(1);
    let err = ds
        .write(&r, "Broken", &InMemoryDataset::Bytes(vec![]), false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DatastoreError::Encode { .. }), "{msg}");
    assert!(
        msg.contains("ran out of pixels") && msg.contains("FailsHalfway"),
        "{msg}"
    );
    let path = ds.path_for(&r, "Broken").unwrap();
    assert!(!ds.exists(&path));
    assert!(temp_files(ds.root()).is_empty());

    // Wrong in-memory kind for the formatter.
    let err = ds
        .write(&r, "Json", &InMemoryDataset::Bytes(vec![1]), false)
        .unwrap_err();
    assert!(
        matches!(
            err,
            DatastoreError::Encode {
                source: FormatterError::WrongType { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!ds.exists(&ds.path_for(&r, "Json").unwrap()));
    let err = ds
        .write(&r, "Parquet", &InMemoryDataset::Bytes(vec![]), false)
        .unwrap_err();
    assert!(matches!(
        err,
        DatastoreError::NoFormatterForStorageClass { .. }
    ));
}

#[test]
fn verify_detects_flipped_byte_truncation_and_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let info = ds
        .write(
            &raw(1),
            "Bytes",
            &InMemoryDataset::Bytes(b"0123456789".to_vec()),
            false,
        )
        .unwrap();
    ds.verify(&info).unwrap();
    let abs = ds.abs_path(&info.path).unwrap();

    fs::write(&abs, b"0123X56789").unwrap();
    match ds.verify(&info) {
        Err(DatastoreError::ChecksumMismatch {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, info.path);
            assert_eq!(expected, info.checksum);
            assert_ne!(actual, expected);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(matches!(
        ds.read_verified(&info),
        Err(DatastoreError::ChecksumMismatch { .. })
    ));

    fs::write(&abs, b"01234").unwrap();
    assert!(matches!(
        ds.verify(&info),
        Err(DatastoreError::SizeMismatch {
            expected: 10,
            actual: 5,
            ..
        })
    ));
    assert!(matches!(
        ds.read_verified(&info),
        Err(DatastoreError::SizeMismatch { .. })
    ));

    assert!(ds.remove(&info.path).unwrap());
    assert!(!ds.remove(&info.path).unwrap());
    assert!(matches!(
        ds.verify(&info),
        Err(DatastoreError::Missing { .. })
    ));
    assert!(matches!(
        ds.read(&info),
        Err(DatastoreError::Missing { .. })
    ));

    let unknown = StoredFileInfo {
        formatter: "Nope".into(),
        ..info
    };
    assert!(matches!(
        ds.read(&unknown),
        Err(DatastoreError::UnknownFormatter { .. })
    ));
}

fn nasty_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        ".",
        "..",
        "...",
        "../../etc",
        "/abs",
        "a/b",
        "a\0b",
        "\0",
        "/",
        "//",
        "./x",
        "x/.",
        "x/..",
        "C:\\Windows",
        "\\\\server\\share",
        "é",
        "🙂/🙂",
        "%2F",
        "%",
        "~",
        " ",
        "\n",
        "-",
        "_",
        ".hidden",
        ".tmp-1-2-3",
        "a/../../..",
        "con",
        "\u{202e}",
        "\u{ff0f}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(10_000));
    v.push("/..".repeat(500));
    v.push("é".repeat(300));
    v
}

/// The rendered path must be a plain relative path, and joining it to the
/// root must stay under the root lexically and after resolving directories.
fn assert_safe(ds: &Datastore, rel: &str, what: &str) {
    assert!(!rel.is_empty(), "{what}");
    let p = Path::new(rel);
    assert!(p.is_relative(), "{what}: {rel}");
    for c in p.components() {
        match c {
            Component::Normal(name) => {
                let name = name.to_string_lossy();
                assert!(!name.is_empty() && !name.starts_with('.'), "{what}: {rel}");
                assert!(name.len() <= 255, "{what}: {rel}");
            }
            other => panic!("{what}: component {other:?} in {rel}"),
        }
    }
    assert!(
        !rel.split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."),
        "{what}: {rel}"
    );
    assert!(
        !rel.contains('\0') && !rel.contains('\\'),
        "{what}: {rel:?}"
    );
    assert!(ds.root().join(rel).starts_with(ds.root()));
}

#[test]
fn paths_are_safe_whatever_the_values() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let nasty = nasty_strings();
    let mut seen = HashSet::new();
    let mut n = 0u128;
    for run in &nasty {
        for value in &nasty {
            n += 1;
            let r = dataset(
                n,
                "calexp",
                run,
                vec![
                    ("instrument", value.as_str().into()),
                    ("visit", value.as_str().into()),
                    ("band", value.as_str().into()),
                ],
            );
            let rel = ds.path_for(&r, "Json").unwrap();
            assert_safe(&ds, &rel, &format!("run {run:?} value {value:?}"));
            assert!(seen.insert(rel), "paths must be distinct");
        }
    }
    // Write a sample for real and check it landed under the root.
    let canon_root = {
        fs::create_dir_all(ds.root()).unwrap();
        fs::canonicalize(ds.root()).unwrap()
    };
    for (i, v) in nasty.iter().enumerate() {
        let r = dataset(
            1_000_000 + i as u128,
            "calexp",
            v,
            vec![("visit", v.as_str().into())],
        );
        let info = ds
            .write(&r, "Bytes", &InMemoryDataset::Bytes(vec![1, 2, 3]), false)
            .unwrap();
        let abs = fs::canonicalize(ds.abs_path(&info.path).unwrap()).unwrap();
        assert!(abs.starts_with(&canon_root), "{v:?} → {}", abs.display());
    }
}

#[test]
fn property_random_values_stay_under_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = DatastoreConfig::default();
    config.templates.insert(
        "deep".into(),
        "{run}/{datasetType}/{a}/{b?}/{c?}/{datasetType}_{a}_{b?}_{c?}".into(),
    );
    let ds = Datastore::new(tmp.path(), config).unwrap();
    let alphabet: Vec<char> = "./\\\0a-_%~é🙂 \n:".chars().collect();
    // xorshift: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut random_string = |max: u64| -> String {
        let len = next() % (max + 1);
        (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect()
    };
    for i in 0..3000u128 {
        let run = random_string(12);
        let a = random_string(8);
        let b = random_string(8);
        let mut pairs = vec![("a", DataIdValue::from(a.clone()))];
        if i % 2 == 0 {
            pairs.push(("b", b.clone().into()));
        }
        let r = dataset(i, if i % 3 == 0 { "deep" } else { "calexp" }, &run, pairs);
        let rel = ds.path_for(&r, "Bytes").unwrap();
        assert_safe(&ds, &rel, &format!("run {run:?} a {a:?} b {b:?}"));
    }
}

#[test]
fn unsafe_relative_paths_are_refused_before_any_io() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    for bad in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/.tmp-x",
        "a\0b",
        "",
    ] {
        assert!(matches!(
            ds.write_bytes_at(bad, b"x", "Bytes", true),
            Err(DatastoreError::UnsafePath { .. })
        ));
        assert!(ds.remove(bad).is_err());
        if bad.starts_with('/') {
            // A direct path: read where it is, never written or removed.
            continue;
        }
        assert!(matches!(
            ds.read_bytes(bad),
            Err(DatastoreError::UnsafePath { .. })
        ));
        assert!(!ds.exists(bad));
    }
    assert!(!tmp.path().join("escape").exists());
}

/// A direct path (absolute, recorded by a `direct` ingest) is read where
/// it is; writing, replacing or removing it is refused, and a removal of
/// many paths skips and counts it; one that is not normalized is refused.
#[test]
fn direct_paths_are_read_in_place_and_never_written_or_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(&tmp.path().join("repo"));
    let outside = tmp.path().join("raw.bin");
    std::fs::write(&outside, b"raw bytes").unwrap();
    let direct = outside.to_str().unwrap().to_string();
    assert_eq!(ds.read_bytes(&direct).unwrap(), b"raw bytes");
    assert!(ds.exists(&direct));
    assert!(matches!(
        ds.write_bytes_at(&direct, b"x", "Bytes", true),
        Err(DatastoreError::UnsafePath { .. })
    ));
    assert!(matches!(
        ds.remove(&direct),
        Err(DatastoreError::UnsafePath { .. })
    ));
    let owned = ds
        .write_bytes_at("a/b.bin", b"owned", "Bytes", false)
        .unwrap();
    let stats = ds
        .remove_many(&[direct.clone(), owned.path.clone()])
        .unwrap();
    assert_eq!((stats.removed, stats.left_in_place), (1, 1));
    assert_eq!(std::fs::read(&outside).unwrap(), b"raw bytes");
    let not_normal = format!("{}/../raw.bin", tmp.path().display());
    assert!(matches!(
        ds.read_bytes(&not_normal),
        Err(DatastoreError::UnsafePath { .. })
    ));
}

#[test]
fn templates_from_config_and_bad_config_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = DatastoreConfig::default();
    config.templates.insert(
        "raw".into(),
        "{run}/{datasetType}/{instrument}/{exposure}/{datasetType}_{instrument}_{exposure}_{detector?}_{id}".into(),
    );
    let text = serde_json::to_string(&config).unwrap();
    let back: DatastoreConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
    let partial: DatastoreConfig = serde_json::from_str(r#"{"fsync": true}"#).unwrap();
    assert_eq!(
        partial.default_template,
        DatastoreConfig::default().default_template
    );
    assert!(partial.fsync);

    let ds = Datastore::new(tmp.path(), config.clone()).unwrap();
    assert_eq!(
        ds.path_for(&raw(1), "Json").unwrap(),
        "Cam/raw/all/raw/Cam/12/raw_Cam_12_1_00000000-0000-0000-0000-000000000001.json"
    );

    config.templates.insert("bad".into(), "{run}/{oops".into());
    assert!(config.validate().is_err());
    let err = Datastore::new(tmp.path(), config).unwrap_err();
    assert!(matches!(err, DatastoreError::BadTemplate { .. }), "{err}");
}

#[test]
fn fsync_mode_writes_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let config = DatastoreConfig {
        fsync: true,
        ..DatastoreConfig::default()
    };
    let ds = Datastore::new(tmp.path(), config).unwrap();
    let info = ds
        .write(
            &raw(1),
            "Bytes",
            &InMemoryDataset::Bytes(b"durable".to_vec()),
            false,
        )
        .unwrap();
    ds.verify(&info).unwrap();
}

#[cfg(unix)]
#[test]
fn ingest_with_each_transfer_mode() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let lock = ds.lock_for_ingest().unwrap();
    let src_dir = tmp.path().join("incoming");
    fs::create_dir_all(&src_dir).unwrap();
    let content = b"pixels pixels pixels";
    let make_src = |name: &str| {
        let p = src_dir.join(name);
        fs::write(&p, content).unwrap();
        p
    };
    let check = |info: &StoredFileInfo| {
        assert_eq!(info.size, content.len() as u64);
        assert_eq!(info.checksum, quanta_core::hash::blake3_hex(content));
        assert_eq!(info.formatter, "Bytes");
        ds.verify(info).unwrap();
        assert_eq!(ds.read_bytes(&info.path).unwrap(), content);
    };

    let src = make_src("copy.bin");
    let info = ds
        .ingest(&lock, &src, &raw(1), "Bytes", TransferMode::Copy, false)
        .unwrap();
    check(&info);
    assert!(src.exists(), "copy leaves the source");
    assert_ne!(
        fs::metadata(&src).unwrap().ino(),
        fs::metadata(ds.abs_path(&info.path).unwrap())
            .unwrap()
            .ino()
    );

    let src = make_src("move.bin");
    let info = ds
        .ingest(&lock, &src, &raw(2), "Bytes", TransferMode::Move, false)
        .unwrap();
    check(&info);
    assert!(
        src.exists(),
        "the datastore never removes a move's source (the Butler does, after registering)"
    );

    let src = make_src("link.bin");
    let info = ds
        .ingest(&lock, &src, &raw(3), "Bytes", TransferMode::Hardlink, false)
        .unwrap();
    check(&info);
    let dest = ds.abs_path(&info.path).unwrap();
    assert_eq!(
        fs::metadata(&src).unwrap().ino(),
        fs::metadata(&dest).unwrap().ino()
    );

    let src = make_src("sym.bin");
    let info = ds
        .ingest(&lock, &src, &raw(4), "Bytes", TransferMode::Symlink, false)
        .unwrap();
    check(&info);
    let dest = ds.abs_path(&info.path).unwrap();
    let target = fs::read_link(&dest).unwrap();
    assert!(target.is_absolute());
    assert_eq!(target, fs::canonicalize(&src).unwrap());

    let src = make_src("auto.bin");
    let info = ds
        .ingest(&lock, &src, &raw(5), "Bytes", TransferMode::Auto, false)
        .unwrap();
    check(&info);
    assert!(src.exists());

    // No clobber for any mode; clobber replaces.
    for mode in [
        TransferMode::Copy,
        TransferMode::Move,
        TransferMode::Hardlink,
        TransferMode::Symlink,
    ] {
        let src = make_src("again.bin");
        let err = ds
            .ingest(&lock, &src, &raw(1), "Bytes", mode, false)
            .unwrap_err();
        assert!(
            matches!(err, DatastoreError::AlreadyExists { .. }),
            "{mode}: {err}"
        );
        assert!(src.exists(), "{mode}: a refused move keeps its source");
    }
    let src = make_src("replace.bin");
    let info = ds
        .ingest(&lock, &src, &raw(1), "Bytes", TransferMode::Symlink, true)
        .unwrap();
    assert!(fs::symlink_metadata(ds.abs_path(&info.path).unwrap())
        .unwrap()
        .file_type()
        .is_symlink());

    let err = ds
        .ingest(
            &lock,
            &src_dir.join("missing.bin"),
            &raw(9),
            "Bytes",
            TransferMode::Copy,
            false,
        )
        .unwrap_err();
    assert!(
        matches!(err, DatastoreError::BadIngestSource { .. }),
        "{err}"
    );
    let err = ds
        .ingest(&lock, &src_dir, &raw(9), "Bytes", TransferMode::Copy, false)
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(temp_files(ds.root()).is_empty());
}

/// What a killed ingest leaves (a file at the destination, a partial copy
/// at the ingest temporary name) is replaced when the caller says the
/// destination is a leftover, in every mode; the source is never touched.
#[cfg(unix)]
#[test]
fn ingest_replaces_what_a_killed_ingest_left() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let lock = ds.lock_for_ingest().unwrap();
    let src_dir = tmp.path().join("incoming");
    fs::create_dir_all(&src_dir).unwrap();
    for (n, mode) in [
        TransferMode::Copy,
        TransferMode::Move,
        TransferMode::Hardlink,
        TransferMode::Symlink,
        TransferMode::Auto,
    ]
    .into_iter()
    .enumerate()
    {
        let r = raw(20 + n as u128);
        let content = format!("the real content of {mode}");
        let src = src_dir.join(format!("{mode}.bin"));
        fs::write(&src, &content).unwrap();
        let dest = ds.abs_path(&ds.path_for(&r, "Bytes").unwrap()).unwrap();
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, "half a fi").unwrap();
        let partial = quanta_datastore::ingest_temp_path(&dest);
        fs::write(&partial, "half").unwrap();
        let err = ds
            .ingest(&lock, &src, &r, "Bytes", mode, false)
            .unwrap_err();
        assert!(
            matches!(err, DatastoreError::AlreadyExists { .. }),
            "{mode}: {err}"
        );
        let info = ds.ingest(&lock, &src, &r, "Bytes", mode, true).unwrap();
        assert_eq!(
            ds.read_bytes(&info.path).unwrap(),
            content.as_bytes(),
            "{mode}"
        );
        assert_eq!(
            info.checksum,
            quanta_core::hash::blake3_hex(content.as_bytes())
        );
        ds.verify(&info).unwrap();
        assert_eq!(
            fs::read_to_string(&src).unwrap(),
            content,
            "{mode}: source kept"
        );
    }
    assert!(
        temp_files(ds.root()).is_empty(),
        "{:?}",
        temp_files(ds.root())
    );
}

/// The ingest lock is an exclusive `flock` on the root, held until the
/// guard is dropped: another open file description cannot take it.
#[cfg(unix)]
#[test]
fn ingest_lock_is_exclusive_until_dropped() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let try_lock = || {
        let dir = fs::File::open(ds.root()).unwrap();
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc == 0
    };
    let lock = ds.lock_for_ingest().unwrap();
    assert!(!try_lock(), "a second ingest must wait");
    drop(lock);
    assert!(try_lock(), "dropping the guard releases the lock");
}

#[test]
fn transfer_mode_parses() {
    for (text, mode) in [
        ("copy", TransferMode::Copy),
        ("MOVE", TransferMode::Move),
        ("link", TransferMode::Hardlink),
        ("hardlink", TransferMode::Hardlink),
        ("symlink", TransferMode::Symlink),
        ("auto", TransferMode::Auto),
    ] {
        assert_eq!(text.parse::<TransferMode>().unwrap(), mode);
    }
    assert!(matches!(
        "teleport".parse::<TransferMode>(),
        Err(DatastoreError::BadTransferMode(_))
    ));
}

#[test]
fn concurrent_writes_from_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Datastore>();

    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(store(tmp.path()));
    let threads = 6;
    let per_thread = 150u128;
    let infos: Vec<StoredFileInfo> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ds = Arc::clone(&ds);
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let n = t * 1000 + i;
                            let r = dataset(
                                n,
                                "calexp",
                                "run",
                                vec![
                                    ("visit", ((i % 7) as i64).into()),
                                    ("detector", (n as i64).into()),
                                ],
                            );
                            let payload = format!("thread {t} file {i}").into_bytes();
                            ds.write(&r, "Bytes", &InMemoryDataset::Bytes(payload), false)
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(infos.len(), threads as usize * per_thread as usize);
    let paths: HashSet<&str> = infos.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths.len(), infos.len());
    for info in &infos {
        ds.verify(info).unwrap();
    }
    assert!(temp_files(ds.root()).is_empty());
}

#[test]
fn racing_writers_to_one_path_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let threads = 8;
    let barrier = Barrier::new(threads);
    let r = raw(1);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (ds, r, barrier) = (&ds, &r, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    ds.write(
                        r,
                        "Bytes",
                        &InMemoryDataset::Bytes(vec![t as u8; 50_000]),
                        false,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&StoredFileInfo> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, DatastoreError::AlreadyExists { .. })));
    ds.verify(winners[0]).unwrap();
    assert!(temp_files(ds.root()).is_empty());
}
