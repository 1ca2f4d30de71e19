//! `zdctl verify --report FILE.html` opened in a real browser: headless chromium parses the
//! page and prints the DOM it built, which must hold the plot and the tables.

use std::process::Stdio;

use super::verify_json;
use crate::drivers::peer;
use crate::support::*;

#[test]
#[cfg_attr(
    not(has_chromium),
    ignore = "chromium not installed (Debian package chromium)"
)]
fn verify_report_opens_in_a_browser_with_the_plot_and_the_tables() {
    const TEST: &str = "verify_report_opens_in_a_browser_with_the_plot_and_the_tables";
    let Some(chromium) = peer(TEST, "chromium", "chromium") else {
        return;
    };
    let mut env = TestEnv::new();
    // One request in 50 answered 500, so the page has failures to draw and count.
    env.fixture_service("api", &["--fail-every", "50"], "");
    let status = env.start("api", &["run", "api"]);
    let url = format!("http://{}/", address_of(&status));
    let page = env.path("run.html");
    let page_arg = page.display().to_string();
    let (out, report) = verify_json(
        &env,
        &[
            "api",
            "--url",
            &url,
            "--restarts",
            "2",
            "--interval",
            "100ms",
            "--concurrency",
            "4",
            "--report",
            &page_arg,
        ],
    );
    assert_code(&out, 1);
    let failed = report["failed"].as_u64().expect("failed");
    assert!(failed > 0, "{report:#}");

    // --no-sandbox: chromium's sandbox refuses to run as root, as CI does.
    let dom_file = env.path("dom.html");
    let mut browser = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            &format!("--user-data-dir={}", env.path("chromium").display()),
            "--dump-dom",
            &format!("file://{page_arg}"),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_file).expect("dom file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let exited = wait_for("chromium to print the DOM", || {
        browser.try_wait().expect("try_wait")
    });
    assert!(exited.success(), "chromium exited with {exited}");
    let dom = std::fs::read_to_string(&dom_file).expect("the DOM");
    // What the browser built, not the file's text: the parser adds <tbody>, so a table
    // row the page wrote as <table id="kernel"><tr> reads back inside a <tbody>.
    for id in ["summary", "latency", "failures", "kernel", "flips"] {
        let table = format!("<table id=\"{id}\">");
        let parsed = dom
            .split_once(&table)
            .is_some_and(|(_, rest)| rest.trim_start().starts_with("<tbody>"));
        assert!(parsed, "no {id} table in the DOM:\n{dom}");
    }
    assert!(dom.contains("<svg"), "no svg in the DOM:\n{dom}");
    assert!(dom.contains("</svg>"));
    assert!(
        dom.contains(&format!("failed: {failed} in total")),
        "the plot does not count the {failed} failures:\n{dom}"
    );
    assert!(dom.contains("<th>ListenDrops</th>"), "{dom}");
    assert!(
        dom.contains(&format!("<th>total</th><td>{failed}</td>")),
        "{dom}"
    );
}
