//! Tokenizing an example into prompt + answer within a length limit.

use super::{Example, TooLong};
use crate::tokenizer::Tokenizer;

/// A tokenized example that fits its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedExample {
    /// Prompt then answer.
    pub tokens: Vec<u32>,
    /// Where the answer starts: `tokens[..prompt_len]` is the prompt.
    pub prompt_len: usize,
    /// Context tokens dropped from the left to fit (0 when it fit whole).
    pub cut: usize,
}

impl FittedExample {
    /// The prompt tokens.
    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    /// The answer tokens.
    pub fn answer(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

/// `ex` as at most `max_len` tokens, or `None` when it cannot be: too long under
/// [`TooLong::Skip`], or (under [`TooLong::Truncate`]) too long even with no context left.
/// The context, the rest of the prompt and the answer are tokenized separately (the rest
/// starts with a line break and the answer with a space, so word-boundary tokenizers split
/// there anyway), which is what makes cutting the context at any token possible.
pub fn fit_example(
    ex: &Example,
    tok: &dyn Tokenizer,
    max_len: usize,
    too_long: TooLong,
) -> Option<FittedExample> {
    let context = tok.encode(&ex.context);
    let tail = tok.encode(&ex.prompt_tail());
    let answer = tok.encode(&ex.target());
    let fixed = tail.len() + answer.len();
    let total = context.len() + fixed;
    let cut = total.saturating_sub(max_len);
    if cut > 0 && (too_long == TooLong::Skip || cut > context.len()) {
        return None;
    }
    let mut tokens = Vec::with_capacity(total - cut);
    tokens.extend_from_slice(&context[cut..]);
    tokens.extend_from_slice(&tail);
    let prompt_len = tokens.len();
    tokens.extend_from_slice(&answer);
    Some(FittedExample {
        tokens,
        prompt_len,
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::load::tests::fixture;
    use crate::downstream::{load_examples, JsonlFormat};
    use crate::tokenizer::ByteTokenizer;

    #[test]
    fn fitting_keeps_the_question_and_answer_and_cuts_the_context_from_the_left() {
        let tok = ByteTokenizer;
        let ex = load_examples(&fixture("squad.jsonl"), JsonlFormat::Qa).unwrap();
        let owls = &ex[2];
        let whole = "Owls hunt mostly at night.\n\nQuestion: When do owls hunt?\nAnswer: at night";
        let f = fit_example(owls, &tok, 1000, TooLong::Truncate).unwrap();
        assert_eq!(tok.decode(&f.tokens), whole);
        assert_eq!(tok.decode(f.answer()), " at night");
        assert_eq!(f.cut, 0);
        // Exactly as long as the limit: still whole.
        let f = fit_example(owls, &tok, whole.len(), TooLong::Skip).unwrap();
        assert_eq!(f.cut, 0);
        // Ten tokens too long: the first ten bytes of the context go, nothing else.
        let f = fit_example(owls, &tok, whole.len() - 10, TooLong::Truncate).unwrap();
        assert_eq!(f.cut, 10);
        assert_eq!(tok.decode(&f.tokens), &whole[10..]);
        assert_eq!(
            tok.decode(f.prompt()),
            &whole[10..whole.len() - " at night".len()]
        );
        assert!(fit_example(owls, &tok, whole.len() - 1, TooLong::Skip).is_none());
        // The whole context cut is still an example; one token less is not.
        let context = "Owls hunt mostly at night.".len();
        let f = fit_example(owls, &tok, whole.len() - context, TooLong::Truncate).unwrap();
        assert!(tok.decode(&f.tokens).starts_with("\n\nQuestion:"));
        assert!(fit_example(owls, &tok, whole.len() - context - 1, TooLong::Truncate).is_none());
    }
}
