//! Reading JSONL files into [`Example`]s, with errors that name the file and line.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{Example, JsonlFormat, JSONL_EXTENSIONS};
use crate::files::list_files;

/// The examples of `path`: a file (whatever its extension), or every `*.jsonl` file under a
/// folder, sorted; one JSON object per line, blank lines ignored. A line that is not JSON or
/// lacks the format's fields is an error naming the file and line; so is a source with no
/// examples at all.
pub fn load_examples(path: &Path, format: JsonlFormat) -> Result<Vec<Example>> {
    let files = list_files(path, &JSONL_EXTENSIONS)?;
    let mut out = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read JSONL file {} (must be UTF-8)", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", f.display(), i + 1);
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
            let ex = Example::from_json(&v, format)
                .map_err(|e| anyhow::anyhow!("{}: {e} ({} format)", at(), format.name()))?;
            out.push(ex);
        }
    }
    if out.is_empty() {
        bail!("{} holds no examples (only blank lines)", path.display());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::downstream::ExampleScore;
    use crate::test_util::TempDir;
    use std::path::PathBuf;

    /// A file of `tests/fixtures/`.
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn err(name: &str, format: JsonlFormat) -> String {
        format!("{:#}", load_examples(&fixture(name), format).unwrap_err())
    }

    #[test]
    fn qa_exports_read_squad_and_hotpot_shapes() {
        let ex = load_examples(&fixture("squad.jsonl"), JsonlFormat::Qa).unwrap();
        assert_eq!(ex.len(), 3, "the blank line is skipped");
        assert_eq!(
            ex[0].answers,
            ["on the island of Pharos", "the island of Pharos"]
        );
        assert_eq!(ex[1].answers.len(), 2);
        assert_eq!(ex[2].answers, ["at night"]);
        assert_eq!(ex[2].question, "When do owls hunt?");
        assert_eq!(
            ex[2].prompt_tail(),
            "\n\nQuestion: When do owls hunt?\nAnswer:"
        );
        assert_eq!(ex[2].target(), " at night");
        let h = load_examples(&fixture("hotpot.jsonl"), JsonlFormat::Qa).unwrap();
        assert_eq!(
            h[0].context,
            "Charles Bridge: The Charles Bridge is a bridge in Prague. It was finished in \
             1402.\n\nPrague: Prague lies on the Vltava river."
        );
        assert_eq!(
            h[1].context,
            "Flag: The flag shows a gold star. Its field is blue."
        );
        assert_eq!(h[0].answers, ["Vltava"]);
        // Scored with SQuAD's EM and F1, max over the gold answers.
        assert_eq!(
            ex[0].score("The island of Pharos."),
            ExampleScore::Qa {
                exact_match: 1.0,
                f1: 1.0
            }
        );
        let ExampleScore::Qa { exact_match, f1 } = ex[0].score("island") else {
            panic!("qa scores")
        };
        // "island" vs "island of pharos": P = 1, R = 1/3, F1 = 0.5.
        assert_eq!(exact_match, 0.0);
        assert!((f1 - 0.5).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn summaries_read_xsum_and_cnn_dm_fields() {
        let ex = load_examples(&fixture("xsum.jsonl"), JsonlFormat::Summarization).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[1].answers, ["A museum plans a fossil wing."]);
        assert_eq!(
            ex[2].context,
            "A local baker won the national bread prize with a rye loaf."
        );
        assert_eq!(ex[2].answers, ["Local baker wins national bread prize."]);
        assert_eq!(
            ex[0].prompt_tail(),
            "\n\nSummarize the text above in a few sentences.\nSummary:"
        );
        // ROUGE-L: "a museum plans a wing" vs the 6-word reference: LCS 5, P = 1, R = 5/6.
        let ExampleScore::Summary { rouge_l } = ex[1].score("A museum plans a wing") else {
            panic!("summary scores")
        };
        assert!((rouge_l - 2.0 * (5.0 / 6.0) / (1.0 + 5.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn choices_read_lists_letters_and_longbench_fields() {
        let ex = load_examples(&fixture("longbench.jsonl"), JsonlFormat::Choice).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!((ex[0].label, ex[0].answers[0].as_str()), (Some(1), "B"));
        assert_eq!(ex[1].choices.len(), 4);
        assert_eq!(
            (ex[1].label, ex[1].choices[1].as_str()),
            (Some(1), "In the town hall")
        );
        assert_eq!((ex[2].label, ex[2].context.as_str()), (Some(2), ""));
        assert_eq!(
            ex[2].prompt_tail(),
            "\n\nQuestion: Which of these is a prime number?\nA. 4\nB. 6\nC. 7\nAnswer:"
        );
        assert_eq!(ex[2].target(), " C");
        assert_eq!(
            ex[1].score(" B. In the town hall"),
            ExampleScore::Choice {
                predicted: Some(1),
                label: 1
            }
        );
        assert_eq!(
            ex[1].score(" I think E"),
            ExampleScore::Choice {
                predicted: None,
                label: 1
            }
        );
    }

    #[test]
    fn malformed_lines_are_named_by_file_and_line() {
        let msg = err("malformed.jsonl", JsonlFormat::Qa);
        assert!(msg.contains("malformed.jsonl:3: invalid JSON"), "{msg}");
        let msg = err("missing_field.jsonl", JsonlFormat::Qa);
        assert!(
            msg.contains("missing_field.jsonl:2: missing field `question` (qa format)"),
            "{msg}"
        );
        // The right file in the wrong format names the fields it lacks.
        let msg = err("squad.jsonl", JsonlFormat::Summarization);
        assert!(
            msg.contains("squad.jsonl:1: missing field `document` or `article`"),
            "{msg}"
        );
        let msg = err("xsum.jsonl", JsonlFormat::Choice);
        assert!(
            msg.contains("xsum.jsonl:1: missing field `choices`"),
            "{msg}"
        );
        let d = TempDir::new("jsonl-bad");
        let cases: [(&str, JsonlFormat, &str); 7] = [
            (
                "[1, 2]",
                JsonlFormat::Qa,
                "expected a JSON object, got an array",
            ),
            (
                r#"{"context": "c", "question": 3, "answers": ["a"]}"#,
                JsonlFormat::Qa,
                "field `question` must be a string, got a number",
            ),
            (
                r#"{"context": "c", "question": "q", "answers": []}"#,
                JsonlFormat::Qa,
                "field `answers` must hold at least one answer",
            ),
            (
                r#"{"context": 5, "question": "q", "answers": ["a"]}"#,
                JsonlFormat::Qa,
                "field `context` must be a string or HotpotQA paragraphs",
            ),
            (
                r#"{"question": "q", "choices": ["a", "b"], "label": 2}"#,
                JsonlFormat::Choice,
                "field `label` must be a choice index 0..2 or a letter A..B, got 2",
            ),
            (
                r#"{"question": "q", "choices": ["a"], "label": 0}"#,
                JsonlFormat::Choice,
                "needs 2..=26 choices, got 1",
            ),
            (
                r#"{"document": "d", "summary": null}"#,
                JsonlFormat::Summarization,
                "field `summary` must be a string, got null",
            ),
        ];
        for (line, format, want) in cases {
            let p = d.write("bad.jsonl", format!("\n{line}\n").as_bytes());
            let msg = format!("{:#}", load_examples(&p, format).unwrap_err());
            assert!(msg.contains("bad.jsonl:2: ") && msg.contains(want), "{msg}");
        }
        let p = d.write("empty.jsonl", b"\n\n");
        let msg = format!("{:#}", load_examples(&p, JsonlFormat::Qa).unwrap_err());
        assert!(msg.contains("empty.jsonl holds no examples"), "{msg}");
    }

    #[test]
    fn folders_read_every_jsonl_file_sorted() {
        let d = TempDir::new("jsonl-dir");
        let line = |q: &str| {
            format!("{{\"context\": \"c\", \"question\": \"{q}\", \"answers\": \"a\"}}\n")
        };
        d.write("set/b.jsonl", line("second").as_bytes());
        d.write("set/a/x.jsonl", line("first").as_bytes());
        d.write("set/readme.md", b"not data");
        let ex = load_examples(&d.path().join("set"), JsonlFormat::Qa).unwrap();
        let qs: Vec<&str> = ex.iter().map(|e| e.question.as_str()).collect();
        assert_eq!(qs, ["first", "second"]);
    }
}
