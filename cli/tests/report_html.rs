//! The campaign page (`quanta report --html`, `quanta status --html`)
//! opened in a real browser: headless Chromium loads the file, runs the
//! page's own script (which writes the measured size of every SVG into
//! `data-rendered-*` attributes) and dumps the rendered DOM, which is
//! checked here: counts, failure rows, SVGs that rendered, and user text
//! that stayed text. A screenshot of each page is kept in
//! `$QUANTA_CI_ARTEFACTS` (default `target/ci-artefacts/`).
//!
//! Needs Debian's `chromium` (or `$QUANTA_CHROMIUM`). Without it the tests
//! say they were skipped, unless `QUANTA_REQUIRE_CHROMIUM=1` (set by
//! `.ci/run`), which makes its absence a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{merged_reference_campaign, ok, run};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The browser to drive, or `None` (after saying so) when there is none
/// and none is required.
fn chromium() -> Option<PathBuf> {
    let name = std::env::var("QUANTA_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
    });
    let found = found.or_else(|| Some(PathBuf::from(&name)).filter(|p| p.is_file()));
    if found.is_none() {
        if std::env::var("QUANTA_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("QUANTA_REQUIRE_CHROMIUM=1 but `{name}` is not installed (apt-get install chromium)");
        }
        eprintln!("skipped: `{name}` not found (install Debian's chromium, or set QUANTA_CHROMIUM; QUANTA_REQUIRE_CHROMIUM=1 makes this a failure)");
    }
    found
}

/// Headless Chromium with the flags the issue names, a profile of its own
/// under `dir`, and a time limit.
fn browser(chromium: &Path, dir: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    let profile = dir.join(format!("chromium-profile-{}", extra.len()));
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium on {url} failed: {}",
        common::show(&out)
    );
    out
}

/// The DOM as Chromium rendered it, after the page's load handler ran.
fn rendered_dom(chromium: &Path, dir: &Path, page: &Path) -> String {
    let out = browser(chromium, dir, &["--dump-dom"], page);
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// A screenshot of the page, kept as a CI artefact.
fn screenshot(chromium: &Path, dir: &Path, page: &Path, name: &str) {
    let artefacts = std::env::var_os("QUANTA_CI_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artefacts"));
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join(name);
    let arg = format!("--screenshot={}", png.display());
    browser(chromium, dir, &[&arg, "--window-size=1280,3000"], page);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{} is {size} bytes", png.display());
    eprintln!("screenshot: {}", png.display());
}

/// Every opening tag of the DOM containing `needle`.
fn tags_with<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(i) = dom[from..].find(needle) {
        let at = from + i;
        let start = dom[..at].rfind('<').unwrap();
        let end = at + dom[at..].find('>').unwrap();
        tags.push(&dom[start..=end]);
        from = end;
    }
    tags
}

fn tag_with<'a>(dom: &'a str, needle: &str) -> &'a str {
    let tags = tags_with(dom, needle);
    assert_eq!(tags.len(), 1, "one tag with {needle}: {tags:?}");
    tags[0]
}

/// An attribute's value in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let i = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[i..i + tag[i..].find('"').unwrap()]
}

fn num(tag: &str, name: &str) -> u64 {
    attr(tag, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} of {tag}"))
}

/// The counts a row or node carries: quanta, succeeded, failed, blocked,
/// pending, running.
fn counts(tag: &str) -> [u64; 6] {
    [
        "quanta",
        "succeeded",
        "failed",
        "blocked",
        "pending",
        "running",
    ]
    .map(|k| num(tag, &format!("data-{k}")))
}

/// Every plot rendered with a non-empty box, and every graph node's text.
fn assert_svgs_rendered(dom: &str) {
    let body = tag_with(dom, "data-report-version=");
    let total = num(body, "data-svg-total");
    assert!(total >= 3, "graph, histograms and timeline: {total}");
    assert_eq!(num(body, "data-svg-rendered"), total, "every SVG has a box");
    for svg in tags_with(dom, "class=\"plot") {
        assert!(num(svg, "data-rendered-width") > 0, "{svg}");
        assert!(num(svg, "data-rendered-height") > 0, "{svg}");
    }
    let nodes = tags_with(dom, "<g class=\"node");
    assert!(!nodes.is_empty());
    for n in nodes {
        assert!(num(n, "data-rendered-width") > 40, "{n}");
    }
}

#[test]
fn bundle_dot_keeps_dot_and_gives_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::make_reference_repo(dir.path(), 3, 4);
    let bundle = dir.path().join("b.qb");
    let pipeline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml");
    common::preflight_into_test_run(&repo, &pipeline, &bundle);
    let dot = ok(&["bundle", "dot", s(&bundle)]);
    assert!(dot.starts_with("digraph pipeline"), "{dot}");
    let mermaid = ok(&["bundle", "dot", s(&bundle), "--mermaid"]);
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(
        mermaid.contains("  t0[\"isr<br/>instrument, exposure, detector\"]"),
        "{mermaid}"
    );
    assert!(mermaid.contains("  d0([\"raw<br/>"), "{mermaid}");
    // raw → isr → postISRCCD → characterize → icExp ⇒ summarize → expSummary
    assert_eq!(mermaid.matches(" --> ").count(), 5, "{mermaid}");
    assert_eq!(mermaid.matches(" ==> ").count(), 1, "the gather: {mermaid}");
    let quanta = ok(&["bundle", "dot", s(&bundle), "--quanta", "--mermaid"]);
    assert_eq!(quanta.matches("[\"").count(), 27, "{quanta}");
    // Each characterize reads its isr; each summarize gathers 4.
    assert_eq!(quanta.matches(" --> ").count(), 12 + 12, "{quanta}");
}

#[test]
fn the_merged_reference_run_renders_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = merged_reference_campaign(dir.path(), 3, 4, "u/test/run", "u/test/out");
    let page = dir.path().join("run.html");
    let said = ok(&["report", s(&repo), "u/test/run", "--html", s(&page)]);
    assert!(said.contains("27 quanta, 27 succeeded"), "{said}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page needs no network"
    );

    // Bad input: an unknown RUN, a directory that does not exist.
    let missing = dir.path().join("no/such/dir/run.html");
    common::fails_with(2, &["report", s(&repo), "u/test/nope", "--html", s(&page)]);
    let err = common::fails_with(
        2,
        &["report", s(&repo), "u/test/run", "--html", s(&missing)],
    );
    assert!(err.contains("no/such/dir/run.html"), "{err}");

    let dom = rendered_dom(&chromium, dir.path(), &page);
    assert_eq!(
        counts(tag_with(&dom, "id=\"totals\"")),
        [27, 27, 0, 0, 0, 0]
    );
    for (task, n) in [("isr", 12), ("characterize", 12), ("summarize", 3)] {
        let row = tag_with(&dom, &format!("class=\"task-row\" data-task=\"{task}\""));
        assert_eq!(counts(row), [n, n, 0, 0, 0, 0], "{task}");
        let node = tag_with(&dom, &format!("data-kind=\"task\" data-name=\"{task}\""));
        assert_eq!(counts(node), [n, n, 0, 0, 0, 0], "{task} in the graph");
    }
    let written = tag_with(&dom, "data-name=\"expSummary\"");
    assert_eq!(
        (num(written, "data-written"), num(written, "data-predicted")),
        (3, 3)
    );
    let graph = tag_with(&dom, "id=\"pipeline-graph\"");
    assert_eq!((num(graph, "data-nodes"), num(graph, "data-edges")), (7, 6));
    assert!(dom.contains("id=\"no-failures\""));
    assert!(tags_with(&dom, "class=\"failure-row\"").is_empty());
    let timeline = tag_with(&dom, "id=\"timeline-plot\"");
    assert_eq!(num(timeline, "data-quanta"), 27);
    assert_eq!(num(timeline, "data-bars"), 27);
    assert_eq!(tags_with(&dom, "class=\"plot histogram\"").len(), 6);
    assert_eq!(tags_with(&dom, "class=\"slow-row\"").len(), 25);
    assert!(dom.contains("class=\"command-line\""));
    assert_svgs_rendered(&dom);
    screenshot(&chromium, dir.path(), &page, "report-reference-run.png");
}

/// Markup in user text: the pipeline's description and a `--where`
/// string both reach the page (pipeline YAML and command line).
const EVIL: &str = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><script>document.body.setAttribute('data-pwned','2')</script>";

#[test]
fn a_run_with_failures_renders_in_chromium_during_and_after_the_campaign() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let repo = common::make_reference_repo(root, 3, 4);
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines/reference.yaml"),
    )
    .unwrap();
    let description = EVIL.replace('\\', "\\\\").replace('"', "\\\"");
    let failing = yaml
        .replacen(
            "    class: examples.Characterize\n",
            "    class: examples.Characterize\n    config: {fail_on: {exposure: 1, detector: 2}}\n",
            1,
        )
        .replacen(
            "description: scatter/gather reference workload",
            &format!("description: \"{description}\""),
            1,
        );
    assert!(failing.contains("fail_on") && failing.contains("data-pwned"));
    let pipeline = root.join("failing.yaml");
    std::fs::write(&pipeline, failing).unwrap();
    let bundle = root.join("failing.qb");
    let where_clause = format!("instrument != '{}'", EVIL.replace('\'', "\""));
    ok(&[
        "preflight",
        s(&repo),
        "--pipeline",
        s(&pipeline),
        "--input",
        "Cam/raw",
        "--output-run",
        "u/test/failing",
        "--where",
        &where_clause,
        "--bundle",
        s(&bundle),
    ]);
    let out = run(&["run", s(&bundle), "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::show(&out));

    // During the campaign: from the journals.
    let live = root.join("status.html");
    ok(&["status", s(&bundle), "--html", s(&live)]);
    let dom = rendered_dom(&chromium, root, &live);
    check_failure_page(&dom, true);
    screenshot(&chromium, root, &live, "status-failing-campaign.png");

    // After the merge: from the registry.
    let out = run(&["merge", s(&repo), s(&bundle)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed quanta make merge exit 1"
    );
    let page = root.join("report.html");
    ok(&["report", s(&repo), "u/test/failing", "--html", s(&page)]);
    let dom = rendered_dom(&chromium, root, &page);
    check_failure_page(&dom, false);
    screenshot(&chromium, root, &page, "report-failing-run.png");
}

fn check_failure_page(dom: &str, live: bool) {
    let body = tag_with(dom, "data-report-version=");
    assert_eq!(attr(body, "data-live"), live.to_string());
    // 12 isr, 12 characterize (1 failed), 3 summarize (1 blocked).
    assert_eq!(counts(tag_with(dom, "id=\"totals\"")), [27, 25, 1, 1, 0, 0]);
    let row = tag_with(dom, "class=\"task-row\" data-task=\"characterize\"");
    assert_eq!(counts(row), [12, 11, 1, 0, 0, 0]);
    let row = tag_with(dom, "class=\"task-row\" data-task=\"summarize\"");
    assert_eq!(counts(row), [3, 2, 0, 1, 0, 0]);
    let node = tag_with(dom, "data-kind=\"task\" data-name=\"characterize\"");
    assert_eq!(attr(node, "class"), "node task bad");

    let table = tag_with(dom, "id=\"failure-table\"");
    assert_eq!((num(table, "data-total"), num(table, "data-shown")), (1, 1));
    let rows = tags_with(dom, "class=\"failure-row\"");
    assert_eq!(rows.len(), 1);
    assert_eq!(attr(rows[0], "data-task"), "characterize");
    assert_eq!(attr(rows[0], "data-status"), "failed");
    let row_start = dom.find("class=\"failure-row\"").unwrap();
    let row_html = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
    assert!(
        row_html.contains("exposure: 1") && row_html.contains("detector: 2"),
        "the failed data ID: {row_html}"
    );
    assert!(row_html.contains("fail_on"), "the reason: {row_html}");
    assert!(row_html.contains("class=\"log-tail\""), "{row_html}");
    assert!(
        row_html.contains("failing on purpose"),
        "the log tail: {row_html}"
    );
    let reason = tag_with(dom, "class=\"reason-row\"");
    assert_eq!(num(reason, "data-count"), 1);

    // The injected markup stayed text: nothing ran, no element was made.
    assert!(!body.contains("data-pwned"), "a script ran: {body}");
    assert!(!dom.contains("<img"), "an element was injected");
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "the description is shown as text"
    );
    assert!(dom.contains("class=\"command-line\""));
    assert_svgs_rendered(dom);
}
