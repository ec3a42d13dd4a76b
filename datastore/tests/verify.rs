//! `Datastore::verify` and `Datastore::verify_many` on real files: every
//! kind of damage is reported, identically by both, in input order.

use std::fs;
use std::io;
use std::path::Path;

use quanta_datastore::{Datastore, DatastoreConfig, DatastoreError, ExpectedFile, StoredFileInfo};

fn store(dir: &Path) -> Datastore {
    Datastore::new(dir.join("repo"), DatastoreConfig::default()).unwrap()
}

fn put(ds: &Datastore, rel: &str, bytes: &[u8]) -> StoredFileInfo {
    ds.write_bytes_at(rel, bytes, "Bytes", false).unwrap()
}

fn expected(infos: &[StoredFileInfo]) -> Vec<ExpectedFile<'_>> {
    infos.iter().map(StoredFileInfo::expected).collect()
}

/// `verify_many` on `infos`, after checking that each result is exactly
/// what `verify` says for the same file.
fn verify_both(ds: &Datastore, infos: &[StoredFileInfo]) -> Vec<Result<(), DatastoreError>> {
    let many = ds.verify_many(&expected(infos));
    assert_eq!(many.len(), infos.len());
    for (info, result) in infos.iter().zip(&many) {
        assert_eq!(
            format!("{result:?}"),
            format!("{:?}", ds.verify(info)),
            "verify_many and verify disagree on {}",
            info.path
        );
    }
    many
}

fn verify_one(ds: &Datastore, info: &StoredFileInfo) -> Result<(), DatastoreError> {
    verify_both(ds, std::slice::from_ref(info))
        .pop()
        .expect("one result per file")
}

fn abs(ds: &Datastore, info: &StoredFileInfo) -> std::path::PathBuf {
    ds.abs_path(&info.path).unwrap()
}

#[test]
fn all_ok_across_many_directories_in_any_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    // 40 directories, more than a worker keeps open, and enough files for
    // several chunks.
    let mut infos = Vec::new();
    for d in 0..40 {
        for f in 0..30 {
            let body = format!("{{\"d\": {d}, \"f\": {f}}}");
            infos.push(put(
                &ds,
                &format!("run/type/{d}/type_{d}_{f}.json"),
                body.as_bytes(),
            ));
        }
    }
    infos.push(put(&ds, "at_root.json", b"{}"));
    // Grouped by directory, and interleaved (every file in another one).
    let interleaved: Vec<StoredFileInfo> = (0..30)
        .flat_map(|f| (0..40).map(move |d| d * 30 + f))
        .map(|i| infos[i].clone())
        .collect();
    for batch in [&infos, &interleaved] {
        let results = verify_both(&ds, batch);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    assert!(ds.verify_many(&[]).is_empty());
}

#[test]
fn missing_file_and_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let info = put(&ds, "a/b/file.json", b"0123456789");
    let other_dir = StoredFileInfo {
        path: "a/nodir/file.json".into(),
        ..info.clone()
    };
    fs::remove_file(abs(&ds, &info)).unwrap();
    for (i, r) in verify_both(&ds, &[info.clone(), other_dir.clone()])
        .into_iter()
        .enumerate()
    {
        match r {
            Err(DatastoreError::Missing { path }) => {
                assert_eq!(path, [&info, &other_dir][i].path)
            }
            other => panic!("expected Missing, got {other:?}"),
        }
    }
    // The root itself not there yet.
    let empty = store(&tmp.path().join("nothing"));
    assert!(matches!(
        verify_one(&empty, &info),
        Err(DatastoreError::Missing { .. })
    ));
}

#[test]
fn size_differences_are_reported_with_the_real_size() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let info = put(&ds, "d/f.bin", b"0123456789");
    for (content, actual) in [
        (&b"0123456789X"[..], 11),
        (&[b'x'; 100_000][..], 100_000),
        (&b"01234"[..], 5),
        (&b""[..], 0),
    ] {
        fs::write(abs(&ds, &info), content).unwrap();
        match verify_one(&ds, &info) {
            Err(DatastoreError::SizeMismatch {
                path,
                expected,
                actual: got,
            }) => {
                assert_eq!(path, info.path);
                assert_eq!(expected, 10);
                assert_eq!(got, actual);
            }
            other => panic!("expected SizeMismatch for {actual} bytes, got {other:?}"),
        }
    }
}

#[test]
fn same_size_other_content_is_a_checksum_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let info = put(&ds, "d/f.bin", b"0123456789");
    fs::write(abs(&ds, &info), b"0123X56789").unwrap();
    match verify_one(&ds, &info) {
        Err(DatastoreError::ChecksumMismatch {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, info.path);
            assert_eq!(expected, info.checksum);
            assert_eq!(actual, blake3::hash(b"0123X56789").to_hex().as_str());
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    // The recorded checksum is compared ignoring case, as before.
    fs::write(abs(&ds, &info), b"0123456789").unwrap();
    let upper = StoredFileInfo {
        checksum: info.checksum.to_ascii_uppercase(),
        ..info.clone()
    };
    verify_one(&ds, &upper).unwrap();
    let garbage = StoredFileInfo {
        checksum: "not hex".into(),
        ..info
    };
    assert!(matches!(
        verify_one(&ds, &garbage),
        Err(DatastoreError::ChecksumMismatch { .. })
    ));
}

#[test]
fn directory_fifo_or_device_where_a_file_should_be_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let info = put(&ds, "d/f.bin", b"0123456789");
    let empty = put(&ds, "d/empty.bin", b"");
    verify_one(&ds, &empty).unwrap();

    fs::remove_file(abs(&ds, &info)).unwrap();
    fs::create_dir(abs(&ds, &info)).unwrap();
    assert!(matches!(
        verify_one(&ds, &info),
        Err(DatastoreError::Missing { .. })
    ));

    // Opened non-blocking: reported, not waited on.
    fs::remove_file(abs(&ds, &empty)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        abs(&ds, &empty),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(matches!(
        verify_one(&ds, &empty),
        Err(DatastoreError::Missing { .. })
    ));

    // An empty read does not pass for an empty file.
    fs::remove_file(abs(&ds, &empty)).unwrap();
    std::os::unix::fs::symlink("/dev/null", abs(&ds, &empty)).unwrap();
    assert!(matches!(
        verify_one(&ds, &empty),
        Err(DatastoreError::Missing { .. })
    ));
}

#[test]
fn symlinks_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    let target = outside.join("target.bin");
    fs::write(&target, b"linked content").unwrap();
    let info = StoredFileInfo {
        path: "d/link.bin".into(),
        formatter: "Bytes".into(),
        size: 14,
        checksum: blake3::hash(b"linked content").to_hex().to_string(),
    };
    fs::create_dir_all(abs(&ds, &info).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, abs(&ds, &info)).unwrap();
    verify_one(&ds, &info).unwrap();

    // A symlinked directory too.
    fs::write(outside.join("sub/f.bin"), b"linked content").unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), ds.root().join("linkdir")).unwrap();
    let via_dir = StoredFileInfo {
        path: "linkdir/f.bin".into(),
        ..info.clone()
    };
    verify_one(&ds, &via_dir).unwrap();

    fs::write(&target, b"LINKED content").unwrap();
    assert!(matches!(
        verify_one(&ds, &info),
        Err(DatastoreError::ChecksumMismatch { .. })
    ));
    fs::remove_file(&target).unwrap();
    assert!(matches!(
        verify_one(&ds, &info),
        Err(DatastoreError::Missing { .. })
    ));
}

#[test]
fn unsafe_paths_are_refused_without_looking() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    // A file that `..` would reach, so that refusal is not mere absence.
    let ok = put(&ds, "d/f.bin", b"x");
    fs::write(tmp.path().join("escape.bin"), b"x").unwrap();
    for path in [
        "../escape.bin",
        "d/../../escape.bin",
        "/etc/../etc/passwd",
        "/etc//passwd",
        "d//f.bin",
        "",
    ] {
        let info = StoredFileInfo {
            path: path.into(),
            ..ok.clone()
        };
        assert!(
            matches!(
                verify_one(&ds, &info),
                Err(DatastoreError::UnsafePath { .. })
            ),
            "{path:?} was not refused"
        );
    }
}

/// A direct file (an absolute path, outside the root) is verified where
/// it is, by `verify` and `verify_many` alike (beside files in the root).
#[test]
fn direct_files_are_verified_where_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(&tmp.path().join("root"));
    let inside = put(&ds, "d/f.bin", b"inside");
    let outside = tmp.path().join("raw.bin");
    fs::write(&outside, b"outside").unwrap();
    let direct = StoredFileInfo {
        path: outside.to_str().unwrap().into(),
        size: 7,
        checksum: blake3::hash(b"outside").to_hex().to_string(),
        ..inside.clone()
    };
    let results = verify_both(&ds, &[inside.clone(), direct.clone()]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    fs::write(&outside, b"0utside").unwrap();
    assert!(matches!(
        verify_one(&ds, &direct),
        Err(DatastoreError::ChecksumMismatch { .. })
    ));
}

#[test]
fn parent_that_is_a_file_is_an_io_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let file = put(&ds, "d/f.bin", b"x");
    let below_file = StoredFileInfo {
        path: "d/f.bin/g.bin".into(),
        ..file
    };
    match verify_one(&ds, &below_file) {
        Err(DatastoreError::Io {
            action,
            path,
            source,
        }) => {
            assert_eq!(action, "open");
            assert_eq!(path, ds.root().join("d/f.bin/g.bin"));
            assert_eq!(source.kind(), io::ErrorKind::NotADirectory);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn mixed_batch_results_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let good: Vec<StoredFileInfo> = (0..6)
        .map(|i| {
            put(
                &ds,
                &format!("d{}/f{i}.bin", i % 2),
                format!("file {i}").as_bytes(),
            )
        })
        .collect();
    let missing = StoredFileInfo {
        path: "d0/gone.bin".into(),
        ..good[0].clone()
    };
    let wrong_size = StoredFileInfo {
        size: 99,
        ..good[1].clone()
    };
    let wrong_sum = StoredFileInfo {
        checksum: good[2].checksum.replace(|c: char| c != '0', "0"),
        ..good[2].clone()
    };
    let unsafe_path = StoredFileInfo {
        path: "../f.bin".into(),
        ..good[3].clone()
    };
    let batch = vec![
        good[0].clone(),
        missing,
        good[1].clone(),
        wrong_size,
        good[2].clone(),
        wrong_sum,
        unsafe_path,
        good[3].clone(),
        good[4].clone(),
        good[5].clone(),
    ];
    let kinds: Vec<&str> = verify_both(&ds, &batch)
        .iter()
        .map(|r| match r {
            Ok(()) => "ok",
            Err(DatastoreError::Missing { .. }) => "missing",
            Err(DatastoreError::SizeMismatch { .. }) => "size",
            Err(DatastoreError::ChecksumMismatch { .. }) => "checksum",
            Err(DatastoreError::UnsafePath { .. }) => "unsafe",
            Err(e) => panic!("unexpected {e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ok", "missing", "ok", "size", "ok", "checksum", "unsafe", "ok", "ok", "ok"]
    );
}

#[test]
fn files_above_the_whole_read_limit_are_streamed() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store(tmp.path());
    let mut bytes: Vec<u8> = (0..(16u32 << 20) + 4096).map(|i| (i % 251) as u8).collect();
    let info = put(&ds, "big/f.bin", &bytes);
    verify_one(&ds, &info).unwrap();
    bytes[12345] ^= 1;
    fs::write(abs(&ds, &info), &bytes).unwrap();
    assert!(matches!(
        verify_one(&ds, &info),
        Err(DatastoreError::ChecksumMismatch { .. })
    ));
    bytes.truncate(100);
    fs::write(abs(&ds, &info), &bytes).unwrap();
    assert!(matches!(
        verify_one(&ds, &info),
        Err(DatastoreError::SizeMismatch { actual: 100, .. })
    ));
}
