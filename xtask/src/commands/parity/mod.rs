//! Per-test outcomes from nextest's JUnit reports, the parity report that compares the host
//! and container runs test by test, and `parity merge`, which joins the reports of shards run
//! on several machines from one archive and checks that together they ran every test of it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::Shell;

mod junit;

use crate::flags;
use crate::tools::util::{check_failed, usage};

/// Where a suite ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Host,
    Container,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Host => "host",
            Target::Container => "container",
        }
    }
}

pub use junit::{Outcome, Outcomes, TestId, body_seconds, failures, parse_junit};

/// One test across the modes that ran.
#[derive(Debug, Serialize, Deserialize)]
pub struct TestRow {
    #[serde(flatten)]
    pub id: TestId,
    /// The outcome in each mode; `None` where the test did not run.
    pub outcomes: BTreeMap<Target, Option<Outcome>>,
}

impl TestRow {
    fn problem(&self) -> Option<String> {
        let seen: Vec<Outcome> = self.outcomes.values().flatten().copied().collect();
        let missing: Vec<&str> = self
            .outcomes
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(t, _)| t.name())
            .collect();
        let describe = || {
            self.outcomes
                .iter()
                .map(|(t, o)| format!("{} {}", t.name(), o.map_or("did not run", outcome_word)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !missing.is_empty() {
            Some(format!("ran in one mode only ({})", describe()))
        } else if seen.windows(2).any(|w| w[0] != w[1]) {
            Some(format!("outcome differs ({})", describe()))
        } else if seen.contains(&Outcome::Failed) {
            Some(format!("failed ({})", describe()))
        } else {
            None
        }
    }

    fn differs(&self) -> bool {
        let seen: Vec<Option<Outcome>> = self.outcomes.values().copied().collect();
        seen.windows(2).any(|w| w[0] != w[1])
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SuiteSummary {
    pub tests: usize,
    pub modes: BTreeMap<Target, Counts>,
    pub differing: usize,
}

/// The comparison of the runs: every test, a summary per suite, and the problems.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// True when every mode ran the same tests with the same outcomes.
    pub parity: bool,
    /// True when parity holds and no test failed.
    pub ok: bool,
    pub modes: Vec<Target>,
    pub suites: BTreeMap<String, SuiteSummary>,
    pub problems: Vec<String>,
    pub tests: Vec<TestRow>,
    /// The archive the runs came from, with every test it selects, so that the reports of
    /// shards can be merged and checked for tests no shard ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveTests>,
}

/// Every test an archive selects (under the run's filters, before partitioning), and the
/// slice of them this run was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveTests {
    /// The archive's file name and size, for messages.
    pub file: String,
    pub bytes: u64,
    /// The SHA-256 of the archive's test binaries (each binary's digest beside its id): two
    /// archives built from one tree hold the same binaries, though their tar headers differ.
    /// Empty in reports of older versions, which are compared by name and size instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binaries: String,
    /// nextest's partition (`slice:1/2`), if the run had one.
    pub partition: Option<String>,
    /// The filters the tests were selected with (the suite's filterset and name filters).
    pub filters: Vec<String>,
    pub tests: Vec<TestId>,
    /// The tests of this run's partition.
    pub shard: Vec<TestId>,
}

impl flags::Parity {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        match self.cmd {
            flags::ParityCmd::Merge(merge) => merge.run(),
        }
    }
}

impl flags::ParityMerge {
    fn run(self) -> Result<()> {
        let mut reports = Vec::new();
        for path in &self.reports {
            let text = std::fs::read_to_string(path)
                .map_err(|err| usage(format!("cannot read {}: {err}", path.display())))?;
            let report: Report = serde_json::from_str(&text).map_err(|err| {
                usage(format!("{} is not a parity report: {err}", path.display()))
            })?;
            reports.push((path.display().to_string(), report));
        }
        let merged = merge(&reports).map_err(|err| usage(err.to_string()))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&merged)?);
        } else {
            println!("{}", merged.table());
            for problem in &merged.problems {
                println!("  problem: {problem}");
            }
        }
        let total = merged.archive.as_ref().map_or(0, |a| a.tests.len());
        if merged.ok {
            // With --json, stdout holds the JSON document alone.
            if self.json {
                return Ok(());
            }
            println!(
                "parity holds: {total} tests of the archive, every one run in {} shard(s), same outcomes in {}",
                reports.len(),
                merged
                    .modes
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
            Ok(())
        } else {
            Err(check_failed(format!(
                "{} problem(s) across {} shard(s) of {total} tests",
                merged.problems.len(),
                reports.len()
            )))
        }
    }
}

/// Reads `cargo nextest list --message-format json` of an archive run with a partition: the
/// tests that match (this shard) and those left out only by the partition (other shards).
/// Ignored tests and tests outside the filters are not part of the run at all.
pub fn parse_list(json: &str) -> Result<(Vec<TestId>, Vec<TestId>)> {
    let list: serde_json::Value = serde_json::from_str(json).context("malformed nextest list")?;
    let suites = list["rust-suites"]
        .as_object()
        .context("nextest list without rust-suites")?;
    let (mut all, mut shard) = (Vec::new(), Vec::new());
    for suite in suites.values() {
        let Some(binary) = suite["binary-name"].as_str() else {
            bail!("a nextest suite without binary-name");
        };
        let Some(cases) = suite["testcases"].as_object() else {
            continue;
        };
        for (name, case) in cases {
            let matched = &case["filter-match"];
            let id = TestId {
                suite: binary.to_owned(),
                name: name.clone(),
            };
            match (matched["status"].as_str(), matched["reason"].as_str()) {
                (Some("matches"), _) => {
                    all.push(id.clone());
                    shard.push(id);
                }
                (Some("mismatch"), Some("partition")) => all.push(id),
                (Some(_), _) => {}
                (None, _) => bail!("nextest list: {id} without a filter-match status"),
            }
        }
    }
    all.sort();
    shard.sort();
    Ok((all, shard))
}

/// The test binaries of `cargo nextest list --message-format json`, as `(binary id, path)`.
pub fn list_binaries(json: &str) -> Result<Vec<(String, String)>> {
    let list: serde_json::Value = serde_json::from_str(json).context("malformed nextest list")?;
    let suites = list["rust-suites"]
        .as_object()
        .context("nextest list without rust-suites")?;
    let mut binaries = Vec::new();
    for (id, suite) in suites {
        let path = suite["binary-path"]
            .as_str()
            .with_context(|| format!("nextest list: {id} without binary-path"))?;
        binaries.push((id.clone(), path.to_owned()));
    }
    binaries.sort();
    Ok(binaries)
}

/// A shard's JUnit report with the archive's other tests added as skipped, in a `<testsuite>`
/// per test binary named as nextest names it (`genesis-api::auth`), so that the report of each
/// shard lists every test of the archive.
pub fn junit_with_other_shards(xml: &str, archive: &ArchiveTests, package: &str) -> Result<String> {
    let Some(at) = xml.rfind("</testsuites>") else {
        bail!("a JUnit report without </testsuites>");
    };
    let shard: BTreeSet<&TestId> = archive.shard.iter().collect();
    let mut others: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in archive.tests.iter().filter(|id| !shard.contains(id)) {
        others.entry(&id.suite).or_default().push(&id.name);
    }
    let partition = archive.partition.as_deref().unwrap_or("none");
    let mut added = String::new();
    for (suite, names) in others {
        let suite = xml_escape(&format!("{package}::{suite}"));
        added.push_str(&format!(
            "    <testsuite name=\"{suite}\" tests=\"{n}\" disabled=\"0\" errors=\"0\" failures=\"0\" skipped=\"{n}\">\n",
            n = names.len()
        ));
        for name in names {
            added.push_str(&format!(
                "        <testcase name=\"{}\" classname=\"{suite}\" time=\"0\"><skipped message=\"in another shard than this one ({})\"/></testcase>\n",
                xml_escape(name),
                xml_escape(partition)
            ));
        }
        added.push_str("    </testsuite>\n");
    }
    Ok(format!("{}{added}{}", &xml[..at], &xml[at..]))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Adds a problem for every test of this run's shard that ran in no mode (a test that ran in
/// some modes only is already one).
pub fn check_shard(report: &mut Report, archive: ArchiveTests) {
    let ran: BTreeSet<&TestId> = report.tests.iter().map(|row| &row.id).collect();
    let missing: Vec<String> = archive
        .shard
        .iter()
        .filter(|id| !ran.contains(id))
        .map(|id| format!("{id}: did not run in any mode"))
        .collect();
    if !missing.is_empty() {
        report.ok = false;
        report.problems.extend(missing);
    }
    report.archive = Some(archive);
}

/// Joins the reports of shards of one archive into one report: fails (exit 1, through `ok`)
/// when a test of the archive ran in no shard, ran in one mode only, or differs; refuses
/// reports of different archives, filters or modes (bad usage).
pub fn merge(reports: &[(String, Report)]) -> Result<Report> {
    let Some((first_name, first)) = reports.first() else {
        bail!("no reports to merge");
    };
    let Some(archive) = &first.archive else {
        bail!("{first_name} has no archive test list: it was written by an older xtask");
    };
    for (name, report) in &reports[1..] {
        let Some(other) = &report.archive else {
            bail!("{name} has no archive test list: it was written by an older xtask");
        };
        let same_build = if archive.binaries.is_empty() || other.binaries.is_empty() {
            (&other.file, other.bytes) == (&archive.file, archive.bytes)
        } else {
            other.binaries == archive.binaries
        };
        if !same_build || (&other.filters, &other.tests) != (&archive.filters, &archive.tests) {
            bail!(
                "{name} and {first_name} come from different archives or filters                  ({} {} bytes {:?} against {} {} bytes {:?})",
                other.file,
                other.bytes,
                other.filters,
                archive.file,
                archive.bytes,
                archive.filters
            );
        }
        if report.modes != first.modes {
            bail!("{name} ran in other modes than {first_name}");
        }
    }
    let mut runs: Vec<(Target, Outcomes)> =
        first.modes.iter().map(|t| (*t, Outcomes::new())).collect();
    let mut problems = Vec::new();
    let mut shards_of: BTreeMap<&TestId, Vec<&str>> = BTreeMap::new();
    for (name, report) in reports {
        for row in &report.tests {
            shards_of.entry(&row.id).or_default().push(name);
            for (target, outcome) in &row.outcomes {
                let Some(outcome) = outcome else { continue };
                let (_, outcomes) = runs
                    .iter_mut()
                    .find(|(t, _)| t == target)
                    .expect("every report has the same modes");
                if let Some(before) = outcomes.insert(row.id.clone(), *outcome)
                    && before != *outcome
                {
                    problems.push(format!(
                        "{}: ran in several shards with different outcomes in {}",
                        row.id,
                        target.name()
                    ));
                }
            }
        }
    }
    let mut merged = compare(&runs);
    let known: BTreeSet<&TestId> = archive.tests.iter().collect();
    for (id, shards) in &shards_of {
        if !known.contains(id) {
            problems.push(format!(
                "{id}: ran in {} but is not in the archive's list",
                shards.join(", ")
            ));
        }
    }
    let missing: Vec<&TestId> = archive
        .tests
        .iter()
        .filter(|id| !shards_of.contains_key(id))
        .collect();
    for id in &missing {
        problems.push(format!("{id}: ran in no shard"));
    }
    if !problems.is_empty() {
        merged.ok = false;
        merged.problems.extend(problems);
    }
    merged.archive = Some(ArchiveTests {
        partition: None,
        shard: archive.tests.clone(),
        ..archive.clone()
    });
    Ok(merged)
}

pub fn compare(runs: &[(Target, Outcomes)]) -> Report {
    let modes: Vec<Target> = runs.iter().map(|(t, _)| *t).collect();
    let ids: BTreeSet<&TestId> = runs.iter().flat_map(|(_, o)| o.keys()).collect();
    let tests: Vec<TestRow> = ids
        .into_iter()
        .map(|id| TestRow {
            id: id.clone(),
            outcomes: runs.iter().map(|(t, o)| (*t, o.get(id).copied())).collect(),
        })
        .collect();
    let mut suites: BTreeMap<String, SuiteSummary> = BTreeMap::new();
    for row in &tests {
        let summary = suites
            .entry(row.id.suite.clone())
            .or_insert_with(|| SuiteSummary {
                tests: 0,
                modes: modes.iter().map(|t| (*t, Counts::default())).collect(),
                differing: 0,
            });
        summary.tests += 1;
        summary.differing += usize::from(row.differs());
        for (target, outcome) in &row.outcomes {
            let counts = summary
                .modes
                .get_mut(target)
                .expect("every mode has counts");
            match outcome {
                Some(Outcome::Passed) => counts.passed += 1,
                Some(Outcome::Failed) => counts.failed += 1,
                Some(Outcome::Skipped) => counts.skipped += 1,
                None => {}
            }
        }
    }
    let problems: Vec<String> = tests
        .iter()
        .filter_map(|row| Some(format!("{}: {}", row.id, row.problem()?)))
        .collect();
    let parity = !tests.iter().any(TestRow::differs);
    let ok = parity && problems.is_empty() && !tests.is_empty();
    Report {
        parity,
        ok,
        modes,
        suites,
        problems,
        tests,
        archive: None,
    }
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
    }
}

impl Report {
    /// The terminal table: tests per suite, passed and failed per mode, and differing tests.
    pub fn table(&self) -> String {
        let mut header = vec!["suite".to_owned(), "tests".to_owned()];
        for mode in &self.modes {
            header.push(format!("{} passed", mode.name()));
            header.push(format!("{} failed", mode.name()));
        }
        if self.modes.len() > 1 {
            header.push("differing".to_owned());
        }
        let mut rows = vec![header];
        let mut total = vec![0usize; self.modes.len() * 2 + 2];
        for (suite, summary) in &self.suites {
            let mut row = vec![suite.clone(), summary.tests.to_string()];
            total[0] += summary.tests;
            for (i, counts) in summary.modes.values().enumerate() {
                row.push(counts.passed.to_string());
                row.push(counts.failed.to_string());
                total[1 + 2 * i] += counts.passed;
                total[2 + 2 * i] += counts.failed;
            }
            if self.modes.len() > 1 {
                row.push(summary.differing.to_string());
                *total.last_mut().expect("non-empty") += summary.differing;
            }
            rows.push(row);
        }
        let mut total_row = vec!["total".to_owned()];
        total_row.extend(
            total
                .iter()
                .take(self.modes.len() * 2 + 1)
                .map(ToString::to_string),
        );
        if self.modes.len() > 1 {
            total_row.push(total.last().expect("non-empty").to_string());
        }
        rows.push(total_row);
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn junit(suites: &[(&str, &[(&str, &str)])]) -> String {
        let mut xml = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"nextest-run\">\n",
        );
        for (suite, cases) in suites {
            xml.push_str(&format!(
                "<testsuite name=\"genesis-api::{suite}\" tests=\"{}\">\n",
                cases.len()
            ));
            for (name, outcome) in *cases {
                match *outcome {
                    "pass" => xml.push_str(&format!("<testcase name=\"{name}\" classname=\"genesis-api::{suite}\" time=\"0.1\"/>\n")),
                    "fail" => xml.push_str(&format!(
                        "<testcase name=\"{name}\"><failure type=\"test failure\">assertion &lt;x&gt;</failure><system-out>..</system-out></testcase>\n"
                    )),
                    "skip" => xml.push_str(&format!("<testcase name=\"{name}\"><skipped/></testcase>\n")),
                    other => panic!("unknown outcome {other}"),
                }
            }
            xml.push_str("</testsuite>\n");
        }
        xml.push_str("</testsuites>\n");
        xml
    }

    fn outcomes(suites: &[(&str, &[(&str, &str)])]) -> Outcomes {
        parse_junit(&junit(suites)).unwrap()
    }

    #[test]
    fn parses_nextest_junit() {
        let parsed = outcomes(&[
            ("auth", &[("login", "pass"), ("logout", "fail")]),
            ("integrations", &[("jsonb", "skip")]),
        ]);
        let got: Vec<(String, Outcome)> =
            parsed.iter().map(|(id, o)| (id.to_string(), *o)).collect();
        assert_eq!(
            got,
            [
                ("auth::login".to_owned(), Outcome::Passed),
                ("auth::logout".to_owned(), Outcome::Failed),
                ("integrations::jsonb".to_owned(), Outcome::Skipped)
            ]
        );
        assert!(parse_junit("<testsuites><testcase name=\"x\"/></testsuites>").is_err());
    }

    #[test]
    fn identical_runs_hold_parity() {
        let run = outcomes(&[("auth", &[("login", "pass"), ("me", "pass")])]);
        let report = compare(&[(Target::Host, run.clone()), (Target::Container, run)]);
        assert!(report.parity && report.ok, "{:?}", report.problems);
        assert_eq!(report.suites["auth"].tests, 2);
        assert!(report.table().contains("total      2            2            0                 2                 0          0"), "{}", report.table());
    }

    #[test]
    fn a_test_whose_outcome_differs_is_named() {
        let host = outcomes(&[("integrations", &[("runtime", "pass"), ("jsonb", "pass")])]);
        let container = outcomes(&[("integrations", &[("runtime", "fail"), ("jsonb", "pass")])]);
        let report = compare(&[(Target::Host, host), (Target::Container, container)]);
        assert!(!report.parity && !report.ok);
        assert_eq!(
            report.problems,
            ["integrations::runtime: outcome differs (host passed, container failed)"]
        );
        assert_eq!(report.suites["integrations"].differing, 1);
    }

    #[test]
    fn a_test_in_one_mode_only_breaks_parity() {
        let host = outcomes(&[("auth", &[("login", "pass"), ("extra", "pass")])]);
        let container = outcomes(&[("auth", &[("login", "pass")])]);
        let report = compare(&[(Target::Host, host), (Target::Container, container)]);
        assert!(!report.parity);
        assert_eq!(
            report.problems,
            ["auth::extra: ran in one mode only (host passed, container did not run)"]
        );
    }

    #[test]
    fn a_failed_tests_panic_message_is_read_without_its_backtrace() {
        let xml = "<testsuites><testsuite name=\"genesis-api::auth\">\
            <testcase name=\"ok\"/>\
            <testcase name=\"bad\"><failure message=\"thread &apos;bad&apos; panicked at a.rs:1:1\" type=\"test failure\">thread &apos;bad&apos; panicked at a.rs:1:1:\nexpected &lt;1&gt; &amp; got 2\nstack backtrace:\n   0: frame</failure></testcase>\
            <testcase name=\"bare\"><failure message=\"only the message\"/></testcase>\
            </testsuite></testsuites>";
        let found = failures(xml).unwrap();
        let names: Vec<String> = found.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(names, ["auth::bad", "auth::bare"]);
        assert_eq!(
            found[0].1,
            "thread 'bad' panicked at a.rs:1:1:\nexpected <1> & got 2"
        );
        assert_eq!(found[1].1, "only the message");
    }

    #[test]
    fn a_failure_in_both_modes_keeps_parity_but_fails() {
        let run = outcomes(&[("auth", &[("login", "fail")])]);
        let report = compare(&[(Target::Host, run.clone()), (Target::Container, run)]);
        assert!(report.parity && !report.ok);
        assert_eq!(
            report.problems,
            ["auth::login: failed (host failed, container failed)"]
        );
    }

    #[test]
    fn no_tests_is_not_ok() {
        let report = compare(&[(Target::Host, Outcomes::new())]);
        assert!(!report.ok);
    }

    /// A `cargo nextest list --message-format json` in the shape nextest 0.9 writes.
    fn list_json(cases: &[(&str, &str, &str)]) -> String {
        let mut suites: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for (binary, name, status) in cases {
            let filter_match = match *status {
                "match" => serde_json::json!({ "status": "matches" }),
                reason => serde_json::json!({ "status": "mismatch", "reason": reason }),
            };
            suites.entry(binary).or_default().insert(
                (*name).to_owned(),
                serde_json::json!({ "kind": "test", "ignored": false, "filter-match": filter_match }),
            );
        }
        let suites: serde_json::Map<String, serde_json::Value> = suites
            .into_iter()
            .map(|(binary, cases)| {
                (
                    format!("genesis-api::{binary}"),
                    serde_json::json!({ "binary-name": binary, "testcases": cases }),
                )
            })
            .collect();
        serde_json::json!({ "test-count": 0, "rust-suites": suites }).to_string()
    }

    fn ids(names: &[&str]) -> Vec<TestId> {
        names
            .iter()
            .map(|n| {
                let (suite, name) = n.split_once("::").unwrap();
                TestId {
                    suite: suite.to_owned(),
                    name: name.to_owned(),
                }
            })
            .collect()
    }

    #[test]
    fn the_list_gives_every_selected_test_and_this_partition() {
        let json = list_json(&[
            ("auth", "login", "match"),
            ("auth", "logout", "partition"),
            ("auth", "slow", "ignored"),
            ("genesis-api", "unit", "expression"),
            ("integrations", "health::live", "match"),
        ]);
        let (all, shard) = parse_list(&json).unwrap();
        assert_eq!(
            all,
            ids(&["auth::login", "auth::logout", "integrations::health::live"])
        );
        assert_eq!(shard, ids(&["auth::login", "integrations::health::live"]));
        assert!(parse_list("{}").is_err());
    }

    /// The report of one shard: `cases` ran with `outcome` in both modes.
    fn shard(all: &[&str], cases: &[(&str, &str)], partition: &str) -> Report {
        let mut by_suite: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (id, outcome) in cases {
            let (suite, name) = id.split_once("::").unwrap();
            by_suite.entry(suite).or_default().push((name, outcome));
        }
        let suites: Vec<(&str, &[(&str, &str)])> =
            by_suite.iter().map(|(s, c)| (*s, c.as_slice())).collect();
        let run = outcomes(&suites);
        let mut report = compare(&[(Target::Host, run.clone()), (Target::Container, run)]);
        let shard_ids = ids(&cases.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        check_shard(
            &mut report,
            ArchiveTests {
                file: "genesis-tests.tar.zst".into(),
                bytes: 1234,
                binaries: String::new(),
                partition: Some(partition.into()),
                filters: vec!["binary(=auth) | binary(=integrations)".into()],
                tests: ids(all),
                shard: shard_ids,
            },
        );
        // What `parity merge` reads is what `test` wrote.
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap()
    }

    const ALL: [&str; 3] = ["auth::login", "auth::logout", "integrations::jsonb::paths"];

    #[test]
    fn shards_that_cover_the_archive_merge_into_parity() {
        let one = shard(
            &ALL,
            &[("auth::login", "pass"), ("auth::logout", "pass")],
            "slice:1/2",
        );
        let two = shard(&ALL, &[("integrations::jsonb::paths", "pass")], "slice:2/2");
        let merged = merge(&[("1.json".into(), one), ("2.json".into(), two)]).unwrap();
        assert!(merged.ok && merged.parity, "{:?}", merged.problems);
        assert_eq!(merged.tests.len(), 3);
    }

    #[test]
    fn a_missing_shard_names_the_tests_that_ran_nowhere() {
        let one = shard(
            &ALL,
            &[("auth::login", "pass"), ("auth::logout", "pass")],
            "slice:1/2",
        );
        let merged = merge(&[("1.json".into(), one)]).unwrap();
        assert!(!merged.ok);
        assert_eq!(
            merged.problems,
            ["integrations::jsonb::paths: ran in no shard"]
        );
    }

    #[test]
    fn a_test_that_differs_in_one_shard_fails_the_merge() {
        let one = shard(
            &ALL,
            &[("auth::login", "pass"), ("auth::logout", "pass")],
            "slice:1/2",
        );
        let mut two = shard(&ALL, &[("integrations::jsonb::paths", "pass")], "slice:2/2");
        two.tests[0]
            .outcomes
            .insert(Target::Container, Some(Outcome::Failed));
        let merged = merge(&[("1.json".into(), one), ("2.json".into(), two)]).unwrap();
        assert!(!merged.ok && !merged.parity);
        assert_eq!(
            merged.problems,
            ["integrations::jsonb::paths: outcome differs (host passed, container failed)"]
        );
    }

    #[test]
    fn shards_of_different_archives_are_refused() {
        let one = shard(&ALL, &[("auth::login", "pass")], "slice:1/2");
        let two = shard(&ALL[..2], &[("auth::logout", "pass")], "slice:2/2");
        let err = merge(&[("1.json".into(), one), ("2.json".into(), two)]).unwrap_err();
        assert!(err.to_string().contains("different archives"), "{err}");
    }

    #[test]
    fn shards_of_archives_built_apart_merge_by_their_binaries() {
        let with = |report: &mut Report, bytes: u64, binaries: &str| {
            let archive = report.archive.as_mut().unwrap();
            archive.bytes = bytes;
            archive.binaries = binaries.into();
        };
        let mut one = shard(
            &ALL,
            &[("auth::login", "pass"), ("auth::logout", "pass")],
            "slice:1/2",
        );
        let mut two = shard(&ALL, &[("integrations::jsonb::paths", "pass")], "slice:2/2");
        // Two builds of one tree: the tar files differ by a few bytes, the binaries do not.
        with(&mut one, 34_409_657, "ab12");
        with(&mut two, 34_409_655, "ab12");
        let merged = merge(&[("1.json".into(), one), ("2.json".into(), two)]).unwrap();
        assert!(merged.parity);
        let mut one = shard(&ALL, &[("auth::login", "pass")], "slice:1/2");
        let mut two = shard(&ALL, &[("auth::logout", "pass")], "slice:2/2");
        with(&mut one, 34_409_657, "ab12");
        with(&mut two, 34_409_657, "cd34");
        let err = merge(&[("1.json".into(), one), ("2.json".into(), two)]).unwrap_err();
        assert!(err.to_string().contains("different archives"), "{err}");
    }

    #[test]
    fn a_shards_junit_lists_the_other_shards_tests_as_skipped() {
        let xml = junit(&[("auth", &[("login", "pass")])]);
        let archive = ArchiveTests {
            file: "a".into(),
            bytes: 1,
            binaries: String::new(),
            partition: Some("slice:1/2".into()),
            filters: vec![],
            tests: ids(&["auth::login", "auth::logout", "integrations::jsonb::paths"]),
            shard: ids(&["auth::login"]),
        };
        let full = junit_with_other_shards(&xml, &archive, "genesis-api").unwrap();
        let parsed = parse_junit(&full).unwrap();
        let got: Vec<(String, Outcome)> =
            parsed.iter().map(|(id, o)| (id.to_string(), *o)).collect();
        assert_eq!(
            got,
            [
                ("auth::login".to_owned(), Outcome::Passed),
                ("auth::logout".to_owned(), Outcome::Skipped),
                ("integrations::jsonb::paths".to_owned(), Outcome::Skipped)
            ]
        );
        assert_eq!(body_seconds(&full).unwrap(), 0.1);
    }
}
