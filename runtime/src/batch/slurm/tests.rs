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
fn squeue_rows_are_listed_jobs_of_their_array() {
    use crate::batch::array::ListedJob;
    let text = r#"{"jobs": [
        {"job_id": 107, "array_job_id": 106, "array_task_id": 0, "job_state": "RUNNING", "name": "w"},
        {"job_id": 106, "array_job_id": 106, "array_task_string": "1-5%1", "job_state": "PENDING", "name": "w"},
        {"job_id": 99, "array_job_id": 0, "job_state": "COMPLETED", "name": "m"}
    ]}"#;
    let jobs = squeue::parse_squeue(text).unwrap();
    let ids: Vec<String> = jobs.iter().map(ListedJob::submitted_id).collect();
    assert_eq!(ids, ["106", "106", "99"]);
    assert!(ListedJob::is_element(&jobs[1], "106", 3));
    assert!(!ListedJob::is_element(&jobs[0], "106", 1));
    assert_eq!(ListedJob::state(&jobs[2]), "COMPLETED");
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
