//! A small YAML emitter for the generated compose file: block mappings and sequences, and every
//! string either plain, when no YAML 1.1 or 1.2 reader (PyYAML in Compose v1, Go's yaml in v2)
//! can take it for anything else, or double-quoted.
//!
//! A double-quoted YAML scalar is a superset of a JSON string, so a string that is not
//! obviously plain is written as `serde_json` writes it. The allow-list errs towards quoting:
//! a quoted string can only ever be read as itself.

use serde_json::Value;

/// `value` as a YAML document (block style, two-space indentation, a sequence under a key at
/// the key's own indentation, as Compose's own output has it).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0, false),
        scalar => {
            out.push_str(&flow(scalar));
            out.push('\n');
        }
    }
    out
}

/// The entries of `map` at `indent`; with `inline`, the first one goes on the current line
/// (after a sequence's `- `).
fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str(&string(key));
        out.push(':');
        match value {
            Value::Object(map) if !map.is_empty() => {
                out.push('\n');
                mapping(out, map, indent + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                sequence(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&flow(scalar));
                out.push('\n');
            }
        }
    }
}

/// The items of `items` at `indent`; with `inline`, the first one goes on the current line.
fn sequence(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => mapping(out, map, indent + 2, true),
            Value::Array(items) if !items.is_empty() => sequence(out, items, indent + 2, true),
            scalar => {
                out.push_str(&flow(scalar));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar, or an empty collection, on one line.
fn flow(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Integers as they are. A float as a YAML 1.1 reader (PyYAML) also reads it: with a `.` and
/// a signed exponent (`1e21` would be a string there). `serde_json` has no NaN or infinity.
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (text.as_str(), None),
    };
    let mut out = mantissa.to_owned();
    if !out.contains('.') {
        out.push_str(".0");
    }
    if let Some(e) = exponent {
        out.push('e');
        if !e.starts_with(['-', '+']) {
            out.push('+');
        }
        out.push_str(e);
    }
    out
}

/// `s` plain if it is obviously a plain string, else double-quoted.
fn string(s: &str) -> String {
    if is_plain(s) {
        return s.to_owned();
    }
    let json = serde_json::to_string(s).expect("a string serialises");
    // JSON leaves DEL, the C1 controls, a few non-characters and the Unicode line breaks as
    // they are; YAML refuses the former unescaped, and YAML 1.1 readers (PyYAML) take the
    // latter for line breaks, which a quoted scalar folds.
    json.chars()
        .map(|c| {
            if plain_in_quotes(c) {
                c.to_string()
            } else {
                format!("\\u{:04x}", u32::from(c))
            }
        })
        .collect()
}

/// YAML's printable characters, less the ones YAML 1.1 reads as line breaks (NEL, LS, PS).
/// serde_json has already escaped the ASCII controls.
fn plain_in_quotes(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{2027}' | '\u{202a}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
}

/// The words YAML 1.1 or 1.2 reads as a boolean, a null, an infinity or a NaN (compared
/// without case, though the specifications list only some spellings), and 1.1's merge and
/// value keys.
const SPECIAL_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ".inf", "+.inf", "-.inf",
    ".nan", "<<", "=",
];

/// A plain string: ASCII letters, digits and `_ . / $ { } : = @ + -` only (so no space, no
/// `#`, no quote, no flow or other indicator a reader would act on), starting with a letter,
/// a digit or one of `_ . / $ -`, not ending with `:`, not a document marker, not one of the
/// special words and not something a reader could take for a number or a date.
fn is_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./${}:=@+-".contains(c))
        && (first.is_ascii_alphanumeric() || "_./$-".contains(first))
        && s != "-"
        && !s.ends_with(':')
        && !s.starts_with("---")
        && !s.starts_with("...")
        && !SPECIAL_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
        && !number_like(s)
}

/// Whether `s` could be one of YAML 1.1's or 1.2's integers (decimal, `0x`, `0o`, `0b`, octal,
/// base 60, with `_`), floats or timestamps: every one of them starts, after an optional sign,
/// with a digit or a `.`, and uses no character outside this set.
fn number_like(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "xXoO._:+-tTzZ".contains(c))
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(string(input), expected, "{input:?}");
    }

    #[test]
    fn obviously_plain_strings_stay_plain() {
        for s in [
            "test",
            "service_healthy",
            "1s",
            "-c",
            "--",
            "fsync=off",
            "/var/lib/postgresql/data",
            ".:/workspace:ro",
            "./target:/workspace/target",
            "${GENESIS_USER:-0:0}",
            "127.0.0.1:${GENESIS_TEST_DB_PORT-5433}:5432",
            "postgres:15-alpine",
            "org.genesis.checkout",
            "image@sha256:abc",
            "yesterday",
            "nothing",
            "0day",
            "0xg",
        ] {
            check(s, s);
        }
    }

    /// YAML 1.1's and 1.2's words for booleans, null, infinities and merges, in several cases;
    /// the compose oracle test (`codegen`) feeds them to both Compose versions too.
    pub(crate) const SPECIAL_WORDS_ANY_CASE: &[&str] = &[
        "y", "Y", "n", "N", "yes", "Yes", "YES", "no", "No", "on", "On", "ON", "off", "Off",
        "true", "True", "TRUE", "false", "FALSE", "null", "Null", "NULL", "~", ".inf", "-.Inf",
        "+.INF", ".nan", ".NaN", "<<", "=",
    ];

    #[test]
    fn special_words_are_quoted_in_any_case() {
        for s in SPECIAL_WORDS_ANY_CASE {
            check(s, &format!("\"{s}\""));
        }
    }

    /// Strings a YAML reader could take for a number or a time; also fed to Compose.
    pub(crate) const NUMBER_LIKE: &[&str] = &[
        "0",
        "1",
        "5432",
        "-1",
        "+1",
        "1_000",
        "0x1F",
        "0o17",
        "0b101",
        "017",
        "1.5",
        ".5",
        "1.",
        "1e3",
        "1.0e+3",
        "22:22",
        "190:20:30.15",
        "127.0.0.1",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14T21:59:43Z",
    ];

    #[test]
    fn number_like_strings_are_quoted() {
        for s in NUMBER_LIKE {
            check(s, &format!("\"{s}\""));
        }
    }

    #[test]
    fn indicators_and_odd_characters_are_quoted() {
        check("", "\"\"");
        check("-", "\"-\"");
        check("a: b", "\"a: b\"");
        check("a:", "\"a:\"");
        check(":a", "\":a\"");
        check("a #b", "\"a #b\"");
        check("#a", "\"#a\"");
        check("a b", "\"a b\"");
        check(" a", "\" a\"");
        check("a ", "\"a \"");
        check("{a}", "\"{a}\"");
        check("[a]", "\"[a]\"");
        check("a,b", "\"a,b\"");
        check("&a", "\"&a\"");
        check("*a", "\"*a\"");
        check("!a", "\"!a\"");
        check("|a", "\"|a\"");
        check(">a", "\">a\"");
        check("%a", "\"%a\"");
        check("@a", "\"@a\"");
        check("`a", "\"`a\"");
        check("?a", "\"?a\"");
        check("---a", "\"---a\"");
        check("...a", "\"...a\"");
        check("a'b", "\"a'b\"");
        check("say \"hi\"", "\"say \\\"hi\\\"\"");
        check("back\\slash", "\"back\\\\slash\"");
        check("exec \"$$@\"", "\"exec \\\"$$@\\\"\"");
        check("$", "$");
        check("$$@", "$$@");
        check("line\nbreak", "\"line\\nbreak\"");
        check("tab\there", "\"tab\\there\"");
        check("cr\r", "\"cr\\r\"");
        check("bell\u{7}", "\"bell\\u0007\"");
        check("del\u{7f}", "\"del\\u007f\"");
        check("c1\u{80}", "\"c1\\u0080\"");
        check("bom\u{feff}", "\"bom\\ufeff\"");
        check("nel\u{85}", "\"nel\\u0085\"");
        check("ls\u{2028}ps\u{2029}", "\"ls\\u2028ps\\u2029\"");
        check("héllo", "\"héllo\"");
        check("日本", "\"日本\"");
        check("emoji 🦀", "\"emoji 🦀\"");
    }

    #[test]
    fn numbers_booleans_and_null_are_written_as_such() {
        let flow = |v: Value| flow(&v);
        assert_eq!(flow(json!(60)), "60");
        assert_eq!(flow(json!(-3)), "-3");
        assert_eq!(flow(json!(u64::MAX)), "18446744073709551615");
        assert_eq!(flow(json!(1.5)), "1.5");
        assert_eq!(flow(json!(1.0)), "1.0");
        assert_eq!(flow(json!(1e21)), "1.0e+21");
        assert_eq!(flow(json!(1.5e-7)), "1.5e-7");
        assert_eq!(flow(json!(true)), "true");
        assert_eq!(flow(json!(false)), "false");
        assert_eq!(flow(Value::Null), "null");
        assert_eq!(flow(json!([])), "[]");
        assert_eq!(flow(json!({})), "{}");
    }

    #[test]
    fn blocks_nest_like_compose_output() {
        let value = json!({
            "services": {
                "db": {
                    "command": ["postgres", "-c", "ssl=on"],
                    "environment": {"A": "1", "B": "yes"},
                    "healthcheck": {"retries": 60, "test": ["CMD", "pg_isready"]},
                    "tmpfs": [],
                    "labels": {},
                },
            },
            "list": [{"a": 1, "b": [2, 3]}, [4, [5, 6]], {}, null],
        });
        assert_eq!(
            to_string(&value),
            "\
list:
- a: 1
  b:
  - 2
  - 3
- - 4
  - - 5
    - 6
- {}
- null
services:
  db:
    command:
    - postgres
    - -c
    - ssl=on
    environment:
      A: \"1\"
      B: \"yes\"
    healthcheck:
      retries: 60
      test:
      - CMD
      - pg_isready
    labels: {}
    tmpfs: []
"
        );
        assert_eq!(to_string(&json!("yes")), "\"yes\"\n");
        assert_eq!(to_string(&json!({})), "{}\n");
    }
}
