//! Averaging [`ExampleScore`]s over an evaluation set, metric by metric.

use super::ExampleScore;

/// Running means of [`ExampleScore`]s over an evaluation set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreTally {
    /// Examples scored.
    pub examples: usize,
    sum_em: f64,
    sum_f1: f64,
    sum_rouge_l: f64,
    qa: usize,
    summaries: usize,
    choices: usize,
    right_choices: usize,
}

impl ScoreTally {
    /// Counts one example's score.
    pub fn add(&mut self, score: ExampleScore) {
        self.examples += 1;
        match score {
            ExampleScore::Qa { exact_match, f1 } => {
                self.qa += 1;
                self.sum_em += exact_match;
                self.sum_f1 += f1;
            }
            ExampleScore::Summary { rouge_l } => {
                self.summaries += 1;
                self.sum_rouge_l += rouge_l;
            }
            ExampleScore::Choice { predicted, label } => {
                self.choices += 1;
                self.right_choices += usize::from(predicted == Some(label));
            }
        }
    }

    /// Mean exact match over the QA examples (`None` without any).
    pub fn exact_match(&self) -> Option<f64> {
        (self.qa > 0).then(|| self.sum_em / self.qa as f64)
    }

    /// Mean token F1 over the QA examples.
    pub fn f1(&self) -> Option<f64> {
        (self.qa > 0).then(|| self.sum_f1 / self.qa as f64)
    }

    /// Mean ROUGE-L over the summaries.
    pub fn rouge_l(&self) -> Option<f64> {
        (self.summaries > 0).then(|| self.sum_rouge_l / self.summaries as f64)
    }

    /// Accuracy over the multiple-choice examples.
    pub fn accuracy(&self) -> Option<f64> {
        (self.choices > 0).then(|| self.right_choices as f64 / self.choices as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::{Example, JsonlFormat};

    fn qa(answers: &[&str]) -> Example {
        let v = serde_json::json!({"context": "c", "question": "q", "answers": answers});
        Example::from_json(&v, JsonlFormat::Qa).unwrap()
    }

    #[test]
    fn tally_means_per_metric() {
        let mut t = ScoreTally::default();
        assert_eq!(
            (t.exact_match(), t.rouge_l(), t.accuracy()),
            (None, None, None)
        );
        let ex = qa(&["blue whale"]);
        t.add(ex.score("blue whale"));
        t.add(ex.score("whale"));
        t.add(ExampleScore::Summary { rouge_l: 0.25 });
        t.add(ExampleScore::Choice {
            predicted: Some(1),
            label: 1,
        });
        t.add(ExampleScore::Choice {
            predicted: None,
            label: 0,
        });
        assert_eq!(t.examples, 5);
        assert_eq!(t.exact_match(), Some(0.5));
        // F1 of "whale" vs "blue whale": P = 1, R = 1/2, F1 = 2/3; mean (1 + 2/3) / 2.
        assert!((t.f1().unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(t.rouge_l(), Some(0.25));
        assert_eq!(t.accuracy(), Some(0.5));
    }
}
