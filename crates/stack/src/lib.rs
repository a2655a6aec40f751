//! The stack file.
#[cfg(test)]
mod exp {
    use serde::Deserialize;
    use serde_saphyr::{MessageFormatter, Spanned};
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Top {
        n: Option<Spanned<u64>>,
        s: Option<Spanned<String>>,
        b: Option<Spanned<bool>>,
        l: Option<Vec<Spanned<String>>>,
    }
    fn show(y: &str) {
        match serde_saphyr::from_str::<Top>(y) {
            Ok(t) => println!(
                "OK {:?} {:?} {:?}",
                t.n.map(|v| v.value),
                t.s.map(|s| (
                    s.value,
                    s.referenced.line(),
                    s.referenced.column(),
                    s.referenced.span()
                )),
                t.l.map(|l| l
                    .into_iter()
                    .map(|s| (s.value, s.referenced.column()))
                    .collect::<Vec<_>>())
            ),
            Err(e) => {
                let loc = e.location();
                println!(
                    "ERR {:?} user={}",
                    loc.map(|l| (l.line(), l.column())),
                    serde_saphyr::UserMessageFormatter.format_message(e.without_snippet())
                );
            }
        }
    }
    #[test]
    fn exp() {
        for y in [
            "n: -1",
            "n: 1.5",
            "n: abc",
            "n: 99999999999999999999999",
            "s: true",
            "s: [1]",
            "s: {a: 1}",
            "s:",
            "b: 3",
            "",
            "# only\n",
            "s: \"{dir}/x\"",
            "s: '{dir}/x'",
            "s: >\n  a {x}\n  b\n",
            "l: [a, \"{b}\", c]",
            "l: x",
            "- a",
            "n: 1\n\tx: 2",
            "s: ~",
            "n: 0x10",
            "n: 010",
            "&a n: 1",
        ] {
            print!("{y:?} => ");
            show(y);
        }
    }
}
