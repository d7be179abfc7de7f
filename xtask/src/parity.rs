//! Per-test outcomes from nextest's JUnit reports, and the parity report that compares the
//! host and container runs test by test.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use quick_xml::events::{BytesStart, Event};
use serde::Serialize;

/// Where a suite ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// A test: its suite (the test binary: `auth`, `integrations`) and its name in that binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TestId {
    pub suite: String,
    pub name: String,
}

impl std::fmt::Display for TestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.suite, self.name)
    }
}

pub type Outcomes = BTreeMap<TestId, Outcome>;

/// Reads the outcome of every test case in a nextest JUnit report. Suites are named after the
/// test binary (`genesis-api::auth` → `auth`).
pub fn parse_junit(xml: &str) -> Result<Outcomes> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut outcomes = Outcomes::new();
    let mut suite: Option<String> = None;
    let mut case: Option<(TestId, Outcome)> = None;
    loop {
        let event = reader
            .read_event()
            .with_context(|| format!("malformed JUnit near byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == b"testsuite" => {
                let name = attribute(&tag, "name")?;
                suite = Some(name.rsplit("::").next().unwrap_or(&name).to_owned());
            }
            Event::Start(tag) if tag.name().as_ref() == b"testcase" => {
                case = Some((test_id(&tag, suite.as_deref())?, Outcome::Passed));
            }
            Event::Empty(tag) if tag.name().as_ref() == b"testcase" => {
                let id = test_id(&tag, suite.as_deref())?;
                outcomes.insert(id, Outcome::Passed);
            }
            Event::Start(tag) | Event::Empty(tag) => {
                if let Some((_, outcome)) = case.as_mut() {
                    match tag.name().as_ref() {
                        b"failure" | b"error" => *outcome = Outcome::Failed,
                        b"skipped" if *outcome == Outcome::Passed => *outcome = Outcome::Skipped,
                        _ => {}
                    }
                }
            }
            Event::End(tag) if tag.name().as_ref() == b"testcase" => {
                if let Some((id, outcome)) = case.take() {
                    outcomes.insert(id, outcome);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(outcomes)
}

fn attribute(tag: &BytesStart<'_>, key: &str) -> Result<String> {
    for attr in tag.attributes() {
        let attr = attr.context("malformed JUnit attribute")?;
        if attr.key.as_ref() == key.as_bytes() {
            return Ok(attr
                .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                .context("malformed JUnit attribute value")?
                .into_owned());
        }
    }
    bail!(
        "a <{}> without {key}",
        String::from_utf8_lossy(tag.name().as_ref())
    )
}

fn test_id(tag: &BytesStart<'_>, suite: Option<&str>) -> Result<TestId> {
    let suite = suite.context("a <testcase> outside any <testsuite>")?;
    Ok(TestId {
        suite: suite.to_owned(),
        name: attribute(tag, "name")?,
    })
}

/// One test across the modes that ran.
#[derive(Debug, Serialize)]
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

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Serialize)]
pub struct SuiteSummary {
    pub tests: usize,
    pub modes: BTreeMap<Target, Counts>,
    pub differing: usize,
}

/// The comparison of the runs: every test, a summary per suite, and the problems.
#[derive(Debug, Serialize)]
pub struct Report {
    /// True when every mode ran the same tests with the same outcomes.
    pub parity: bool,
    /// True when parity holds and no test failed.
    pub ok: bool,
    pub modes: Vec<Target>,
    pub suites: BTreeMap<String, SuiteSummary>,
    pub problems: Vec<String>,
    pub tests: Vec<TestRow>,
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
}
