use std::path::Path;

use super::qstat::parse_qstat_xml;
use super::*;
use crate::batch::array::tests::{fake_quanta, lines, run_element, scripts};
use crate::batch::array::ListedJob;

/// `qstat -xml -u '*'` captured on Debian's gridengine 8.1.9: array 1
/// with tasks 1 and 2 running and 3,4 pending, array 2 held element-wise
/// on it.
const RUNNING_PENDING_HELD: &str = include_str!("fixtures/qstat-running-pending-held.xml");
/// Array 6 throttled to one task (`-tc 1`, named `a&b<c`), job 7 held on
/// it, job 8 in the error state after exiting 100.
const ERROR_HELD_THROTTLED: &str = include_str!("fixtures/qstat-error-held-throttled.xml");
/// No jobs at all.
const EMPTY: &str = include_str!("fixtures/qstat-empty.xml");

#[test]
fn qstat_rows_parse_and_match_array_tasks() {
    let jobs = parse_qstat_xml(RUNNING_PENDING_HELD).unwrap();
    let rows: Vec<(u64, &str, Option<&str>)> = jobs
        .iter()
        .map(|j| (j.job_id, j.state.as_str(), j.tasks.as_deref()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "r", Some("1")),
            (1, "r", Some("2")),
            (1, "qw", Some("3,4")),
            (2, "hqw", Some("1-4:1")),
        ]
    );
    assert_eq!(jobs[0].name, "arr");
    assert!(jobs[0].is_task("1", 1) && !jobs[0].is_task("1", 2));
    assert!(jobs[2].is_task("1", 4) && !jobs[2].is_task("1", 2));
    assert!(jobs[3].is_task("2", 4) && !jobs[3].is_task("2", 5));
    assert!(!jobs[3].is_task("1", 1), "another job's task");
    assert_eq!(jobs[3].display_id(), "2.1-4:1");
}

#[test]
fn qstat_error_states_plain_jobs_and_escaped_names() {
    let jobs = parse_qstat_xml(ERROR_HELD_THROTTLED).unwrap();
    let by_id = |id: u64| jobs.iter().filter(move |j| j.job_id == id);
    let err: Vec<_> = by_id(8).collect();
    assert_eq!(err.len(), 1);
    assert!(err[0].is_error() && err[0].tasks.is_none());
    assert_eq!(err[0].display_id(), "8");
    assert!(!err[0].is_task("8", 1), "a plain job has no tasks");
    let held: Vec<_> = by_id(7).collect();
    assert_eq!((held[0].state.as_str(), held[0].is_error()), ("hqw", false));
    // The entity in the name is resolved; Grid Engine writes `<` as `%lt;`.
    let array: Vec<_> = by_id(6).collect();
    assert_eq!(array.len(), 2);
    assert_eq!(array[0].name, "a&b%lt;c");
    assert!(array[1].is_task("6", 2) && array[1].is_task("6", 6));
    assert!(parse_qstat_xml(EMPTY).unwrap().is_empty());
}

#[test]
fn qstat_output_that_is_not_a_job_list_is_refused() {
    for bad in [
        "",
        "error: commlib error: got select error (Connection refused)",
        "<job_info><queue_info><job_list><JB_job_number>x</JB_job_number></job_list></queue_info></job_info>",
        "<job_info><job_list><JB_job_number>3</JB_job_number></job_info>",
    ] {
        let e = parse_qstat_xml(bad).unwrap_err();
        assert!(e.starts_with("qstat -xml: unexpected output"), "{bad:?}: {e}");
    }
}

#[test]
fn terse_job_ids_of_jobs_and_arrays() {
    assert_eq!(parse_terse_job_id("12\n").as_deref(), Some("12"));
    assert_eq!(parse_terse_job_id("1.1-4:1\n").as_deref(), Some("1"));
    for bad in ["", "\n", "Your job 3 (\"x\") has been submitted", ".1-4:1"] {
        assert_eq!(parse_terse_job_id(bad), None, "{bad:?}");
    }
}

#[test]
fn slurm_times_become_h_rt_seconds() {
    for (t, s) in [
        ("5", 300),
        ("5:30", 330),
        ("1:00:00", 3600),
        ("2-0", 172_800),
        ("1-2:03", 93_780),
        ("1-00:00:10", 86_410),
    ] {
        assert_eq!(time_seconds(t), Ok(s), "{t}");
    }
    for bad in ["", "0", "x", "1:2:3:4", "-5", "1-", "5m"] {
        assert!(time_seconds(bad).is_err(), "{bad}");
    }
}

#[test]
fn resources_become_qsub_options() {
    let r = Resources {
        partition: Some("long.q".into()),
        mem_mb: Some(400),
        cpus_per_task: Some(2),
        time: Some("10".into()),
    };
    assert_eq!(
        resource_args(&r).unwrap(),
        [
            "-q",
            "long.q",
            "-l",
            "mem_free=400M",
            "-pe",
            "smp",
            "2",
            "-l",
            "h_rt=600"
        ]
    );
    assert!(resource_args(&Resources::default()).unwrap().is_empty());
    let bad = Resources {
        time: Some("soon".into()),
        ..Default::default()
    };
    assert!(resource_args(&bad)
        .unwrap_err()
        .to_string()
        .contains("time `soon`"));
}

fn options(throttle: Option<u32>) -> SubmitOptions {
    SubmitOptions {
        repo: "/data/repo".into(),
        quanta_exe: "/bin/quanta".into(),
        overrides: Resources::default(),
        defaults: Resources::default(),
        throttle,
        worker_retries: 0,
        journal_dir: None,
        extra_sbatch_args: Vec::new(),
    }
}

#[test]
fn array_jobs_are_named_logged_and_sized() {
    let s = scripts(Path::new("/data/b.qb.slurm"), Path::new("/bin/quanta"));
    let r = Resources {
        mem_mb: Some(200),
        ..Default::default()
    };
    let a = ArrayRequest {
        name: "quanta-s2-a3".into(),
        len: 7,
        resources: &r,
        dependency: None,
        script: Path::new("/data/b.qb.slurm/s2-a3.sh"),
    };
    assert_eq!(
        array_args(&s, &a, &options(Some(2))).unwrap(),
        [
            "-terse",
            "-V",
            "-N",
            "quanta-s2-a3",
            "-o",
            "/data/b.qb.slurm/ge-$JOB_ID.$TASK_ID.out",
            "-j",
            "y",
            "-S",
            "/bin/sh",
            "-r",
            "n",
            "-t",
            "1-7",
            "-tc",
            "2",
            "-l",
            "mem_free=200M"
        ]
    );
}

#[test]
fn array_scripts_run_the_cluster_of_their_task_under_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = fake_quanta(dir.path(), 0);
    let s = scripts(dir.path(), &exe);
    let names = ["exposure=1".to_string(), "it's a cluster".to_string()];
    let (list, script) = s.write_array(&GridEngine, 0, &names, Some(300)).unwrap();
    assert_eq!(list, dir.path().join("s2-a0.clusters"));
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "exposure=1\nit's a cluster\n"
    );
    // Element 1 is task 2.
    let out = run_element(&script, 1);
    assert!(out.status.success(), "{out:?}");
    let mb300 = (300u64 << 20).to_string();
    assert_eq!(
        lines(&out),
        [
            "worker",
            "/data/it's.qb",
            "--cluster",
            "it's a cluster",
            "--journal",
            "/data/j",
            "--retries",
            "1",
            "--mem-limit",
            mb300.as_str()
        ]
    );
    // A task beyond the list is bad input, not a silent success.
    let out = run_element(&script, 2);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster on line 3"));
    // Names a line cannot hold are refused before anything is submitted.
    assert!(s
        .write_array(&GridEngine, 1, &["a\nb".to_string()], None)
        .is_err());
}

#[test]
fn scripts_turn_grid_engines_special_exit_codes_into_failures() {
    let dir = tempfile::tempdir().unwrap();
    for (code, want) in [(0, 0), (1, 1), (2, 2), (99, 1), (100, 1)] {
        let exe = fake_quanta(dir.path(), code);
        let s = scripts(dir.path(), &exe);
        let (_, array) = s
            .write_array(&GridEngine, 0, &["c".to_string()], None)
            .unwrap();
        let merge = s.write_merge(&GridEngine).unwrap();
        assert_eq!(run_element(&array, 0).status.code(), Some(want), "{code}");
        assert_eq!(run_element(&merge, 0).status.code(), Some(want), "{code}");
    }
}

#[test]
fn qstat_rows_are_listed_jobs_of_their_array() {
    let jobs = parse_qstat_xml(RUNNING_PENDING_HELD).unwrap();
    // Task 1 of array 1 is its element 0; the pending row holds tasks 3,4.
    assert!(ListedJob::is_element(&jobs[0], "1", 0));
    assert!(ListedJob::is_element(&jobs[2], "1", 3));
    assert!(!ListedJob::is_element(&jobs[2], "1", 1));
    assert!(jobs.iter().all(ListedJob::is_live));
    assert_eq!(ListedJob::submitted_id(&jobs[3]), "2");
    assert_eq!(ListedJob::state(&jobs[3]), "hqw");
}
