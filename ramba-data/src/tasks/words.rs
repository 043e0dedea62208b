//! The vocabulary of the RULER-style tasks: needle keys (`adjective-noun`), needle values
//! (numbers, UUIDs, words), made-up words for the word-frequency tasks, and drawing them
//! distinct and absent from the haystack.

use std::collections::HashSet;

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::prompt::Filler;

/// First halves of the needle keys.
pub const KEY_ADJECTIVES: [&str; 64] = [
    "able",
    "amber",
    "ancient",
    "brave",
    "brisk",
    "calm",
    "clever",
    "coral",
    "crisp",
    "curious",
    "daring",
    "dusty",
    "eager",
    "early",
    "electric",
    "elegant",
    "faint",
    "fancy",
    "fearless",
    "fierce",
    "frosty",
    "gentle",
    "gilded",
    "gloomy",
    "graceful",
    "hidden",
    "hollow",
    "humble",
    "icy",
    "jolly",
    "keen",
    "lively",
    "lonely",
    "lucky",
    "majestic",
    "misty",
    "modest",
    "narrow",
    "noble",
    "odd",
    "patient",
    "plain",
    "polite",
    "proud",
    "quiet",
    "rapid",
    "rare",
    "restless",
    "rough",
    "rusty",
    "sacred",
    "scarlet",
    "shiny",
    "silent",
    "sleepy",
    "smooth",
    "sturdy",
    "swift",
    "tender",
    "tidy",
    "vivid",
    "wandering",
    "wild",
    "witty",
];

/// Second halves of the needle keys.
pub const KEY_NOUNS: [&str; 64] = [
    "anchor", "badger", "banjo", "beacon", "biscuit", "bison", "bucket", "cabin", "cactus",
    "camel", "castle", "cellar", "chimney", "cobra", "comet", "compass", "cottage", "crane",
    "crystal", "dolphin", "dragon", "engine", "feather", "ferry", "fiddle", "fountain", "goblet",
    "gondola", "hammer", "helmet", "hornet", "igloo", "jacket", "jaguar", "kitten", "ladder",
    "lobster", "locket", "magnet", "mammoth", "meteor", "monarch", "mosaic", "nectar", "oasis",
    "otter", "paddle", "parrot", "pelican", "piano", "pigeon", "pirate", "pyramid", "raven",
    "saucer", "scooter", "sparrow", "statue", "tractor", "trumpet", "tunnel", "turtle", "voyage",
    "walrus",
];

/// Needle values of kind `word`.
pub const VALUE_WORDS: [&str; 64] = [
    "acorn", "almond", "apricot", "avocado", "bamboo", "barley", "basil", "blossom", "bramble",
    "cabbage", "caramel", "cashew", "celery", "cherry", "chestnut", "cinnamon", "clover",
    "coconut", "cumin", "daisy", "fennel", "fig", "garlic", "ginger", "grape", "guava", "hazel",
    "honey", "iris", "kale", "kiwi", "lavender", "leek", "lentil", "lilac", "lime", "lotus",
    "lychee", "mango", "maple", "melon", "mint", "mustard", "nutmeg", "olive", "onion", "papaya",
    "parsley", "peach", "peanut", "pear", "plum", "poppy", "potato", "pumpkin", "quince", "radish",
    "raisin", "saffron", "sesame", "spinach", "thyme", "tulip", "turnip",
];

/// What a needle's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeedleValue {
    /// A seven-digit number (`1000000..=9999999`).
    #[default]
    Number,
    /// A random UUID in its 8-4-4-4-12 lowercase hex form.
    Uuid,
    /// A word of [`VALUE_WORDS`].
    Word,
}

impl NeedleValue {
    /// How the prompts name the value (`"number"`, `"uuid"`, `"word"`).
    pub fn noun(self) -> &'static str {
        match self {
            NeedleValue::Number => "number",
            NeedleValue::Uuid => "uuid",
            NeedleValue::Word => "word",
        }
    }

    /// A value of the longest form (for the fit checks).
    pub(crate) fn longest(self) -> String {
        match self {
            NeedleValue::Number => "9999999".into(),
            NeedleValue::Uuid => "ffffffff-ffff-ffff-ffff-ffffffffffff".into(),
            NeedleValue::Word => longest(&VALUE_WORDS).into(),
        }
    }

    fn draw(self, rng: &mut dyn RngCore) -> String {
        match self {
            NeedleValue::Number => rng.random_range(1_000_000..=9_999_999u32).to_string(),
            NeedleValue::Uuid => {
                let hex: String = (0..32)
                    .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
                    .collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                )
            }
            NeedleValue::Word => VALUE_WORDS[rng.random_range(0..VALUE_WORDS.len())].into(),
        }
    }
}

/// The longest word of `words`.
pub(crate) fn longest<'a>(words: &[&'a str]) -> &'a str {
    words.iter().copied().max_by_key(|w| w.len()).unwrap_or("")
}

/// A needle key of the longest form (for the fit checks).
pub(crate) fn longest_key() -> String {
    format!("{}-{}", longest(&KEY_ADJECTIVES), longest(&KEY_NOUNS))
}

/// Draws made-up things until `n` distinct ones are found that are not in `taken` and do not
/// occur in the haystack `hay`; each accepted one is added to `taken`, so later draws avoid
/// it too. `what` names them in the error raised when too few exist (a small word list
/// against a large haystack, or more needles than the list holds).
pub(crate) fn draw_distinct(
    n: usize,
    hay: &Filler,
    taken: &mut HashSet<String>,
    what: &str,
    mut draw: impl FnMut(&mut dyn RngCore) -> String,
    rng: &mut dyn RngCore,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    // Generous: the pools are at least 64 long, so reaching this means they are exhausted.
    let mut attempts = 200 * n + 1000;
    while out.len() < n {
        if attempts == 0 {
            bail!(
                "cannot draw {n} distinct {what} that do not occur in the haystack \
                 (found {}); use fewer needles or another value kind",
                out.len()
            );
        }
        attempts -= 1;
        let v = draw(rng);
        if !hay.contains_word(&v) && !taken.contains(&v) {
            taken.insert(v.clone());
            out.push(v);
        }
    }
    Ok(out)
}

/// `n` distinct needle values of `kind`, none in `taken` or the haystack.
pub(crate) fn draw_values(
    kind: NeedleValue,
    n: usize,
    hay: &Filler,
    taken: &mut HashSet<String>,
    rng: &mut dyn RngCore,
) -> Result<Vec<String>> {
    let what = format!("{} values", kind.noun());
    draw_distinct(n, hay, taken, &what, |r| kind.draw(r), rng)
}

/// `n` distinct `adjective-noun` keys, none in `taken` or the haystack.
pub(crate) fn draw_keys(
    n: usize,
    hay: &Filler,
    taken: &mut HashSet<String>,
    rng: &mut dyn RngCore,
) -> Result<Vec<String>> {
    let key = |r: &mut dyn RngCore| {
        format!(
            "{}-{}",
            KEY_ADJECTIVES[r.random_range(0..KEY_ADJECTIVES.len())],
            KEY_NOUNS[r.random_range(0..KEY_NOUNS.len())]
        )
    };
    draw_distinct(n, hay, taken, "needle keys", key, rng)
}

/// Consonants and vowels of [`made_up_word`].
const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
const VOWELS: &[u8] = b"aeiou";

/// Letters in a made-up word.
pub(crate) const MADE_UP_LEN: usize = 6;

/// A pronounceable made-up word of [`MADE_UP_LEN`] letters (consonant, vowel, …), from
/// 14³ × 5³ = 343 000 possible: vocabulary for the word-frequency tasks that no model knows
/// from pretraining.
pub(crate) fn made_up_word(rng: &mut dyn RngCore) -> String {
    (0..MADE_UP_LEN)
        .map(|i| {
            let set = if i % 2 == 0 { CONSONANTS } else { VOWELS };
            char::from(set[rng.random_range(0..set.len())])
        })
        .collect()
}

/// `n` distinct made-up words that do not occur in the haystack `hay`.
pub(crate) fn draw_made_up(n: usize, hay: &Filler, rng: &mut dyn RngCore) -> Result<Vec<String>> {
    draw_distinct(
        n,
        hay,
        &mut HashSet::new(),
        "made-up words",
        made_up_word,
        rng,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::HaystackText;
    use crate::tokenizer::ByteTokenizer;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn word_lists_are_distinct_lowercase_and_not_in_the_filler() {
        let filler = Filler::new(&ByteTokenizer).unwrap();
        let mut all = HashSet::new();
        for w in KEY_ADJECTIVES.iter().chain(&KEY_NOUNS).chain(&VALUE_WORDS) {
            assert!(w.chars().all(|c| c.is_ascii_lowercase()), "{w}");
            assert!(all.insert(*w), "{w} twice");
            assert!(!filler.contains_word(w), "{w} is a filler word");
        }
    }

    #[test]
    fn values_have_their_form() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..50 {
            let n = NeedleValue::Number.draw(&mut rng);
            assert_eq!(n.len(), 7);
            assert!(n.parse::<u32>().is_ok());
            let u = NeedleValue::Uuid.draw(&mut rng);
            let parts: Vec<usize> = u.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{u}");
            assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert_eq!(u, u.to_lowercase());
            assert!(VALUE_WORDS.contains(&NeedleValue::Word.draw(&mut rng).as_str()));
            let m = made_up_word(&mut rng);
            assert_eq!(m.len(), MADE_UP_LEN);
        }
        for kind in [NeedleValue::Number, NeedleValue::Uuid, NeedleValue::Word] {
            let n = kind.longest().len();
            assert!((0..50).all(|_| kind.draw(&mut rng).len() <= n));
        }
    }

    #[test]
    fn draws_avoid_the_haystack_and_each_other() {
        let tok = ByteTokenizer;
        // A haystack holding all value words but the last four.
        let text: Vec<String> = VALUE_WORDS[..60].iter().map(|w| format!("{w}.")).collect();
        let hay = HaystackText::from_text(&text.join(" "), "t")
            .unwrap()
            .filler(&tok)
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut taken = HashSet::new();
        let got = draw_values(NeedleValue::Word, 4, &hay, &mut taken, &mut rng).unwrap();
        let mut sorted = got.clone();
        sorted.sort();
        let mut free: Vec<String> = VALUE_WORDS[60..].iter().map(|w| w.to_string()).collect();
        free.sort();
        assert_eq!(sorted, free, "exactly the four words not in the haystack");
        // They are taken now: a fifth cannot be drawn, and the error says why.
        let msg = format!(
            "{:#}",
            draw_values(NeedleValue::Word, 1, &hay, &mut taken, &mut rng).unwrap_err()
        );
        assert!(
            msg.contains("word values") && msg.contains("haystack"),
            "{msg}"
        );
        let keys = draw_keys(64, &hay, &mut taken, &mut rng).unwrap();
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 64);
        // Numbers the haystack holds are never drawn.
        let nums: Vec<String> = (1_000_000..1_000_100).map(|n| format!("{n}.")).collect();
        let hay = HaystackText::from_text(&nums.join(" "), "n")
            .unwrap()
            .filler(&tok)
            .unwrap();
        let mut small = |r: &mut dyn RngCore| r.random_range(1_000_000..1_000_110u32).to_string();
        let got = draw_distinct(10, &hay, &mut HashSet::new(), "n", &mut small, &mut rng).unwrap();
        for v in got {
            let v: u32 = v.parse().unwrap();
            assert!(
                (1_000_100..1_000_110).contains(&v),
                "{v} is in the haystack"
            );
        }
    }
}
