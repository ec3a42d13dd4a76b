use super::*;
use crate::batch::gridengine::GridEngine;
use crate::batch::slurm::Slurm;
use crate::batch::Submission;

pub(crate) fn array(id: &str, n: usize) -> ArrayJob {
    ArrayJob {
        job_id: id.into(),
        level: 0,
        clusters: (0..n).map(|i| format!("c{i}")).collect(),
        resources: Resources::default(),
        map: PathBuf::new(),
        dependency: None,
    }
}

/// The scripts of submission 2 in `dir`, running `exe`.
pub(crate) fn scripts(dir: &Path, exe: &Path) -> Scripts {
    Scripts {
        number: 2,
        dir: dir.to_path_buf(),
        exe: sh_quote(&exe.to_string_lossy()),
        bundle: sh_quote("/data/it's.qb"),
        journal: sh_quote("/data/j"),
        repo: sh_quote("/data/repo"),
        worker_retries: 1,
    }
}

/// Runs `script` with `sh` as an array element `index` of either
/// scheduler would run (both variables set, each engine reads its own).
pub(crate) fn run_element(script: &Path, index: usize) -> std::process::Output {
    std::process::Command::new("/bin/sh")
        .arg(script)
        .env("SGE_TASK_ID", (index + 1).to_string())
        .env("SLURM_ARRAY_TASK_ID", index.to_string())
        .output()
        .unwrap()
}

/// A `quanta` in `dir` that prints its arguments, one per line, and
/// exits `code`.
pub(crate) fn fake_quanta(dir: &Path, code: i32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = dir.join("quanta");
    std::fs::write(
        &exe,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit {code}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

pub(crate) fn lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn arrays_wait_elementwise_only_when_element_i_reads_element_i() {
    // Clusters 0,1 in array "10"; clusters 2,3 read 0,1 one to one.
    let placed: HashMap<usize, (usize, usize)> = [(0, (0, 0)), (1, (0, 1))].into();
    let submitted = vec![array("10", 2)];
    let corr: ClusterDeps = [(2, [0].into()), (3, [1].into())].into();
    assert_eq!(
        array_wait(&[2, 3], &corr, &placed, &submitted),
        Some(ArrayWait::Elementwise("10"))
    );
    // Crossed reads, or a gather of both: a barrier.
    let crossed: ClusterDeps = [(2, [1].into()), (3, [0].into())].into();
    assert_eq!(
        array_wait(&[2, 3], &crossed, &placed, &submitted),
        Some(ArrayWait::All(vec!["10"]))
    );
    let gather: ClusterDeps = [(4, [0, 1].into())].into();
    assert_eq!(
        array_wait(&[4], &gather, &placed, &submitted),
        Some(ArrayWait::All(vec!["10"]))
    );
    // Two upstream arrays: a barrier on both; none: no wait.
    let placed2: HashMap<usize, (usize, usize)> = [(0, (0, 0)), (1, (1, 0))].into();
    let two = vec![array("10", 1), array("11", 1)];
    let both: ClusterDeps = [(2, [0, 1].into())].into();
    assert_eq!(
        array_wait(&[2], &both, &placed2, &two),
        Some(ArrayWait::All(vec!["10", "11"]))
    );
    let none: ClusterDeps = [(2, BTreeSet::new())].into();
    assert_eq!(array_wait(&[2], &none, &placed2, &two), None);
}

#[test]
fn each_scheduler_writes_the_wait_in_its_notation() {
    let one = || ArrayWait::Elementwise("10");
    let all = || ArrayWait::All(vec!["10", "11"]);
    assert_eq!(Slurm.wait(one()), "aftercorr:10");
    assert_eq!(Slurm.wait(all()), "afterok:10:11");
    assert_eq!(GridEngine.wait(one()), "-hold_jid_ad 10");
    assert_eq!(GridEngine.wait(all()), "-hold_jid 10,11");
    assert_eq!(Slurm.element_id("7", 0), "7_0");
    assert_eq!(GridEngine.element_id("7", 0), "7.1");
}

#[test]
fn cancels_go_dependents_first() {
    let sub = |number: u32, arrays: &[&str], merge: &str| Submission {
        number,
        time: String::new(),
        arrays: arrays.iter().map(|id| array(id, 1)).collect(),
        merge_job: Some(merge.into()),
    };
    let state = SubmissionState {
        version: crate::batch::STATE_VERSION,
        engine: "gridengine".into(),
        bundle: "/b.qb".into(),
        bundle_id: quanta_core::Uuid::nil(),
        repo: "/r".into(),
        journal_dir: "/j".into(),
        clusters: BTreeMap::new(),
        submissions: vec![sub(1, &["5", "6"], "7"), sub(2, &["9"], "10")],
    };
    assert_eq!(dependents_first(&state), ["10", "9", "7", "6", "5"]);
    // Another engine's submission is refused by name.
    let e = state.check_engine("slurm").unwrap_err().to_string();
    assert!(e.contains("--engine gridengine"), "{e}");
}

/// Slurm's array script runs the worker with the map that names the
/// element's cluster; both schedulers' merge scripts run `quanta merge`
/// (Grid Engine's array scripts and exit codes: `gridengine::tests`).
#[test]
fn array_and_merge_scripts_run_the_worker_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let exe = fake_quanta(dir.path(), 0);
    let s = scripts(dir.path(), &exe);
    let names = ["exposure=1".to_string(), "it's a cluster".to_string()];
    let (map, script) = s.write_array(&Slurm, 0, &names, Some(300)).unwrap();
    assert_eq!(map, dir.path().join("s2-a0.map.json"));
    assert_eq!(script, dir.path().join("s2-a0.sh"));
    let out = run_element(&script, 1);
    assert!(out.status.success(), "{out:?}");
    let map_arg = map.to_string_lossy().into_owned();
    assert_eq!(
        lines(&out),
        [
            "worker",
            "/data/it's.qb",
            "--slurm-map",
            map_arg.as_str(),
            "--journal",
            "/data/j",
            "--retries",
            "1"
        ]
    );
    assert_eq!(
        crate::batch::slurm::array_element(&map, 1).unwrap(),
        ("it's a cluster".to_string(), Some(300 << 20))
    );
    let merge_runs = |merge: PathBuf| {
        assert_eq!(merge, dir.path().join("s2-merge.sh"));
        let out = run_element(&merge, 0);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            lines(&out),
            [
                "merge",
                "/data/repo",
                "/data/it's.qb",
                "--journals",
                "/data/j",
                "--incomplete"
            ]
        );
    };
    merge_runs(s.write_merge(&Slurm).unwrap());
    merge_runs(s.write_merge(&GridEngine).unwrap());
    // Slurm's scripts `exec` the command: its exit status is the job's.
    for code in [1, 2, 99, 100] {
        let exe = fake_quanta(dir.path(), code);
        let s = scripts(dir.path(), &exe);
        let (_, array) = s.write_array(&Slurm, 0, &names, None).unwrap();
        let merge = s.write_merge(&Slurm).unwrap();
        assert_eq!(run_element(&array, 0).status.code(), Some(code));
        assert_eq!(run_element(&merge, 0).status.code(), Some(code));
    }
}
