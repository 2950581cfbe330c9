//! Mutation fuzzing of the parsers and validators that face untrusted bytes, on stable Rust.
//!
//! cargo-fuzz needs a nightly toolchain, which this project does not use; this is a small
//! libFuzzer-style loop instead. It is not coverage-guided: it keeps an input in its corpus when
//! the target answers it with an outcome not seen before (the error message with its numbers
//! masked, or the kind of success). Distinct messages come from distinct code paths, so the
//! corpus still grows towards the parser's corners. Mutations are byte-level (flips, interesting
//! bytes and numbers, insertions, deletions, duplications, splices) plus a per-target
//! dictionary of tokens.
//!
//! A finding is a panic, or a broken invariant the target checks (e.g. "answers differ when the
//! same bytes arrive in other chunks"). Findings are written out so that they can be committed
//! under `fuzz/regressions/<target>/`, which `cargo test -p ferry-fuzz` replays.

pub mod targets;

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// What a target made of one input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome(pub String);

/// A fuzz target: a parser or validator and the invariants it must keep.
pub trait Target {
    /// Its name, used for `fuzz/regressions/<name>/`.
    fn name(&self) -> &'static str;
    /// Valid and near-valid inputs to start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Tokens worth inserting (JSON keywords, field names, boundaries…).
    fn dictionary(&self) -> &'static [&'static [u8]];
    /// Longest input worth trying.
    fn max_len(&self) -> usize {
        64 * 1024
    }
    /// Runs one input. `Err` is a broken invariant (a finding); a panic is one too.
    ///
    /// # Errors
    /// The invariant that broke, in words.
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String>;
}

/// An input that panicked the target or broke one of its invariants.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The input.
    pub input: Vec<u8>,
    /// The panic message or the broken invariant.
    pub message: String,
}

/// What a fuzzing run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub iterations: u64,
    /// Inputs in the corpus at the end.
    pub corpus: usize,
    /// Distinct outcomes seen.
    pub outcomes: usize,
    /// Findings, at most one per distinct message.
    pub findings: Vec<Finding>,
}

/// xorshift64*: reproducible from its seed, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator; seed 0 is replaced by a fixed non-zero one.
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const INTERESTING_BYTES: &[u8] = &[
    0, 0xff, 0x7f, 0x80, 0x01, b'"', b'[', b']', b'{', b'}', b',', b':', b'-', b'0', b'9', b'e',
    b'\\', b'\n', b'\r', 0xc3, 0xa9,
];

const INTERESTING_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"-0",
    b"255",
    b"256",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"1e308",
    b"1e309",
    b"-1e309",
    b"0.1",
    b"1.5",
    b"1e-400",
];

/// Applies one to four random mutations to `input`.
pub fn mutate(
    input: &[u8],
    corpus: &[Vec<u8>],
    dictionary: &[&[u8]],
    max_len: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(10) {
            // Flip a bit.
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            // An interesting byte.
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            // Insert a dictionary token.
            2 | 3 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())];
                let at = rng.below(out.len() + 1);
                out.splice(at..at, token.iter().copied());
            }
            // Replace a run of digits with an interesting number.
            4 => {
                let digits: Vec<usize> = (0..out.len())
                    .filter(|&i| out[i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..out.len())
                        .find(|&i| !out[i].is_ascii_digit() && out[i] != b'.')
                        .unwrap_or(out.len());
                    let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                    out.splice(start..end, number.iter().copied());
                }
            }
            // Delete a range.
            5 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = 1 + rng.below((out.len() - start).min(64));
                out.drain(start..start + len);
            }
            // Duplicate a range (repetition finds nesting and count limits).
            6 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = 1 + rng.below((out.len() - start).min(256));
                let piece: Vec<u8> = out[start..start + len].to_vec();
                let most = if rng.below(8) == 0 { 512 } else { 4 };
                let times = 1 + rng.below(most);
                let at = rng.below(out.len() + 1);
                let repeated: Vec<u8> = piece.iter().copied().cycle().take(len * times).collect();
                out.splice(at..at, repeated);
            }
            // Splice in part of another corpus entry.
            7 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let len = 1 + rng.below(other.len() - start);
                    let at = rng.below(out.len() + 1);
                    out.splice(at..at, other[start..start + len].iter().copied());
                }
            }
            // Truncate.
            8 if !out.is_empty() => {
                out.truncate(rng.below(out.len()));
            }
            // Random bytes.
            _ => {
                let at = rng.below(out.len() + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out.truncate(max_len);
    out
}

/// An error message with its numbers and quoted parts (names and values echoed from the input)
/// masked, cut short: inputs that fail the same way map to the same outcome.
pub fn outcome_of(message: &str) -> Outcome {
    let mut out = String::with_capacity(64);
    let mut in_number = false;
    let mut quote: Option<char> = None;
    for c in message.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
                out.push('Q');
            }
            continue;
        }
        if c == '`' || c == '"' {
            quote = Some(c);
            continue;
        }
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
        if out.len() >= 64 {
            break;
        }
    }
    Outcome(out)
}

thread_local! {
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that records the message (and location) instead of printing it, so a
/// run's output stays readable. Call once per process.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("panic: {message}{location}")));
    }));
}

/// Runs one input, turning a panic into a finding's message.
///
/// # Errors
/// The panic message or the broken invariant.
pub fn run_one(target: &mut dyn Target, input: &[u8]) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| target.run(input))) {
        Ok(result) => result,
        Err(_) => Err(PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".into())),
    }
}

/// Fuzzes `target` for `budget` (and at most `max_iterations`), starting from its seeds.
pub fn fuzz(target: &mut dyn Target, budget: Duration, max_iterations: u64, seed: u64) -> Summary {
    let mut rng = Rng::new(seed);
    let dictionary = target.dictionary();
    let max_len = target.max_len();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<Outcome> = HashSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut messages: HashSet<String> = HashSet::new();
    let mut record = |input: Vec<u8>,
                      result: Result<Outcome, String>,
                      corpus: &mut Vec<Vec<u8>>,
                      findings: &mut Vec<Finding>| match result {
        Ok(outcome) => {
            if seen.insert(outcome) && corpus.len() < 4096 {
                corpus.push(input);
            }
        }
        Err(message) => {
            if messages.insert(outcome_of(&message).0) {
                findings.push(Finding { input, message });
            }
        }
    };
    let mut iterations = 0u64;
    for input in target.seeds() {
        let result = run_one(target, &input);
        record(input, result, &mut corpus, &mut findings);
        iterations += 1;
    }
    let started = Instant::now();
    while started.elapsed() < budget && iterations < max_iterations {
        let base = if corpus.is_empty() {
            Vec::new()
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        let input = mutate(&base, &corpus, dictionary, max_len, &mut rng);
        let result = run_one(target, &input);
        record(input, result, &mut corpus, &mut findings);
        iterations += 1;
    }
    Summary {
        target: target.name(),
        iterations,
        corpus: corpus.len(),
        outcomes: seen.len(),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target with a bug three bytes deep: the loop must find it.
    struct Planted;

    impl Target for Planted {
        fn name(&self) -> &'static str {
            "planted"
        }
        fn seeds(&self) -> Vec<Vec<u8>> {
            vec![b"{\"a\": 1}".to_vec()]
        }
        fn dictionary(&self) -> &'static [&'static [u8]] {
            &[b"FU", b"ZZ"]
        }
        fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
            if input.windows(4).any(|w| w == b"FUZZ") {
                #[allow(clippy::panic)]
                {
                    panic!("planted bug");
                }
            }
            Ok(Outcome(format!("len {}", input.len().min(8))))
        }
    }

    #[test]
    fn the_loop_finds_a_planted_panic_and_keeps_its_input() {
        quiet_panics();
        let summary = fuzz(&mut Planted, Duration::from_secs(20), 200_000, 7);
        assert_eq!(summary.findings.len(), 1, "{summary:?}");
        let finding = &summary.findings[0];
        assert!(
            finding.message.contains("planted bug"),
            "{}",
            finding.message
        );
        assert!(finding.input.windows(4).any(|w| w == b"FUZZ"));
    }

    #[test]
    fn outcomes_mask_numbers() {
        assert_eq!(
            outcome_of("input 3 has 12 elements"),
            outcome_of("input 7 has 9 elements")
        );
        assert_ne!(outcome_of("bad shape"), outcome_of("bad datatype"));
        assert_eq!(
            outcome_of("unknown input `a`, expected \"b\""),
            outcome_of("unknown input `zz`, expected \"c\"")
        );
    }

    #[test]
    fn mutations_respect_the_length_cap() {
        let mut rng = Rng::new(1);
        let mut input = b"[1,2,3]".to_vec();
        for _ in 0..10_000 {
            input = mutate(&input, &[], &[b"[[[[[[[["], 100, &mut rng);
            assert!(input.len() <= 100);
        }
    }
}
