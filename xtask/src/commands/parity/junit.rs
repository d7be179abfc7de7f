//! nextest's JUnit reports read: every test's outcome, a failed test's message, the time the
//! tests' bodies took.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// A test: its suite (the test binary: `auth`, `integrations`) and its name in that binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
                suite = Some(suite_name(&tag)?);
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

/// Every failed test of a JUnit report with what it printed when it failed: the `<failure>`
/// (or `<error>`) text, which nextest fills with the panic message and the backtrace, cut
/// before the backtrace; its `message` attribute where it has no text.
pub fn failures(xml: &str) -> Result<Vec<(TestId, String)>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut suite: Option<String> = None;
    let mut case: Option<TestId> = None;
    let mut failure: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let event = reader
            .read_event()
            .with_context(|| format!("malformed JUnit near byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == b"testsuite" => {
                suite = Some(suite_name(&tag)?);
            }
            Event::Start(tag) if tag.name().as_ref() == b"testcase" => {
                case = Some(test_id(&tag, suite.as_deref())?);
            }
            Event::Start(tag) if matches!(tag.name().as_ref(), b"failure" | b"error") => {
                failure = Some(String::new());
                if let Some(id) = &case {
                    out.push((id.clone(), attribute(&tag, "message").unwrap_or_default()));
                }
            }
            Event::Empty(tag) if matches!(tag.name().as_ref(), b"failure" | b"error") => {
                if let Some(id) = &case {
                    out.push((id.clone(), attribute(&tag, "message").unwrap_or_default()));
                }
            }
            Event::Text(text) if failure.is_some() => {
                let text = text.xml10_content().unwrap_or_default();
                failure.get_or_insert_default().push_str(&text);
            }
            Event::GeneralRef(r) if failure.is_some() => {
                let name = String::from_utf8_lossy(&r);
                let c = match name.as_ref() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "apos" => "'",
                    "quot" => "\"",
                    _ => "",
                };
                failure.get_or_insert_default().push_str(c);
            }
            Event::End(tag) if matches!(tag.name().as_ref(), b"failure" | b"error") => {
                if let (Some(text), Some((_, message))) = (failure.take(), out.last_mut())
                    && !text.trim().is_empty()
                {
                    let cut = text.split("\nstack backtrace:").next().unwrap_or_default();
                    *message = cut.trim_end().to_owned();
                }
            }
            Event::End(tag) if tag.name().as_ref() == b"testcase" => case = None,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The sum of the `time` of every test case of a JUnit report, in seconds: the test bodies
/// (for nextest, each test's process from start to exit).
pub fn body_seconds(xml: &str) -> Result<f64> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut total = 0.0;
    loop {
        match reader
            .read_event()
            .with_context(|| format!("malformed JUnit near byte {}", reader.buffer_position()))?
        {
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == b"testcase" => {
                let time = attribute(&tag, "time")?;
                total += time
                    .parse::<f64>()
                    .with_context(|| format!("a testcase time {time:?}"))?;
            }
            Event::Eof => return Ok(total),
            _ => {}
        }
    }
}
/// A `<testsuite>`'s suite: nextest names it after the test binary (`genesis-api::auth` →
/// `auth`).
fn suite_name(tag: &BytesStart<'_>) -> Result<String> {
    let name = attribute(tag, "name")?;
    Ok(name.rsplit("::").next().unwrap_or(&name).to_owned())
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
