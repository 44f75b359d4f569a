//! OPA's deprecated built-ins, which OPA keeps for Rego v0 modules and Gatekeeper therefore
//! offers to v0 templates, registered as regorus extensions (regorus 0.14.1 has none of them):
//!
//! | built-in | OPA implementation it follows |
//! |---|---|
//! | `any(c)`, `all(c)` | `topdown/aggregates.go`: `c` an array or a set; an element counts only if it *is* `true`; `any` of an empty collection is `false`, `all` of one is `true` |
//! | `re_match(pattern, value)` | `topdown/regex.go`: the very function behind `regex.match` |
//! | `set_diff(a, b)` | `topdown/sets.go`: `a - b`, both sets |
//! | `cast_array`, `cast_set` | `topdown/casts.go`: an array or a set, converted (a set's elements in sorted order) |
//! | `cast_string`, `cast_boolean`, `cast_null`, `cast_object` | `topdown/casts.go`: the value itself when it has that type |
//! | `net.cidr_overlap(cidr, cidr_or_ip)` | `topdown/cidr.go`: the very function behind `net.cidr_contains` (Go `net.ParseCIDR` / `ParseIP` / `IPNet.Contains`, IPv4-mapped IPv6 included) |
//!
//! Every other operand type is OPA's type error ("operand N must be …"). Under Gatekeeper's
//! non-strict built-in errors, a built-in error makes the expression undefined; regorus treats
//! any extension error as a hard evaluation error, so [`register`] with `strict == false`
//! returns undefined instead, as regorus does for its own built-ins. A regex too large for
//! regorus' size limit stays a hard error, as it is for regorus' `regex.match`.
//! An undefined argument never reaches an extension: regorus makes the call undefined.
//!
//! In Rego v1 OPA refuses a call of a deprecated built-in when parsing ("deprecated built-in
//! function calls in expression: any"), so a v1 template using one does not load, even when
//! the call is never reached. [`first_call`] finds such a call in a module's text so that the
//! caller can refuse the template the same way. (OPA applies the same check to v0 modules that
//! `import rego.v1`, but Gatekeeper refuses that import in templates.)
//!
//! Known gaps, shared with regorus' own built-ins: OPA's compile-time type checker refuses a
//! statically wrong operand (`any(1)`), where here the call is undefined at evaluation;
//! `cast_array` of a set holding both sets and objects orders them as regorus does (sets
//! before objects), OPA the other way round; `re_match` uses Rust's `regex` syntax, like
//! regorus' `regex.match`, not Go's RE2 (they agree on common patterns).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use regorus::Value;

/// Names and arities of the built-ins provided.
pub(crate) const BUILTINS: [(&str, u8); 11] = [
    ("any", 1),
    ("all", 1),
    ("re_match", 2),
    ("set_diff", 2),
    ("cast_array", 1),
    ("cast_set", 1),
    ("cast_string", 1),
    ("cast_boolean", 1),
    ("cast_null", 1),
    ("cast_object", 1),
    ("net.cidr_overlap", 2),
];

/// regorus' compiled-size limit for `regex.match` patterns (`builtins/regex.rs`).
const REGEX_SIZE_LIMIT: usize = 100 * 1024;
/// Compiled patterns kept per engine by `re_match` (OPA keeps 100 process-wide).
const REGEX_CACHE_MAX: usize = 100;

/// Why a built-in failed.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// OPA's built-in error (wrong operand type, unparsable operand): undefined unless strict.
    Builtin(String),
    /// A resource limit: always an error.
    Limit(String),
}

/// The error an extension reports to regorus.
#[derive(Debug)]
pub(crate) struct BuiltinError {
    name: &'static str,
    message: String,
}

impl fmt::Display for BuiltinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for BuiltinError {}

/// Registers every built-in of [`BUILTINS`] on `engine` (meant for engines compiling Rego v0).
/// `strict` must match the engine's `set_strict_builtin_errors`.
pub(crate) fn register(engine: &mut regorus::Engine, strict: bool) -> Result<(), String> {
    for (name, nargs) in BUILTINS {
        let added = match name {
            "any" => engine.add_extension(name.into(), nargs, wrap(name, strict, any)),
            "all" => engine.add_extension(name.into(), nargs, wrap(name, strict, all)),
            "re_match" => {
                let mut cache: HashMap<String, regex::Regex> = HashMap::new();
                let re_match = move |args: &[Value]| re_match(&mut cache, args);
                engine.add_extension(name.into(), nargs, wrap(name, strict, re_match))
            }
            "set_diff" => engine.add_extension(name.into(), nargs, wrap(name, strict, set_diff)),
            "cast_array" => {
                engine.add_extension(name.into(), nargs, wrap(name, strict, cast_array))
            }
            "cast_set" => engine.add_extension(name.into(), nargs, wrap(name, strict, cast_set)),
            "cast_string" => {
                engine.add_extension(name.into(), nargs, wrap(name, strict, cast_string))
            }
            "cast_boolean" => {
                engine.add_extension(name.into(), nargs, wrap(name, strict, cast_boolean))
            }
            "cast_null" => engine.add_extension(name.into(), nargs, wrap(name, strict, cast_null)),
            "cast_object" => {
                engine.add_extension(name.into(), nargs, wrap(name, strict, cast_object))
            }
            "net.cidr_overlap" => {
                engine.add_extension(name.into(), nargs, wrap(name, strict, cidr_contains))
            }
            _ => unreachable!("every name of BUILTINS is registered"),
        };
        added.map_err(|error| format!("registering built-in {name}: {error}"))?;
    }
    Ok(())
}

/// A built-in as a boxed regorus extension. The error type is inferred from regorus'
/// `Extension` (an `anyhow::Error`, built from [`BuiltinError`]).
fn wrap<F, E>(
    name: &'static str,
    strict: bool,
    mut builtin: F,
) -> Box<impl FnMut(Vec<Value>) -> Result<Value, E> + Clone + Send + Sync>
where
    F: FnMut(&[Value]) -> Result<Value, Failure> + Clone + Send + Sync,
    E: From<BuiltinError>,
{
    Box::new(move |args: Vec<Value>| match builtin(&args) {
        Ok(value) => Ok(value),
        Err(Failure::Builtin(_)) if !strict => Ok(Value::Undefined),
        Err(Failure::Builtin(message) | Failure::Limit(message)) => {
            Err(E::from(BuiltinError { name, message }))
        }
    })
}

/// OPA's `ast.ValueName`.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// OPA's `builtins.NewOperandTypeErr`.
fn operand_type_error(position: usize, got: &Value, expected: &[&str]) -> Failure {
    let expected = match expected {
        [one] => (*one).to_owned(),
        many => format!("one of {{{}}}", many.join(", ")),
    };
    Failure::Builtin(format!(
        "operand {position} must be {expected} but got {}",
        type_name(got)
    ))
}

fn string_operand(args: &[Value], position: usize) -> Result<&str, Failure> {
    match &args[position - 1] {
        Value::String(text) => Ok(text),
        other => Err(operand_type_error(position, other, &["string"])),
    }
}

fn any(args: &[Value]) -> Result<Value, Failure> {
    let is_true = |value: &Value| *value == Value::Bool(true);
    match &args[0] {
        Value::Array(items) => Ok(Value::Bool(items.iter().any(is_true))),
        Value::Set(items) => Ok(Value::Bool(items.contains(&Value::Bool(true)))),
        other => Err(operand_type_error(1, other, &["array", "set"])),
    }
}

fn all(args: &[Value]) -> Result<Value, Failure> {
    let is_true = |value: &Value| *value == Value::Bool(true);
    match &args[0] {
        Value::Array(items) => Ok(Value::Bool(items.iter().all(is_true))),
        Value::Set(items) => Ok(Value::Bool(items.iter().all(is_true))),
        other => Err(operand_type_error(1, other, &["array", "set"])),
    }
}

fn re_match(cache: &mut HashMap<String, regex::Regex>, args: &[Value]) -> Result<Value, Failure> {
    let pattern = string_operand(args, 1)?;
    let value = string_operand(args, 2)?;
    if let Some(regex) = cache.get(pattern) {
        return Ok(Value::Bool(regex.is_match(value)));
    }
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(limit) => Failure::Limit(format!(
                "regular expression exceeds the size limit of {limit} bytes"
            )),
            error => Failure::Builtin(format!("error parsing regexp: {error}")),
        })?;
    let matched = regex.is_match(value);
    if cache.len() >= REGEX_CACHE_MAX {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), regex);
    Ok(Value::Bool(matched))
}

fn set_diff(args: &[Value]) -> Result<Value, Failure> {
    match (&args[0], &args[1]) {
        (Value::Set(a), Value::Set(b)) => Ok(Value::from(
            a.iter()
                .filter(|item| !b.contains(item))
                .cloned()
                .collect::<BTreeSet<Value>>(),
        )),
        (Value::Set(_), other) => Err(operand_type_error(2, other, &["set"])),
        (other, _) => Err(operand_type_error(1, other, &["set"])),
    }
}

fn cast_array(args: &[Value]) -> Result<Value, Failure> {
    match &args[0] {
        value @ Value::Array(_) => Ok(value.clone()),
        Value::Set(items) => Ok(Value::from(
            items.iter_sorted().cloned().collect::<Vec<Value>>(),
        )),
        other => Err(operand_type_error(1, other, &["array", "set"])),
    }
}

fn cast_set(args: &[Value]) -> Result<Value, Failure> {
    match &args[0] {
        Value::Array(items) => Ok(Value::from(items.iter().cloned().collect::<BTreeSet<_>>())),
        value @ Value::Set(_) => Ok(value.clone()),
        other => Err(operand_type_error(1, other, &["array", "set"])),
    }
}

/// `cast_string`, `cast_boolean`, `cast_null`, `cast_object`: the value when of that type.
fn cast_same(args: &[Value], expected: &'static str) -> Result<Value, Failure> {
    let value = &args[0];
    if type_name(value) == expected {
        Ok(value.clone())
    } else {
        Err(operand_type_error(1, value, &[expected]))
    }
}

fn cast_string(args: &[Value]) -> Result<Value, Failure> {
    cast_same(args, "string")
}

fn cast_boolean(args: &[Value]) -> Result<Value, Failure> {
    cast_same(args, "boolean")
}

fn cast_null(args: &[Value]) -> Result<Value, Failure> {
    cast_same(args, "null")
}

fn cast_object(args: &[Value]) -> Result<Value, Failure> {
    cast_same(args, "object")
}

/// A network as Go's `net.ParseCIDR` returns it: address bytes (4 for an IPv4 literal, 16
/// otherwise) already masked, and a mask of the same length.
#[derive(Debug, Clone, PartialEq)]
struct Network {
    ip: Vec<u8>,
    mask: Vec<u8>,
}

/// Go's `netip.ParseAddr` (no zones): 4 bytes for dotted IPv4, 16 for IPv6 (IPv4-mapped too).
fn parse_address(text: &str) -> Option<Vec<u8>> {
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Some(v4.octets().to_vec());
    }
    text.parse::<Ipv6Addr>().ok().map(|v6| v6.octets().to_vec())
}

/// Go's `net.ParseCIDR`: `address/prefix`, the prefix decimal digits (leading zeros allowed)
/// at most the address' bit length.
fn parse_cidr(text: &str) -> Option<Network> {
    let (address, prefix) = text.split_once('/')?;
    let ip = parse_address(address)?;
    if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let prefix: usize = prefix.parse().ok()?;
    if prefix > ip.len() * 8 {
        return None;
    }
    let mask: Vec<u8> = (0..ip.len())
        .map(|index| {
            let ones = prefix.saturating_sub(index * 8).min(8);
            // `ones` is at most 8: the shift stays within u16.
            (0xff00_u16 >> ones) as u8
        })
        .collect();
    let ip = ip
        .iter()
        .zip(&mask)
        .map(|(byte, mask)| byte & mask)
        .collect();
    Some(Network { ip, mask })
}

/// Go's `IP.To4`: the IPv4 form of a 4-byte or IPv4-mapped 16-byte address.
fn to4(ip: &[u8]) -> Option<&[u8]> {
    match ip.len() {
        4 => Some(ip),
        16 if ip[..10].iter().all(|byte| *byte == 0) && ip[10] == 0xff && ip[11] == 0xff => {
            Some(&ip[12..])
        }
        _ => None,
    }
}

/// Go's `IPNet.Contains`.
fn network_contains(network: &Network, ip: &[u8]) -> bool {
    let (number, mask) = match to4(&network.ip) {
        Some(number) if network.mask.len() == 16 => (number, &network.mask[12..]),
        Some(number) => (number, &network.mask[..]),
        None => (&network.ip[..], &network.mask[..]),
    };
    let ip = to4(ip).unwrap_or(ip);
    ip.len() == number.len()
        && ip
            .iter()
            .zip(number)
            .zip(mask)
            .all(|((ip, number), mask)| ip & mask == number & mask)
}

/// OPA's `net.cidr_contains` (and so `net.cidr_overlap`).
fn cidr_contains(args: &[Value]) -> Result<Value, Failure> {
    let cidr = string_operand(args, 1)?;
    let network = parse_cidr(cidr)
        .ok_or_else(|| Failure::Builtin(format!("invalid CIDR address: {cidr}")))?;
    // OPA names the second operand "operand 1" too.
    let other = match &args[1] {
        Value::String(text) => text,
        other => return Err(operand_type_error(1, other, &["string"])),
    };
    if let Some(ip) = parse_address(other) {
        return Ok(Value::Bool(network_contains(&network, &ip)));
    }
    let Some(inner) = parse_cidr(other) else {
        return Err(Failure::Builtin(format!(
            "not a valid textual representation of an IP address or CIDR: {other}"
        )));
    };
    let last: Vec<u8> = inner
        .ip
        .iter()
        .zip(&inner.mask)
        .map(|(byte, mask)| byte | !mask)
        .collect();
    Ok(Value::Bool(
        network_contains(&network, &inner.ip) && network_contains(&network, &last),
    ))
}

/// The first call of a deprecated built-in in a module's source (comments and strings
/// skipped): a name of [`BUILTINS`], not preceded by `.`, followed by `(`. This is what OPA's
/// Rego v1 check refuses. (A module defining its own function named `any` has that head found
/// too; OPA would refuse only its calls.)
pub(crate) fn first_call(source: &str) -> Option<&'static str> {
    let chars: Vec<char> = source.chars().collect();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            '#' => {
                while index < chars.len() && chars[index] != '\n' {
                    index += 1;
                }
            }
            '"' => {
                index += 1;
                while index < chars.len() && chars[index] != '"' {
                    index += if chars[index] == '\\' { 2 } else { 1 };
                }
                index += 1;
            }
            '`' => {
                index += 1;
                while index < chars.len() && chars[index] != '`' {
                    index += 1;
                }
                index += 1;
            }
            c if (c.is_alphabetic() || c == '_')
                && (index == 0 || (chars[index - 1] != '.' && !is_word(chars[index - 1]))) =>
            {
                // A dotted reference: word(.word)*.
                let start = index;
                loop {
                    while index < chars.len() && is_word(chars[index]) {
                        index += 1;
                    }
                    if index + 1 < chars.len()
                        && chars[index] == '.'
                        && (chars[index + 1].is_alphabetic() || chars[index + 1] == '_')
                    {
                        index += 1;
                    } else {
                        break;
                    }
                }
                let name: String = chars[start..index].iter().collect();
                let mut next = index;
                while next < chars.len() && (chars[next] == ' ' || chars[next] == '\t') {
                    next += 1;
                }
                if chars.get(next) == Some(&'(')
                    && let Some((builtin, _)) =
                        BUILTINS.iter().find(|(builtin, _)| *builtin == name)
                {
                    return Some(builtin);
                }
            }
            _ => index += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An engine with the built-ins, evaluating `expression` in a v0 module.
    fn evaluate_with(strict: bool, expression: &str) -> Result<Value, String> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine.set_strict_builtin_errors(strict);
        register(&mut engine, strict).unwrap();
        engine
            .add_policy(
                "test.rego".into(),
                format!("package test\n\nx = y {{\n  y := {expression}\n}}\n"),
            )
            .map_err(|error| error.to_string())?;
        engine.set_input(Value::from(json!({
            "n": 1, "s": "a", "t": true, "o": {"k": 1}, "a": [1], "z": null,
        })));
        engine
            .eval_rule("data.test.x".into())
            .map_err(|error| error.to_string())
    }

    fn evaluate(expression: &str) -> Value {
        evaluate_with(false, expression).unwrap()
    }

    fn json_of(expression: &str) -> serde_json::Value {
        serde_json::to_value(evaluate(expression)).unwrap()
    }

    fn strict_error(expression: &str) -> String {
        evaluate_with(true, expression).unwrap_err()
    }

    #[test]
    fn any_is_true_when_an_element_is_true() {
        assert_eq!(json_of("any([false, true])"), json!(true));
        assert_eq!(json_of("any({false, true})"), json!(true));
        assert_eq!(json_of("any([false, false])"), json!(false));
        assert_eq!(json_of("any([])"), json!(false));
        assert_eq!(json_of("any(set())"), json!(false));
        // Only `true` itself counts.
        assert_eq!(json_of(r#"any([1, "true", {}, [true]])"#), json!(false));
        assert_eq!(json_of(r#"any({1, "true", null})"#), json!(false));
    }

    #[test]
    fn all_is_true_when_every_element_is_true() {
        assert_eq!(json_of("all([true, true])"), json!(true));
        assert_eq!(json_of("all({true})"), json!(true));
        assert_eq!(json_of("all([true, false])"), json!(false));
        assert_eq!(json_of("all({true, false})"), json!(false));
        assert_eq!(json_of("all([])"), json!(true));
        assert_eq!(json_of("all(set())"), json!(true));
        assert_eq!(json_of("all([true, 1])"), json!(false));
        assert_eq!(json_of(r#"all({true, "true"})"#), json!(false));
    }

    #[test]
    fn any_and_all_refuse_other_types() {
        for expression in [
            "any(input.n)",
            "any(input.o)",
            "any(input.s)",
            "all(input.t)",
            "all(input.z)",
            "all(input.o)",
        ] {
            // Gatekeeper's non-strict built-in errors: undefined, not an evaluation error.
            assert_eq!(evaluate(expression), Value::Undefined, "{expression}");
        }
        assert!(
            strict_error("any(input.n)")
                .contains("any: operand 1 must be one of {array, set} but got number")
        );
        assert!(
            strict_error("all(input.o)")
                .contains("all: operand 1 must be one of {array, set} but got object")
        );
    }

    #[test]
    fn re_match_is_regex_match() {
        assert_eq!(json_of(r#"re_match("^a+$", "aaa")"#), json!(true));
        assert_eq!(json_of(r#"re_match("^a+$", "aab")"#), json!(false));
        // Unanchored, like Go's MatchString.
        assert_eq!(json_of(r#"re_match("b", "abc")"#), json!(true));
        assert_eq!(json_of(r#"re_match("", "")"#), json!(true));
        // The same pattern again (cached) and a different one.
        assert_eq!(
            json_of(r#"[re_match("^a", "ab"), re_match("^a", "ba"), re_match("c$", "abc")]"#),
            json!([true, false, true])
        );
        // Same answers as regex.match.
        for (pattern, value) in [("^[0-9]+[KMG]i?$", "100Mi"), ("@sha256:", "x:1")] {
            assert_eq!(
                evaluate(&format!("re_match({pattern:?}, {value:?})")),
                evaluate(&format!("regex.match({pattern:?}, {value:?})"))
            );
        }
    }

    #[test]
    fn re_match_errors() {
        assert_eq!(evaluate(r#"re_match("(", "a")"#), Value::Undefined);
        assert_eq!(evaluate(r#"re_match(input.n, "a")"#), Value::Undefined);
        assert_eq!(evaluate(r#"re_match("a", input.n)"#), Value::Undefined);
        assert!(strict_error(r#"re_match("(", "a")"#).contains("re_match: error parsing regexp"));
        assert!(
            strict_error(r#"re_match(input.n, "a")"#)
                .contains("operand 1 must be string but got number")
        );
        assert!(
            strict_error(r#"re_match("a", input.a)"#)
                .contains("operand 2 must be string but got array")
        );
        // A pattern over regorus' size limit stays an error, as for regex.match.
        let error = evaluate_with(false, r#"re_match("\\w{1000}\\w{1000}", "a")"#).unwrap_err();
        assert!(error.contains("size limit"), "{error}");
    }

    #[test]
    fn set_diff_is_set_minus() {
        assert_eq!(json_of("set_diff({1, 2, 3}, {2, 4})"), json!([1, 3]));
        assert_eq!(json_of("set_diff(set(), {1})"), json!([]));
        assert_eq!(json_of("set_diff({1}, set())"), json!([1]));
        assert_eq!(
            evaluate("set_diff({1, 2, 3}, {2, 4})"),
            evaluate("{1, 2, 3} - {2, 4}")
        );
        assert_eq!(evaluate("set_diff([1], {1})"), Value::Undefined);
        assert_eq!(evaluate("set_diff({1}, [1])"), Value::Undefined);
        assert!(strict_error("set_diff([1], {1})").contains("operand 1 must be set but got array"));
        assert!(
            strict_error("set_diff({1}, input.o)").contains("operand 2 must be set but got object")
        );
    }

    #[test]
    fn cast_array_and_cast_set_convert_collections() {
        assert_eq!(json_of("cast_array([3, 1, 1])"), json!([3, 1, 1]));
        assert_eq!(json_of(r#"cast_array({"b", "a"})"#), json!(["a", "b"]));
        assert_eq!(json_of("cast_array(set())"), json!([]));
        assert_eq!(evaluate("cast_set([3, 1, 1])"), evaluate("{1, 3}"));
        assert_eq!(evaluate("cast_set({2})"), evaluate("{2}"));
        assert_eq!(evaluate("cast_set([])"), evaluate("set()"));
        for expression in [
            "cast_array(input.o)",
            "cast_array(input.s)",
            "cast_set(input.n)",
        ] {
            assert_eq!(evaluate(expression), Value::Undefined, "{expression}");
        }
        assert!(
            strict_error("cast_set(input.z)")
                .contains("cast_set: operand 1 must be one of {array, set} but got null")
        );
    }

    #[test]
    fn scalar_and_object_casts_keep_values_of_their_type_only() {
        assert_eq!(json_of(r#"cast_string("x")"#), json!("x"));
        assert_eq!(json_of("cast_boolean(false)"), json!(false));
        assert_eq!(json_of("cast_null(null)"), json!(null));
        assert_eq!(json_of(r#"cast_object({"k": [1]})"#), json!({"k": [1]}));
        assert_eq!(json_of("cast_object({})"), json!({}));
        // No conversion: a value of another type is an error, so undefined here.
        for expression in [
            "cast_string(input.n)",
            "cast_string(input.t)",
            "cast_boolean(input.s)",
            "cast_boolean(input.n)",
            "cast_null(input.t)",
            "cast_null(input.s)",
            "cast_object(input.a)",
            "cast_object({1})",
        ] {
            assert_eq!(evaluate(expression), Value::Undefined, "{expression}");
        }
        assert!(
            strict_error("cast_string(input.n)")
                .contains("operand 1 must be string but got number")
        );
        assert!(
            strict_error("cast_boolean(input.s)")
                .contains("operand 1 must be boolean but got string")
        );
        assert!(
            strict_error("cast_null(input.t)").contains("operand 1 must be null but got boolean")
        );
        assert!(strict_error("cast_object({1})").contains("operand 1 must be object but got set"));
    }

    #[test]
    fn cidr_overlap_is_cidr_contains() {
        let cases = [
            (r#""10.0.0.0/8", "10.1.2.3""#, true),
            (r#""10.0.0.0/8", "11.1.2.3""#, false),
            (r#""10.0.0.0/8", "10.1.0.0/16""#, true),
            (r#""10.0.0.0/16", "10.0.0.0/8""#, false),
            (r#""10.0.0.0/8", "10.0.0.0/8""#, true),
            // The network address is masked.
            (r#""10.1.2.3/8", "10.200.0.1""#, true),
            (r#""192.168.1.1/32", "192.168.1.1""#, true),
            (r#""192.168.1.1/32", "192.168.1.2""#, false),
            (r#""0.0.0.0/0", "255.255.255.255""#, true),
            (r#""::/0", "2001:db8::1""#, true),
            (r#""2001:db8::/32", "2001:db8:1::1""#, true),
            (r#""2001:db8::/32", "2001:db9::1""#, false),
            (r#""2001:db8::/32", "2001:db8:ff00::/40""#, true),
            (r#""fd00::/8", "10.0.0.1""#, false),
            (r#""10.0.0.0/8", "::1""#, false),
            // IPv4-mapped IPv6 is IPv4 (Go's To4), both ways.
            (r#""10.0.0.0/8", "::ffff:10.1.2.3""#, true),
            (r#""::ffff:10.0.0.0/104", "10.1.2.3""#, true),
            (r#""::ffff:10.0.0.0/104", "11.1.2.3""#, false),
            // Leading zeros in the prefix are accepted, as by Go.
            (r#""10.0.0.0/008", "10.1.2.3""#, true),
        ];
        for (arguments, expected) in cases {
            assert_eq!(
                evaluate(&format!("net.cidr_overlap({arguments})")),
                Value::Bool(expected),
                "{arguments}"
            );
            if !arguments.contains("::ffff:") && !arguments.contains("/00") {
                // regorus' own net.cidr_contains agrees, except on IPv4-mapped addresses and
                // prefixes with leading zeros (where it departs from Go).
                assert_eq!(
                    evaluate(&format!("net.cidr_overlap({arguments})")),
                    evaluate(&format!("net.cidr_contains({arguments})")),
                    "{arguments}"
                );
            }
        }
    }

    #[test]
    fn cidr_overlap_errors() {
        for arguments in [
            r#""10.0.0.0", "10.0.0.1""#,
            r#""10.0.0.0/33", "10.0.0.1""#,
            r#""10.0.0.0/+8", "10.0.0.1""#,
            r#""10.0.0.0/", "10.0.0.1""#,
            r#""010.0.0.0/8", "10.0.0.1""#,
            r#""10.0.0.0/8", "not an ip""#,
            r#""10.0.0.0/8", "10.0.0.0/40""#,
            r#""fe80::/10", "fe80::1%eth0""#,
            r#"input.n, "10.0.0.1""#,
            r#""10.0.0.0/8", input.n"#,
        ] {
            assert_eq!(
                evaluate(&format!("net.cidr_overlap({arguments})")),
                Value::Undefined,
                "{arguments}"
            );
        }
        assert!(
            strict_error(r#"net.cidr_overlap("10.0.0.0/8", "x")"#).contains(
                "net.cidr_overlap: not a valid textual representation of an IP address or CIDR: x"
            )
        );
        assert!(
            strict_error(r#"net.cidr_overlap("x", "10.0.0.1")"#)
                .contains("invalid CIDR address: x")
        );
        assert!(
            strict_error(r#"net.cidr_overlap("10.0.0.0/8", input.n)"#)
                .contains("operand 1 must be string but got number")
        );
    }

    #[test]
    fn undefined_arguments_make_the_call_undefined() {
        for expression in [
            "any(input.missing)",
            "all(input.missing)",
            r#"re_match("a", input.missing)"#,
            "set_diff(input.missing, {1})",
            "cast_array(input.missing)",
            r#"net.cidr_overlap(input.missing, "10.0.0.1")"#,
        ] {
            assert_eq!(evaluate(expression), Value::Undefined, "{expression}");
        }
    }

    #[test]
    fn negation_of_a_failed_call_is_true_as_in_opa() {
        // `not any(1)`: the call errors, non-strict makes it undefined, `not` makes it true.
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine.set_strict_builtin_errors(false);
        register(&mut engine, false).unwrap();
        engine
            .add_policy(
                "t.rego".into(),
                "package t\np { not any(input.n) }\nq { not all([true]) }\n".into(),
            )
            .unwrap();
        engine.set_input(Value::from(json!({"n": 1})));
        assert_eq!(
            engine.eval_rule("data.t.p".into()).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            engine.eval_rule("data.t.q".into()).unwrap(),
            Value::Undefined
        );
    }

    #[test]
    fn registering_twice_is_refused_by_regorus() {
        let mut engine = regorus::Engine::new();
        register(&mut engine, false).unwrap();
        assert!(register(&mut engine, false).is_err());
    }

    #[test]
    fn without_registration_regorus_has_none_of_them() {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine
            .add_policy("t.rego".into(), "package t\np { any([true]) }\n".into())
            .unwrap();
        let error = engine.eval_rule("data.t.p".into()).unwrap_err();
        assert!(error.to_string().contains("could not find function any"));
    }

    #[test]
    fn first_call_finds_calls_only() {
        assert_eq!(first_call("p { any([true]) }"), Some("any"));
        assert_eq!(first_call("p if { x := all (xs) }"), Some("all"));
        assert_eq!(
            first_call("p if net.cidr_overlap(\"a\", \"b\")"),
            Some("net.cidr_overlap")
        );
        assert_eq!(first_call("p if re_match(`(`, x)"), Some("re_match"));
        for source in [
            "p if { regex.match(\"a\", x) }",
            "# any(x) in a comment\np := 1",
            "p := \"all(x) in a string\"",
            "p := `any(x)` ",
            "p if { x.any(y) }",
            "p if { data.lib.all(y) }",
            "p if { anything(y); my_all(z); cast_strings(w) }",
            "p if { input.net.cidr_overlap(a, b) }",
            "p := any",
        ] {
            assert_eq!(first_call(source), None, "{source}");
        }
        assert_eq!(
            first_call("p := \"\\\"\" ; q { cast_set(x) }"),
            Some("cast_set")
        );
    }

    // Through a real template: gatekeeper-library's `artifacthub/library/general/imagedigests/
    // 1.0.0` (`re_match` and `all`, in a v0 template with a lib), trimmed to its containers
    // rule.
    const IMAGE_DIGESTS: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8simagedigests
spec:
  crd:
    spec:
      names:
        kind: K8sImageDigests
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8simagedigests

        import data.lib.exempt_container.is_exempt

        violation[{"msg": msg}] {
          container := input.review.object.spec.containers[_]
          not is_exempt(container)
          satisfied := [re_match("@[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", container.image)]
          not all(satisfied)
          msg := sprintf("container <%v> uses an image without a digest <%v>", [container.name, container.image])
        }
      libs:
        - |
          package lib.exempt_container

          is_exempt(container) {
              exempt_images := object.get(object.get(input, "parameters", {}), "exemptImages", [])
              img := container.image
              exemption := exempt_images[_]
              endswith(exemption, "*")
              startswith(img, trim_suffix(exemption, "*"))
          }
"#;

    fn template_value(text: &str) -> serde_json::Value {
        serde_norway::from_str(text).unwrap()
    }

    fn review_messages(
        template: serde_json::Value,
        parameters: serde_json::Value,
        object: serde_json::Value,
    ) -> Result<Vec<String>, crate::Error> {
        let template = crate::Template::from_value(&template)?;
        let kind = template.kind().to_owned();
        let mut set = crate::PolicySet::new();
        set.add_template(template)?;
        set.add_constraint(crate::Constraint::from_value(&json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": kind,
            "metadata": {"name": "c"},
            "spec": {"parameters": parameters},
        }))?)?;
        let outcome = set.review(&crate::Review::from_object(&object)?, None)?;
        Ok(outcome.violations.into_iter().map(|v| v.msg).collect())
    }

    fn pod(images: &[&str]) -> serde_json::Value {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(index, image)| json!({"name": format!("c{index}"), "image": image}))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": containers},
        })
    }

    #[test]
    fn a_v0_library_template_uses_re_match_and_all() {
        let digest = "openpolicyagent/opa:0.9.2@sha256:04ff8fce2afd1a3bc26260348e5b290e8d945b1fad4b4c16d22834c2f3a1814a";
        let messages = review_messages(
            template_value(IMAGE_DIGESTS),
            json!({}),
            pod(&[digest, "nginx:1.25", "busybox"]),
        )
        .unwrap();
        assert_eq!(
            messages,
            vec![
                "container <c1> uses an image without a digest <nginx:1.25>",
                "container <c2> uses an image without a digest <busybox>",
            ]
        );
        let messages = review_messages(
            template_value(IMAGE_DIGESTS),
            json!({"exemptImages": ["nginx*"]}),
            pod(&[digest, "nginx:1.25"]),
        )
        .unwrap();
        assert!(messages.is_empty(), "{messages:?}");
    }

    fn code_template(version: Option<&str>, rego: &str, libs: &[&str]) -> serde_json::Value {
        let mut source = json!({"rego": rego, "libs": libs});
        if let Some(version) = version {
            source["version"] = json!(version);
        }
        json!({
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": "k8sdeprecated"},
            "spec": {
                "crd": {"spec": {"names": {"kind": "K8sDeprecated"}}},
                "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [
                    {"engine": "Rego", "source": source}
                ]}]
            }
        })
    }

    #[test]
    fn every_builtin_is_available_to_v0_templates() {
        let rego = r#"package k8sdeprecated

violation[{"msg": msg}] {
  input.review.object.kind == "Pod"
  any([false, true])
  all(set())
  re_match("^p$", input.review.object.metadata.name)
  set_diff({1, 2}, {2}) == {1}
  cast_array({1}) == [1]
  cast_set([1, 1]) == {1}
  cast_string("s") == "s"
  cast_boolean(true)
  cast_null(null) == null
  cast_object({}) == {}
  net.cidr_overlap("10.0.0.0/8", "10.1.2.3")
  msg := "all eleven"
}
"#;
        let messages = review_messages(code_template(None, rego, &[]), json!({}), pod(&["x"]));
        assert_eq!(messages.unwrap(), vec!["all eleven"]);
    }

    #[test]
    fn v1_templates_refuse_deprecated_builtins() {
        // Even where the call is unreachable with an empty review: OPA refuses it when parsing.
        let rego = "package k8sdeprecated\n\nviolation contains {\"msg\": \"m\"} if {\n  input.review.object.kind == \"Pod\"\n  any([true])\n}\n";
        let error =
            review_messages(code_template(Some("v1"), rego, &[]), json!({}), pod(&[])).unwrap_err();
        assert_eq!(error.code(), "rego.compile", "{error}");
        assert!(
            error
                .to_string()
                .contains("deprecated built-in function calls in expression: any"),
            "{error}"
        );
        // In a v1 lib too.
        let rego = "package k8sdeprecated\n\nimport data.lib.l\n\nviolation contains {\"msg\": \"m\"} if l.f(input.review.object.kind)\n";
        let lib = "package lib.l\n\nf(kind) if re_match(\"^P\", kind)\n";
        let error = review_messages(code_template(Some("v1"), rego, &[lib]), json!({}), pod(&[]))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("deprecated built-in function calls in expression: re_match"),
            "{error}"
        );
        // The v1 replacements are fine.
        let rego = "package k8sdeprecated\n\nviolation contains {\"msg\": \"m\"} if {\n  input.review.object.kind == \"Pod\"\n  regex.match(\"^P\", input.review.object.kind)\n}\n";
        let messages = review_messages(code_template(Some("v1"), rego, &[]), json!({}), pod(&[]));
        assert_eq!(messages.unwrap(), vec!["m"]);
    }
}
