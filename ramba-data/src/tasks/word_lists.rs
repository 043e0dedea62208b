//! The prompt shape shared by the word-frequency tasks (`common_words`, `frequent_words`): an
//! instruction, a long list of made-up words, filler up to the exact length, and the
//! question, answered with the top words.

use anyhow::{bail, Result};

use super::task_prompt::join_items;
use super::{TaskContext, TaskPrompt};

/// `head ++ list ++ filler ++ tail`, then `gold` as the answer, exactly `len` tokens: the
/// filler (passkey sentences, whose words the made-up words avoid) takes up whatever the
/// whole words of the list leave over. `what` names the task in the error when the pieces
/// are too long.
pub(crate) fn assemble(
    ctx: &TaskContext,
    len: usize,
    head: &[u32],
    list: &[u32],
    tail: &[u32],
    gold: Vec<String>,
    what: &str,
) -> Result<TaskPrompt> {
    let answer_text = join_items(&gold);
    let answer = ctx.tok.encode(&answer_text);
    let fixed = head.len() + list.len() + tail.len() + answer.len();
    let Some(pad) = len.checked_sub(fixed) else {
        bail!(
            "{what} needs {fixed} tokens but is {len} tokens (tokenizer {})",
            ctx.tok.name()
        );
    };
    let mut prompt = Vec::with_capacity(len);
    prompt.extend_from_slice(head);
    prompt.extend_from_slice(list);
    prompt.extend(ctx.parts.filler.take(pad, 0).0);
    let haystack = (head.len(), prompt.len());
    prompt.extend_from_slice(tail);
    Ok(TaskPrompt {
        prompt,
        answer,
        answer_text,
        gold,
        needles: Vec::new(),
        target: None,
        haystack,
    })
}
