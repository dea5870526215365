//! RFC 8785 conformance: every published vector (cyberphone/json-canonicalization `testdata/`,
//! copied unchanged into `testdata/rfc8785/`) canonicalizes to its expected bytes, and number
//! formatting agrees with an independent reference implementation of ECMAScript
//! `Number::toString` (exact decimal expansion; see `ecmascript` below).
//!
//! Reproduce one vector from a shell with node (ES2015+ `JSON.stringify` is JCS for inputs
//! whose keys are already sorted, which the outputs are):
//! `node -e 'process.stdout.write(JSON.stringify(JSON.parse(require("fs").readFileSync("crates/audit/testdata/rfc8785/output/values.json","utf8"))))'`

use std::fs;
use std::path::PathBuf;

use evalstream_audit::canonical::{canonicalize, canonicalize_str, format_number};
use proptest::prelude::*;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join("rfc8785")
}

/// (name, input text, expected output bytes, outhex bytes)
fn vectors() -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let mut names: Vec<String> = fs::read_dir(testdata().join("input"))
        .expect("testdata/rfc8785/input")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let input = fs::read_to_string(testdata().join("input").join(&name)).unwrap();
            let output = fs::read(testdata().join("output").join(&name)).unwrap();
            let stem = name.trim_end_matches(".json");
            let hex_text =
                fs::read_to_string(testdata().join("outhex").join(format!("{stem}.txt"))).unwrap();
            let outhex = hex::decode(hex_text.split_whitespace().collect::<String>()).unwrap();
            (name, input, output, outhex)
        })
        .collect()
}

#[test]
fn all_published_vectors_pass() {
    let vs = vectors();
    let names: Vec<&str> = vs.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "arrays.json",
            "french.json",
            "structures.json",
            "unicode.json",
            "values.json",
            "weird.json"
        ],
        "the copied vector set changed"
    );
    for (name, input, output, outhex) in &vs {
        assert_eq!(output, outhex, "{name}: output/ and outhex/ disagree");
        let got = canonicalize_str(input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(output),
            "{name}: canonical bytes differ"
        );
        assert_eq!(&got, output, "{name}");
        // Canonical output is a fixed point.
        assert_eq!(&canonicalize_str(std::str::from_utf8(output).unwrap()).unwrap(), output);
    }
}

#[test]
fn the_serde_value_path_agrees_on_the_published_outputs() {
    // From the canonical outputs (whose numbers are shortest round-trip forms, which serde_json
    // parses exactly) the Value path must give the same bytes.
    for (name, _, output, _) in vectors() {
        let v: serde_json::Value = serde_json::from_slice(&output).unwrap();
        assert_eq!(canonicalize(&v).unwrap(), output, "{name}");
    }
}

/// An independent reference for ECMA-262 `Number::toString` (with the recommended step 5 that
/// V8 follows: the shortest digit string that reads back as `x`, closest to `x`, ties to the
/// even digit string), built from the *exact* decimal expansion of `x` rather than from a
/// shortest-digits algorithm, so it shares nothing with the production formatter (ryu-js).
fn ecmascript(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    if x < 0.0 {
        return format!("-{}", ecmascript(-x));
    }
    // Every double is a finite decimal with at most 767 significant digits; 1100 is exact.
    let exact = format!("{x:.1100e}");
    let (mantissa, exp) = exact.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let reads_back = |d: &[u8], e: i32| -> bool {
        let text = format!("0.{}e{}", std::str::from_utf8(d).unwrap(), e + 1);
        text.parse::<f64>().unwrap() == x
    };
    for k in 1..=17usize {
        // The two k-digit candidates around x: truncated (lo) and truncated + 1 (hi).
        let lo = digits[..k].to_vec();
        let mut hi = lo.clone();
        let mut hi_exp = exp;
        let mut i = k;
        loop {
            if i == 0 {
                hi.insert(0, b'1');
                hi.pop();
                hi_exp += 1;
                break;
            }
            i -= 1;
            if hi[i] == b'9' {
                hi[i] = b'0';
            } else {
                hi[i] += 1;
                break;
            }
        }
        let rest = &digits[k..];
        let lo_ok = reads_back(&lo, exp);
        let hi_ok = reads_back(&hi, hi_exp);
        let pick_lo = match (lo_ok, hi_ok) {
            (false, false) => continue,
            (true, false) => true,
            (false, true) => false,
            (true, true) => {
                let nonzero_after_first = rest.iter().skip(1).any(|&d| d != b'0');
                match rest.first().copied().unwrap_or(b'0') {
                    d if d < b'5' => true,
                    d if d > b'5' => false,
                    _ if nonzero_after_first => false,
                    _ => (lo[k - 1] - b'0').is_multiple_of(2), // exact tie: the even one
                }
            }
        };
        let (mut s, e) = if pick_lo { (lo, exp) } else { (hi, hi_exp) };
        while s.len() > 1 && s.last() == Some(&b'0') {
            s.pop();
        }
        return layout(&s, e + 1);
    }
    unreachable!("17 digits always identify a double")
}

/// ECMA-262 Number::toString steps 6-10 for digits `s` (k of them) and decimal exponent `n`
/// (`x = 0.s × 10^n`).
fn layout(s: &[u8], n: i32) -> String {
    let d = std::str::from_utf8(s).unwrap();
    let k = s.len() as i32;
    if k <= n && n <= 21 {
        format!("{d}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &d[..n as usize], &d[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{d}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{d}e{sign}{}", e.abs())
        } else {
            format!("{}.{}e{sign}{}", &d[..1], &d[1..], e.abs())
        }
    }
}

#[test]
fn the_reference_itself_matches_node_on_known_values() {
    // `node -e 'for (const x of [1e21, 1e-7, 5e-324, 1500000000000000.25, 0.1+0.2]) console.log(String(x))'`
    let known = [
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (5e-324, "5e-324"),
        (1500000000000000.2, "1500000000000000.2"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e20, "100000000000000000000"),
        (0.000001, "0.000001"),
        (-1.5e300, "-1.5e+300"),
    ];
    for (x, want) in known {
        assert_eq!(ecmascript(x), want);
    }
    let tie: f64 = "1500000000000000.25".parse().unwrap();
    assert_eq!(ecmascript(tie), "1500000000000000.2");
}

#[test]
fn number_formatting_matches_ecmascript_on_edge_cases() {
    let mut xs =
        vec![0.0, -0.0, 5e-324, -5e-324, f64::MAX, f64::MIN, f64::MIN_POSITIVE, f64::EPSILON];
    for e in -330..=310 {
        for m in [1.0, 1.5, 2.5, 9.999, 7.0, 1.2345678901234567] {
            let x: f64 = format!("{m}e{e}").parse().unwrap();
            xs.extend([
                x,
                -x,
                f64::from_bits(x.to_bits() + 1),
                f64::from_bits(x.to_bits().saturating_sub(1)),
            ]);
        }
    }
    for i in 0..2000u64 {
        let x = (1u64 << 53) as f64 + (i as f64) * 2.0;
        xs.extend([x, (1u64 << 53) as f64 - i as f64, i as f64 / 7.0, i as f64 * 1e15]);
    }
    for x in xs.into_iter().filter(|x| x.is_finite()) {
        assert_eq!(format_number(x).unwrap(), ecmascript(x), "bits {:#018x}", x.to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn number_formatting_matches_ecmascript_on_random_doubles(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assume!(x.is_finite());
        prop_assert_eq!(format_number(x).unwrap(), ecmascript(x));
        // And the text reads back as the same double (round trip), except -0 which is "0".
        let back: f64 = format_number(x).unwrap().parse().unwrap();
        prop_assert!(back == x);
    }

    #[test]
    fn canonicalization_is_idempotent(v in arb_json()) {
        let text = serde_json::to_string(&v).unwrap();
        let once = canonicalize_str(&text).unwrap();
        let twice = canonicalize_str(std::str::from_utf8(&once).unwrap()).unwrap();
        prop_assert_eq!(&once, &twice);
        prop_assert_eq!(canonicalize(&v).unwrap(), once);
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| serde_json::json!(x)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// Hostile input is an error, never a panic: arbitrary text, and valid JSON with one byte
    /// changed or cut short.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), v in arb_json(), at in any::<usize>(),
                                   b in any::<u8>()) {
        let _ = canonicalize_str(&text);
        let mut bytes = serde_json::to_vec(&v).unwrap();
        let i = at % bytes.len();
        bytes[i] = b;
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = canonicalize_str(s);
            let mut cut = i;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = canonicalize_str(&s[..cut]);
        }
        let _ = evalstream_audit::checkpoint::CheckpointBody::parse(&bytes);
    }
}
