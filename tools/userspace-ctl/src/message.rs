//! MESSAGE payloads: `<sector> <words...>`, where crypt's `key set` may
//! take its key from a file or standard input instead of the command line
//! (a command line is visible to every user in /proc/PID/cmdline), as
//! cryptsetup's `--key-file` does.

/// Whether the message is `key set` without a key on the command line, or
/// with `-` for it: the key is read from `--key-file` or standard input.
pub fn wants_key(words: &[String]) -> bool {
    matches!(words, [k, s] if k == "key" && s == "set")
        || matches!(words, [k, s, d] if k == "key" && s == "set" && d == "-")
}

/// The payload for `sector` and `words`; `key` (the contents of the key
/// file, surrounding white space ignored) completes a `key set` that
/// [`wants_key`]. The caller zeroes the result after sending it.
pub fn payload(sector: &str, words: &[String], key: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(sector.as_bytes());
    match (wants_key(words), key) {
        (true, Some(key)) => {
            let key = key.trim_ascii();
            if key.is_empty() {
                return Err("the key file is empty".into());
            }
            if key.iter().any(|b| b.is_ascii_whitespace()) {
                return Err("the key file holds more than one word (expected one hex key)".into());
            }
            out.extend_from_slice(b" key set ");
            out.extend_from_slice(key);
        }
        (true, None) => {
            return Err(
                "'key set' needs a key: give it, or --key-file FILE ('-' for standard input)"
                    .into(),
            )
        }
        (false, Some(_)) => return Err("--key-file goes with the message 'key set'".into()),
        (false, None) => {
            for w in words {
                out.push(b' ');
                out.extend_from_slice(w.as_bytes());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plain_messages_pass_through() {
        assert_eq!(
            payload("0", &words("key wipe"), None).unwrap(),
            b"0 key wipe"
        );
        assert_eq!(
            payload("8", &words("key set 00ff"), None).unwrap(),
            b"8 key set 00ff"
        );
        assert!(!wants_key(&words("key set 00ff")));
    }

    #[test]
    fn key_from_a_file() {
        assert!(wants_key(&words("key set")));
        assert!(wants_key(&words("key set -")));
        let p = payload("0", &words("key set"), Some(b"  00ff\n")).unwrap();
        assert_eq!(p, b"0 key set 00ff");
        let p = payload("0", &words("key set -"), Some(b"abcd")).unwrap();
        assert_eq!(p, b"0 key set abcd");
    }

    #[test]
    fn refusals() {
        assert!(payload("0", &words("key set"), None)
            .unwrap_err()
            .contains("needs a key"));
        assert!(payload("0", &words("key set"), Some(b"\n"))
            .unwrap_err()
            .contains("empty"));
        assert!(payload("0", &words("key set"), Some(b"aa bb"))
            .unwrap_err()
            .contains("one hex key"));
        assert!(payload("0", &words("key wipe"), Some(b"aa"))
            .unwrap_err()
            .contains("goes with"));
    }
}
