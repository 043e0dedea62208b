//! One downstream example read from a JSON object: the fields each format takes (with the
//! spellings of the common exports), the prompt and answer text built from them, and how a
//! generated answer is scored.

use serde_json::{Map, Value};

use super::JsonlFormat;
use crate::metrics::{choice_letter, exact_match, parse_choice, rouge_l_max, token_f1};

/// Most choices a multiple-choice example may have (lettered A–Z).
pub const MAX_CHOICES: usize = 26;

/// A downstream example: the context (cut from the left when too long), the rest of the
/// prompt, and the gold answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Which format it was read as.
    pub format: JsonlFormat,
    /// The passage or document (may be empty).
    pub context: String,
    /// The question (empty for summarisation).
    pub question: String,
    /// The options of a multiple-choice example, in order (empty otherwise).
    pub choices: Vec<String>,
    /// Gold answers: every accepted answer (QA), the reference summary, or the letter of
    /// the right choice. The first is the training target.
    pub answers: Vec<String>,
    /// Index of the right choice (multiple choice only).
    pub label: Option<usize>,
}

/// How a generated answer did, by the format's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExampleScore {
    /// Question answering: SQuAD exact match and token F1, each the max over the gold answers.
    Qa {
        /// 0 or 1.
        exact_match: f64,
        /// In [0, 1].
        f1: f64,
    },
    /// Summarisation: ROUGE-L F-measure against the reference.
    Summary {
        /// In [0, 1].
        rouge_l: f64,
    },
    /// Multiple choice: the choice the answer names (if any) and the right one.
    Choice {
        /// Parsed from the generated text; `None` when it names no choice.
        predicted: Option<usize>,
        /// The right choice.
        label: usize,
    },
}

impl Example {
    /// Reads an example of `format` from `v`; the error says which field is missing or has
    /// the wrong type (the caller adds the file and line).
    pub fn from_json(v: &Value, format: JsonlFormat) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("expected a JSON object, got {}", kind_of(v)))?;
        match format {
            JsonlFormat::Qa => Ok(Self {
                format,
                context: context(obj, "context")?,
                question: string(obj, &["question"])?,
                choices: Vec::new(),
                answers: answers(obj)?,
                label: None,
            }),
            JsonlFormat::Summarization => Ok(Self {
                format,
                context: string(obj, &["document", "article"])?,
                question: String::new(),
                choices: Vec::new(),
                answers: vec![string(obj, &["summary", "highlights"])?],
                label: None,
            }),
            JsonlFormat::Choice => {
                let choices = choices(obj)?;
                let label = label(obj, choices.len())?;
                Ok(Self {
                    format,
                    context: if obj.contains_key("context") {
                        context(obj, "context")?
                    } else {
                        String::new()
                    },
                    question: string(obj, &["question"])?,
                    answers: vec![choice_letter(label).to_string()],
                    choices,
                    label: Some(label),
                })
            }
        }
    }

    /// The prompt after the context: the question (and lettered choices) and the answer cue.
    /// Starts with a blank line, so it follows the context as a new paragraph.
    pub fn prompt_tail(&self) -> String {
        match self.format {
            JsonlFormat::Qa => format!("\n\nQuestion: {}\nAnswer:", self.question.trim()),
            JsonlFormat::Summarization => {
                "\n\nSummarize the text above in a few sentences.\nSummary:".to_string()
            }
            JsonlFormat::Choice => {
                let mut s = format!("\n\nQuestion: {}\n", self.question.trim());
                for (i, c) in self.choices.iter().enumerate() {
                    s += &format!("{}. {}\n", choice_letter(i), c.trim());
                }
                s + "Answer:"
            }
        }
    }

    /// The training target: a space, then the first gold answer on one line (its
    /// whitespace, CNN-DM's line breaks between highlights included, collapsed to single
    /// spaces), so an answer always ends at the first line break.
    pub fn target(&self) -> String {
        format!(" {}", one_line(&self.answers[0]))
    }

    /// Scores a generated continuation of the prompt by the format's metrics. Only its
    /// first line counts: targets are one line (see [`Example::target`]), so what a model
    /// writes after a line break is not part of its answer.
    pub fn score(&self, generated: &str) -> ExampleScore {
        let generated = generated.split('\n').next().unwrap_or("");
        match self.format {
            JsonlFormat::Qa => ExampleScore::Qa {
                exact_match: exact_match(generated, &self.answers),
                f1: token_f1(generated, &self.answers),
            },
            JsonlFormat::Summarization => ExampleScore::Summary {
                rouge_l: rouge_l_max(generated, &self.answers),
            },
            JsonlFormat::Choice => ExampleScore::Choice {
                predicted: parse_choice(generated, self.choices.len()),
                // Always set for this format (`from_json` reads it with the choices).
                label: self.label.unwrap_or(0),
            },
        }
    }
}

/// `s` with every whitespace run (line breaks too) as one space, trimmed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The first of `names` present, which must be a string.
fn string(obj: &Map<String, Value>, names: &[&str]) -> Result<String, String> {
    let spelled = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    let (name, v) = names
        .iter()
        .find_map(|n| obj.get(*n).map(|v| (n, v)))
        .ok_or_else(|| format!("missing field {spelled}"))?;
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("field `{name}` must be a string, got {}", kind_of(v)))
}

/// A context: a string, or HotpotQA's paragraphs, either as `[[title, [sentence, …]], …]`
/// or as `{"title": [...], "sentences": [[...], ...]}`; paragraphs become
/// `"title: sentences"` separated by blank lines.
fn context(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    let v = obj
        .get(name)
        .ok_or_else(|| format!("missing field `{name}`"))?;
    let bad = || {
        format!(
            "field `{name}` must be a string or HotpotQA paragraphs ([[title, [sentences]]] \
             or {{title, sentences}}), got {}",
            kind_of(v)
        )
    };
    let paragraph = |title: &Value, sentences: &Value| -> Option<String> {
        let sentences: Option<Vec<&str>> =
            sentences.as_array()?.iter().map(Value::as_str).collect();
        Some(format!(
            "{}: {}",
            title.as_str()?,
            sentences?.concat().trim()
        ))
    };
    let paragraphs: Option<Vec<String>> = match v {
        Value::String(s) => return Ok(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|p| match p.as_array()?.as_slice() {
                [title, sentences] => paragraph(title, sentences),
                _ => None,
            })
            .collect(),
        Value::Object(o) => match (o.get("title"), o.get("sentences")) {
            (Some(Value::Array(t)), Some(Value::Array(s))) if t.len() == s.len() => {
                t.iter().zip(s).map(|(t, s)| paragraph(t, s)).collect()
            }
            _ => None,
        },
        _ => None,
    };
    paragraphs.map(|p| p.join("\n\n")).ok_or_else(bad)
}

/// QA gold answers: `answers` (or `answer`) as a string, a list of strings, or SQuAD's
/// `{"text": [...], "answer_start": [...]}`. At least one, none empty.
fn answers(obj: &Map<String, Value>) -> Result<Vec<String>, String> {
    let (name, v) = ["answers", "answer"]
        .iter()
        .find_map(|n| obj.get(*n).map(|v| (*n, v)))
        .ok_or("missing field `answers` or `answer`")?;
    let list = match v {
        Value::Object(o) => o.get("text").unwrap_or(&Value::Null),
        v => v,
    };
    let out: Option<Vec<String>> = match list {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => None,
    };
    let out = out.ok_or_else(|| {
        format!(
            "field `{name}` must be a string, a list of strings or {{\"text\": [...]}}, got {}",
            kind_of(v)
        )
    })?;
    if out.is_empty() || out.iter().any(|a| a.trim().is_empty()) {
        return Err(format!(
            "field `{name}` must hold at least one answer, none empty"
        ));
    }
    Ok(out)
}

/// Multiple-choice options: `choices` (or `options`) as a list of strings, or LongBench v2's
/// `choice_A`, `choice_B`, … fields. Between 2 and [`MAX_CHOICES`].
fn choices(obj: &Map<String, Value>) -> Result<Vec<String>, String> {
    let out = if let Some((name, v)) = ["choices", "options"]
        .iter()
        .find_map(|n| obj.get(*n).map(|v| (*n, v)))
    {
        let list: Option<Vec<String>> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect());
        list.ok_or_else(|| {
            format!(
                "field `{name}` must be a list of strings, got {}",
                kind_of(v)
            )
        })?
    } else {
        let mut out = Vec::new();
        while let Some(v) = obj.get(&format!("choice_{}", choice_letter(out.len()))) {
            out.push(v.as_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "field `choice_{}` must be a string, got {}",
                    choice_letter(out.len()),
                    kind_of(v)
                )
            })?);
            if out.len() == MAX_CHOICES {
                break;
            }
        }
        if out.is_empty() {
            return Err("missing field `choices` (or `choice_A`, `choice_B`, …)".into());
        }
        out
    };
    if !(2..=MAX_CHOICES).contains(&out.len()) {
        return Err(format!(
            "a multiple-choice example needs 2..={MAX_CHOICES} choices, got {}",
            out.len()
        ));
    }
    Ok(out)
}

/// The right choice: `label` (or `answer`) as a 0-based index or a letter (`"B"`).
fn label(obj: &Map<String, Value>, n: usize) -> Result<usize, String> {
    let (name, v) = ["label", "answer"]
        .iter()
        .find_map(|k| obj.get(*k).map(|v| (*k, v)))
        .ok_or("missing field `label` (or `answer`)")?;
    let idx = match v {
        Value::Number(x) => x.as_u64().map(|i| i as usize),
        Value::String(s) => match s.trim().as_bytes() {
            [c @ b'A'..=b'Z'] => Some(usize::from(c - b'A')),
            _ => None,
        },
        _ => None,
    };
    match idx {
        Some(i) if i < n => Ok(i),
        _ => Err(format!(
            "field `{name}` must be a choice index 0..{n} or a letter A..{}, got {v}",
            choice_letter(n - 1)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qa(answers: &[&str]) -> Example {
        let v = serde_json::json!({"context": "c", "question": "q", "answers": answers});
        Example::from_json(&v, JsonlFormat::Qa).unwrap()
    }

    #[test]
    fn targets_are_one_line_and_scores_read_the_first_line() {
        let v = serde_json::json!({
            "article": "A story.",
            "highlights": "First point .\nSecond   point ."
        });
        let ex = Example::from_json(&v, JsonlFormat::Summarization).unwrap();
        assert_eq!(ex.target(), " First point . Second point .");
        let ex = qa(&["Paris"]);
        assert_eq!(
            ex.score(" Paris\nQuestion: and London?"),
            ExampleScore::Qa {
                exact_match: 1.0,
                f1: 1.0
            }
        );
    }
}
