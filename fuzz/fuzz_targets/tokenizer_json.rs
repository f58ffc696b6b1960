//! Arbitrary `tokenizer.json` through `TextTokenizer::from_file` (the engine's loader: the
//! file's padding and truncation replaced by truncation at `max_len`), then a few texts
//! encoded. Errors are expected; a panic that reaches the caller, an encoding longer than
//! `max_len` (the forward sizes its position lookups by it), or, where the file gets the
//! ASCII shortcut (`TextTokenizer::ascii_fast`), an answer other than the `tokenizers`
//! crate's for the same text, is a bug.
//!
//! The `tokenizers` library panics on some malformed files; the engine catches those
//! (`tokenize::no_panic`) and returns an error. libFuzzer's panic hook would abort on the
//! caught panic too, so this target installs a hook that only records the message, and
//! aborts (printing it) when a panic escapes the engine.
#![no_main]

use std::path::PathBuf;
use std::sync::{Mutex, Once, OnceLock};

use e5embed::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

const MAX_LEN: usize = 16;

const TEXTS: [&str; 8] = [
    "",
    "hello world",
    "query: how much protein should a female eat",
    "Héllo WORLD, naïve café! 日本語のテキスト 🙂 [SEP] [CLS] [UNK] ##ing",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z the quick brown fox jumps",
    "\u{0}\t\r\n \u{200b}\u{feff} x\u{301}",
    "Don't STOP-believing (1999) #1 $5.00... <b>&amp;</b> ~`!@^*_+={}|\\:;\"'<>,.?/ ##ing",
    "a\tb\nc\rd\x0be\x0cf\x7fg\x00h\x1fi supercalifragilisticexpialidocious",
];

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| e5embed_fuzz::scratch_dir("tokenizer_json").join("tokenizer.json"))
}

/// The message of the last panic on any thread (the encode_batch texts run on rayon's).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn last_panic() -> std::sync::MutexGuard<'static, String> {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner())
}

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            *last_panic() = info.to_string();
        }))
    });
    if std::panic::catch_unwind(|| run(data)).is_err() {
        eprintln!("panic escaped the engine: {}", last_panic());
        std::process::abort();
    }
});

fn run(data: &[u8]) {
    let path = path();
    e5embed_fuzz::put(path, Some(data));
    let Ok(tok) = TextTokenizer::from_file(path, MAX_LEN) else {
        return;
    };
    for text in TEXTS {
        if let Ok(t) = tok.encode(text) {
            assert!(
                t.ids.len() <= MAX_LEN,
                "{} ids for {text:?}, max_len {MAX_LEN}",
                t.ids.len()
            );
            if tok.ascii_fast() {
                if let Ok(reference) = tok.encode_with_crate(text) {
                    assert_eq!(t, reference, "the ASCII shortcut differs on {text:?}");
                }
            }
        }
    }
    let _ = tok.encode_batch(&TEXTS);
}
