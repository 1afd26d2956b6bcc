use super::*;

fn run_all(expr: &str, input: &str) -> Vec<Result<String, String>> {
    let program = compile(expr).unwrap();
    let input = parse_json(input.as_bytes()).unwrap();
    program
        .run(input)
        .map(|r| r.map(|v| v.to_string()))
        .collect()
}

#[test]
fn runs_filters() {
    assert_eq!(
        run_all(".a", r#"{"a": [1, 2.50, "x"]}"#),
        vec![Ok(r#"[1,2.50,"x"]"#.to_string())]
    );
    assert_eq!(
        run_all(".[]", "[1, 2]"),
        vec![Ok("1".to_string()), Ok("2".to_string())]
    );
    assert_eq!(run_all("empty", "1"), vec![]);
    assert_eq!(
        run_all(r#"error("boom")"#, "1"),
        vec![Err("boom".to_string())]
    );
    assert_eq!(
        run_all(r#"error({"a": 1})"#, "1"),
        vec![Err(r#"{"a":1}"#.to_string())]
    );
    assert_eq!(
        run_all(".a.b", r#"{"a": "s"}"#),
        vec![Err(
            r#"cannot use "s" as iterable (array or object)"#.to_string()
        )]
    );
    // the first error ends the stream, as in jq
    assert_eq!(
        run_all(r#"1, error("x"), 2"#, "null"),
        vec![Ok("1".to_string()), Err("x".to_string())]
    );
}

#[test]
fn matches_is_truthiness() {
    let p = compile(".a > 1").unwrap();
    assert_eq!(p.matches(parse_json(br#"{"a": 2}"#).unwrap()), Ok(true));
    assert_eq!(p.matches(parse_json(br#"{"a": 1}"#).unwrap()), Ok(false));
    let p = compile(".[]").unwrap();
    assert_eq!(
        p.matches(parse_json(b"[null, false, 0]").unwrap()),
        Ok(true)
    );
    assert_eq!(p.matches(parse_json(b"[null, false]").unwrap()), Ok(false));
}

#[test]
fn compile_errors_are_readable() {
    let e = |expr: &str| compile(expr).unwrap_err();
    assert_eq!(e(".a | foo"), "undefined filter `foo/0` at column 6");
    assert_eq!(e("map(foo(1))"), "undefined filter `foo/1` at column 5");
    assert_eq!(e(".a | $x"), "undefined variable `$x` at column 6");
    assert_eq!(
        e(".a | (.b"),
        "expected closing parenthesis at end of input"
    );
    assert_eq!(e(".a )"), "unexpected `)` at column 4");
    assert_eq!(e(".a |\n  ) "), "unexpected `)` at line 2, column 3");
    assert_eq!(
        e("if . then 1"),
        "expected else or end but found end of input"
    );
    assert_eq!(e("\"abc"), "expected closing quote at end of input");
    assert_eq!(e("{a: }"), "expected term but found `}` at column 5");
    assert_eq!(e(""), "expected term but found end of input");
    assert_eq!(
        e("import \"x\" as x; ."),
        "cannot load module `x`: module loading not supported"
    );
    assert_eq!(
        e("foo | $y"),
        "undefined filter `foo/0` at column 1; undefined variable `$y` at column 7"
    );
}

#[test]
fn parses_and_writes_json() {
    let round_trip = |json: &str| {
        let mut out = bytes::BytesMut::new();
        write_json(&parse_json(json.as_bytes()).unwrap(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    assert_eq!(
        round_trip(
            r#" {"b": 1, "a": [1.50, -2, 1e3, 123456789012345678901234567890], "s": "\u00e9\n"} "#
        ),
        r#"{"b":1,"a":[1.50,-2,1e3,123456789012345678901234567890],"s":"é\n"}"#
    );
    assert_eq!(
        parse_json(br#"{"a" 1}"#).unwrap_err(),
        "expected colon at byte 5"
    );
    assert_eq!(
        parse_json(br#"{"a": 1"#).unwrap_err(),
        "expected comma or end of sequence at byte 7"
    );
    assert_eq!(
        parse_json(b"\"\\ud800\"").unwrap_err(),
        "expected low surrogate at byte 8"
    );
    assert_eq!(
        parse_json(b"\"\xff\"").unwrap_err(),
        "invalid UTF-8 at byte 1"
    );
    let deep = "[".repeat(10_000);
    assert_eq!(
        parse_json(deep.as_bytes()).unwrap_err(),
        "nesting deeper than 128 levels at byte 128"
    );
}

#[test]
fn writes_like_jaq_display() {
    let cases = [
        r#"{"a":[1,-2,0,9223372036854775807,-9223372036854775808,1.5,1e400,"x\"\\\n\t\r\u0001\u001fé"],"b":null,"c":true,"d":false,"e":{}}"#,
        r#"[[],{},"",-0,0.1]"#,
    ];
    for case in cases {
        let val = parse_json(case.as_bytes()).unwrap();
        let mut out = bytes::BytesMut::new();
        write_json(&val, &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), val.to_string());
    }
    let program = compile(
        "[1.5 * 2, 1 / 3, infinite, nan, -infinite, 1e300 * 1e300, 10000000000000000000000]",
    )
    .unwrap();
    let val = program.run(Val::Null).next().unwrap().unwrap();
    let mut out = bytes::BytesMut::new();
    write_json(&val, &mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), val.to_string());
}
