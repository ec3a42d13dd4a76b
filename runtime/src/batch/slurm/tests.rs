use super::*;

#[test]
fn squeue_rows_parse_and_match_elements() {
    let text = r#"{"jobs": [
        {"job_id": 107, "array_job_id": 106, "array_task_id": 0, "array_task_string": "", "job_state": "RUNNING", "name": "w"},
        {"job_id": 106, "array_job_id": 106, "array_task_id": null, "array_task_string": "1-5%1", "job_state": "PENDING", "name": "w"},
        {"job_id": 99, "array_job_id": 0, "job_state": "COMPLETED", "name": "m"}
    ], "errors": []}"#;
    let jobs = squeue::parse_squeue(text).unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs[0].is_element("106", 0));
    assert!(!jobs[0].is_element("106", 1));
    assert!(jobs[1].is_element("106", 4));
    assert!(!jobs[1].is_element("106", 0));
    assert_eq!(jobs[2].array_job_id, None);
    assert!(jobs[1].is_live() && !jobs[2].is_live());
    assert_eq!(jobs[1].display_id(), "106_[1-5%1]");
    assert!(squeue::parse_squeue("not json").is_err());
    assert_eq!(parse_task_ids("1,3,5-7").unwrap(), vec![1, 3, 5, 6, 7]);
    assert_eq!(parse_task_ids("0-6:3").unwrap(), vec![0, 3, 6]);
    assert!(parse_task_ids("5-2").is_none());
}

#[test]
fn shell_quoting_survives_quotes() {
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("it's"), "'it'\\''s'");
}

#[test]
fn array_maps_give_their_elements() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.json");
    std::fs::write(
        &p,
        serde_json::to_vec(&ArrayMap {
            clusters: vec!["a".into(), "b".into()],
            mem_limit_bytes: Some(1 << 20),
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        array_element(&p, 1).unwrap(),
        ("b".to_string(), Some(1 << 20))
    );
    assert!(matches!(
        array_element(&p, 2),
        Err(SlurmError::NoSuchElement { len: 2, .. })
    ));
}

fn array(id: &str, n: usize) -> ArrayJob {
    ArrayJob {
        job_id: id.into(),
        level: 0,
        clusters: (0..n).map(|i| format!("c{i}")).collect(),
        resources: Resources::default(),
        map: PathBuf::new(),
        dependency: None,
    }
}

#[test]
fn arrays_depend_elementwise_only_when_element_i_reads_element_i() {
    // Clusters 0,1 in array "10"; clusters 2,3 read 0,1 one to one.
    let placed: HashMap<usize, (usize, usize)> = [(0, (0, 0)), (1, (0, 1))].into();
    let submitted = vec![array("10", 2)];
    let corr: ClusterDeps = [(2, [0].into()), (3, [1].into())].into();
    assert_eq!(
        array_dependency(&[2, 3], &corr, &placed, &submitted).as_deref(),
        Some("aftercorr:10")
    );
    // Crossed reads, or a gather of both: a barrier.
    let crossed: ClusterDeps = [(2, [1].into()), (3, [0].into())].into();
    assert_eq!(
        array_dependency(&[2, 3], &crossed, &placed, &submitted).as_deref(),
        Some("afterok:10")
    );
    let gather: ClusterDeps = [(4, [0, 1].into())].into();
    assert_eq!(
        array_dependency(&[4], &gather, &placed, &submitted).as_deref(),
        Some("afterok:10")
    );
    // Two upstream arrays: a barrier on both; none: no dependency.
    let placed2: HashMap<usize, (usize, usize)> = [(0, (0, 0)), (1, (1, 0))].into();
    let two = vec![array("10", 1), array("11", 1)];
    let both: ClusterDeps = [(2, [0, 1].into())].into();
    assert_eq!(
        array_dependency(&[2], &both, &placed2, &two).as_deref(),
        Some("afterok:10:11")
    );
    let none: ClusterDeps = [(2, BTreeSet::new())].into();
    assert_eq!(array_dependency(&[2], &none, &placed2, &two), None);
}
