//! `--run REGEX`: which tests and cases run (gator's `verify.NewFilter`).
//!
//! - empty: everything;
//! - `TEST//CASE`: cases whose name matches `CASE` in tests whose name matches `TEST`;
//! - `NAME` (no `//`): tests whose name matches, with all their cases, plus any case whose
//!   name matches, in any test.
//!
//! The expressions search (they are not anchored), as Go's `regexp.MatchString`.

use regex::Regex;

use super::Test;

/// A `--run` expression that does not compile, or has more than one `//`.
#[derive(Debug, thiserror::Error)]
#[error("invalid test filter: {0}")]
pub struct InvalidFilter(String);

#[derive(Debug, Clone)]
pub enum Filter {
    All,
    /// Matches a test or a case by either name.
    Either(Regex),
    Both {
        test: Regex,
        case: Regex,
    },
}

impl Filter {
    pub fn parse(expression: &str) -> Result<Filter, InvalidFilter> {
        if expression.is_empty() {
            return Ok(Filter::All);
        }
        let compile =
            |text: &str| Regex::new(text).map_err(|error| InvalidFilter(error.to_string()));
        let parts: Vec<&str> = expression.split("//").collect();
        match parts.as_slice() {
            [either] => Ok(Filter::Either(compile(either)?)),
            [test, case] => Ok(Filter::Both {
                test: compile(test)?,
                case: compile(case)?,
            }),
            _ => Err(InvalidFilter(
                r#"a filter may include at most one "//""#.into(),
            )),
        }
    }

    pub(crate) fn matches_test(&self, test: &Test) -> bool {
        match self {
            Filter::All => true,
            Filter::Either(regex) => {
                regex.is_match(&test.name)
                    || test
                        .cases
                        .iter()
                        .any(|case| self.matches_case(&test.name, &case.name))
            }
            Filter::Both { test: regex, .. } => regex.is_match(&test.name),
        }
    }

    pub(crate) fn matches_case(&self, test_name: &str, case_name: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Either(regex) => regex.is_match(case_name) || regex.is_match(test_name),
            Filter::Both { test, case } => case.is_match(case_name) && test.is_match(test_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Case;

    fn test_named(name: &str, cases: &[&str]) -> Test {
        Test {
            name: name.into(),
            template: String::new(),
            constraint: String::new(),
            expansion: String::new(),
            cases: cases
                .iter()
                .map(|case| Case {
                    name: (*case).into(),
                    object: String::new(),
                    inventory: Vec::new(),
                    assertions: Vec::new(),
                    skip: false,
                })
                .collect(),
            invalid: false,
            skip: false,
        }
    }

    #[test]
    fn check() {
        let labels = test_named("require-foo-label", &["missing-label", "with-label"]);
        let other = test_named("forbid-bar", &["empty-object"]);
        // (filter, test, case, test matches, case matches)
        let cases: &[(&str, &Test, &str, bool, bool)] = &[
            ("", &labels, "missing-label", true, true),
            ("require-foo//missing", &labels, "missing-label", true, true),
            ("require-foo//missing", &labels, "with-label", true, false),
            ("require-foo//missing", &other, "empty-object", false, false),
            // Without `//`, a test runs when one of its cases matches, and a case runs
            // when its test matches.
            ("empty-object", &other, "empty-object", true, true),
            ("empty-object", &labels, "with-label", false, false),
            ("^require-foo-label$", &labels, "with-label", true, true),
            ("//^empty", &other, "empty-object", true, true),
            ("//^empty", &labels, "missing-label", true, false),
        ];
        for (expression, test, case, test_matches, case_matches) in cases {
            let filter = Filter::parse(expression).unwrap();
            assert_eq!(
                filter.matches_test(test),
                *test_matches,
                "{expression} on test {}",
                test.name
            );
            assert_eq!(
                filter.matches_case(&test.name, case),
                *case_matches,
                "{expression} on case {}/{case}",
                test.name
            );
        }
    }

    #[test]
    fn refuses_two_separators_and_bad_expressions() {
        assert!(Filter::parse("a//b//c").is_err());
        assert!(Filter::parse("(").is_err());
        assert!(Filter::parse("a//(").is_err());
    }
}
