//! `application/x-www-form-urlencoded`, as the AWS query protocol (EC2) sends it.

/// Decodes a form body into its pairs, in order. Malformed escapes are kept literally, as a
/// lenient server would; the proxy only reads the body, the upstream still judges it.
pub fn decode(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = unescape(it.next().unwrap_or_default());
            let v = unescape(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes pairs the way the AWS SDKs do: unreserved characters literal, everything else
/// percent-encoded (spaces as `%20`).
pub fn encode(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape_into(&mut out, k);
        out.push('=');
        escape_into(&mut out, v);
    }
    out
}

fn escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The first value of `key`.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_reserved_and_unicode() {
        let pairs = vec![
            ("Action".to_owned(), "CreateFleet".to_owned()),
            ("Tag.1.Value".to_owned(), "a b&c=d/é%".to_owned()),
            ("Empty".to_owned(), String::new()),
        ];
        let enc = encode(&pairs);
        assert!(!enc.contains(' '));
        assert_eq!(decode(enc.as_bytes()), pairs);
    }

    #[test]
    fn decodes_plus_and_keeps_bad_escapes() {
        assert_eq!(
            decode(b"a=x+y&b=%zz&c=%4"),
            vec![("a".into(), "x y".into()), ("b".into(), "%zz".into()), ("c".into(), "%4".into())]
        );
    }
}
