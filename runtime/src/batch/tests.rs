use super::plan::time_minutes;
use super::*;

#[test]
fn memory_sizes_parse_and_bad_ones_are_refused() {
    assert_eq!(parse_mem_mb("512M").unwrap(), 512);
    assert_eq!(parse_mem_mb("2G").unwrap(), 2048);
    assert_eq!(parse_mem_mb("300").unwrap(), 300);
    assert_eq!(parse_mem_mb("1536K").unwrap(), 2);
    for bad in ["", "G", "12X", "-5M", "0", "abc"] {
        assert!(parse_mem_mb(bad).is_err(), "{bad}");
    }
}

#[test]
fn task_batch_config_reads_requests_and_refuses_typos() {
    let c = task_batch_config(
        "isr",
        &serde_json::json!({"batch": {"mem": "1G", "partition": "debug", "cpus_per_task": 2,
            "time": "5:00", "deterministic_exit_codes": [3, 4]}, "sleep_ms": 1}),
    )
    .unwrap();
    assert_eq!(c.resources.mem_mb, Some(1024));
    assert_eq!(c.resources.partition.as_deref(), Some("debug"));
    assert_eq!(c.resources.cpus_per_task, Some(2));
    assert_eq!(c.deterministic_exit_codes, vec![3, 4]);
    assert_eq!(
        task_batch_config("x", &serde_json::json!({})).unwrap(),
        TaskBatchConfig::default()
    );
    for bad in [
        serde_json::json!({"batch": {"memory": "1G"}}),
        serde_json::json!({"batch": {"mem": true}}),
        serde_json::json!({"batch": {"cpus_per_task": 0}}),
        serde_json::json!({"batch": {"deterministic_exit_codes": ["x"]}}),
        serde_json::json!({"batch": 3}),
    ] {
        let e = task_batch_config("isr", &bad).unwrap_err();
        assert!(e.to_string().contains("task `isr`"), "{e}");
    }
}

#[test]
fn resources_merge_takes_the_larger_request() {
    let a = Resources {
        mem_mb: Some(100),
        time: Some("10".into()),
        ..Default::default()
    };
    let b = Resources {
        mem_mb: Some(300),
        time: Some("0:05:00".into()),
        cpus_per_task: Some(2),
        ..Default::default()
    };
    let m = a.larger(&b);
    assert_eq!(m.mem_mb, Some(300));
    assert_eq!(m.time.as_deref(), Some("10"));
    assert_eq!(m.cpus_per_task, Some(2));
    assert_eq!(time_minutes("1-00:00:00"), 1440.0);
    assert_eq!(time_minutes("1:30"), 1.5);
}

#[test]
fn engines_are_found_by_name_and_htcondor_refuses_what_needs_a_pool() {
    assert_eq!(engine_names(), vec!["slurm", "htcondor", "gridengine"]);
    for name in engine_names() {
        assert_eq!(engine(name).unwrap().name(), name);
    }
    assert!(engine("sge").is_none());
    let h = engine("htcondor").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b.bundle");
    let e = h.cancel(&b).unwrap_err();
    assert!(
        matches!(
            e,
            BatchError::Unsupported {
                operation: "cancel",
                ..
            }
        ),
        "{e}"
    );
    assert!(h.status(&b, None).is_err());
    let opts = SubmitOptions {
        repo: dir.path().join("repo"),
        quanta_exe: "quanta".into(),
        overrides: Resources::default(),
        defaults: Resources::default(),
        throttle: None,
        worker_retries: 0,
        journal_dir: None,
        extra_sbatch_args: Vec::new(),
    };
    assert!(h.restart(&b, &opts, RetryPolicy::default()).is_err());
    // Submitting without --dry-run --out is refused before the bundle is read.
    let e = h.submit(&b, &opts, &SubmitRequest::default()).unwrap_err();
    assert!(e.to_string().contains("--dry-run --out DIR"), "{e}");
    for real in ["slurm", "gridengine"] {
        let e = engine(real)
            .unwrap()
            .submit(
                &b,
                &opts,
                &SubmitRequest {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("--dry-run is for --engine htcondor"),
            "{real}: {e}"
        );
    }
}

/// The state file records the engine; one written before engines were
/// recorded is Slurm's, and [`status`] of a bundle never submitted is
/// `None` whatever the engine.
#[test]
fn the_state_file_names_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b.qb");
    assert!(status(&b, None).unwrap().is_none());
    let old = serde_json::json!({
        "version": STATE_VERSION, "bundle": b, "bundle_id": quanta_core::Uuid::nil(),
        "repo": "/r", "journal_dir": "/j", "clusters": {}, "submissions": [],
    });
    std::fs::write(state_path(&b), old.to_string()).unwrap();
    let st = load_state(&b).unwrap();
    assert_eq!(st.engine, "slurm");
    let e = engine("gridengine").unwrap().cancel(&b).unwrap_err();
    assert!(
        e.to_string().contains("submitted with --engine slurm"),
        "{e}"
    );
    let mut other = old.clone();
    other["engine"] = "pbs".into();
    std::fs::write(state_path(&b), other.to_string()).unwrap();
    let e = status(&b, None).unwrap_err().to_string();
    assert!(e.contains("unknown engine `pbs`"), "{e}");
}
