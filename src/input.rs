//! Reading texts for the CLI, streamed: plain text (one text per line) or JSON Lines (one
//! object per line, the text in a named field), from a file or stdin. Each text keeps its line
//! number so errors (invalid UTF-8, bad JSON, missing field) name the line; nothing is read
//! ahead beyond the caller's chunk, so input of any size runs in constant memory.

use std::io::{BufRead, Read};

use crate::error::{Error, Result};

/// The longest line accepted, in bytes (1 MiB: about 250,000 tokens, hundreds of times what any
/// BERT reads before truncating). A longer line is an error naming it, and the reader never
/// holds more than this much of it.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The format of an input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One text per line (`\n` or `\r\n`); an empty line is an empty text.
    Lines,
    /// One JSON object per line; the text is the string in this field.
    JsonLines { field: String },
}

/// A stream of texts with their line numbers.
pub struct TextReader<R: BufRead> {
    inner: R,
    format: Format,
    source: String,
    line: usize,
    bytes: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> TextReader<R> {
    /// `source` names the input in error messages (a path or `<stdin>`).
    pub fn new(inner: R, format: Format, source: impl Into<String>) -> Self {
        TextReader {
            inner,
            format,
            source: source.into(),
            line: 0,
            bytes: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes consumed so far (for progress against a file's size).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Lines consumed so far.
    pub fn lines_read(&self) -> usize {
        self.line
    }

    /// Reads up to `max` more texts into `out` (cleared first); returns how many were read
    /// (0 at the end of the input). `first_line` receives the line number of the first one.
    pub fn read_chunk(&mut self, max: usize, out: &mut Vec<String>) -> Result<usize> {
        out.clear();
        while out.len() < max {
            match self.next_text()? {
                Some(t) => out.push(t),
                None => break,
            }
        }
        Ok(out.len())
    }

    fn next_text(&mut self) -> Result<Option<String>> {
        loop {
            self.buf.clear();
            // At most the limit, its newline and one byte more (which shows the line is over).
            let n = (&mut self.inner)
                .take(MAX_LINE_BYTES as u64 + 2)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| Error::Io {
                    path: self.source.clone().into(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.bytes += n as u64;
            let newline = usize::from(self.buf.last() == Some(&b'\n'));
            if self.buf.len() - newline > MAX_LINE_BYTES {
                return Err(Error::InvalidInput(format!(
                    "{} line {} is longer than the limit of {MAX_LINE_BYTES} bytes (1 MiB); \
                     split or shorten it (texts are cut at the model's max_seq_length anyway)",
                    self.source, self.line
                )));
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            let text = std::str::from_utf8(&self.buf).map_err(|e| {
                Error::InvalidInput(format!(
                    "{} line {} is not valid UTF-8 (byte {} of the line)",
                    self.source,
                    self.line,
                    e.valid_up_to() + 1
                ))
            })?;
            match &self.format {
                Format::Lines => return Ok(Some(text.to_owned())),
                Format::JsonLines { field } => {
                    if text.trim().is_empty() {
                        continue; // blank lines between records carry no text
                    }
                    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                        Error::InvalidInput(format!(
                            "{} line {}: invalid JSON: {e}",
                            self.source, self.line
                        ))
                    })?;
                    return match v.get(field) {
                        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(Error::InvalidInput(format!(
                            "{} line {}: field `{field}` is not a string",
                            self.source, self.line
                        ))),
                        None => Err(Error::InvalidInput(format!(
                            "{} line {}: no field `{field}` (choose one with --field)",
                            self.source, self.line
                        ))),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], format: Format) -> Result<Vec<String>> {
        let mut r = TextReader::new(data, format, "test");
        let mut all = Vec::new();
        let mut chunk = Vec::new();
        while r.read_chunk(2, &mut chunk)? > 0 {
            all.append(&mut chunk);
        }
        Ok(all)
    }

    #[test]
    fn lines_keep_empty_texts_and_strip_crlf() {
        let t = read_all(b"a\r\n\nb c\nlast", Format::Lines).unwrap();
        assert_eq!(t, vec!["a", "", "b c", "last"]);
    }

    #[test]
    fn a_line_over_the_limit_names_its_number_and_keeps_the_lines_before() {
        let mut data = b"one\ntwo\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        data.extend(b"\nthree\n");
        // Exactly the limit is fine.
        assert_eq!(read_all(&data, Format::Lines).unwrap().len(), 4);
        data.insert(10, b'y');
        let mut r = TextReader::new(&data[..], Format::Lines, "big.txt");
        let mut chunk = Vec::new();
        let err = r.read_chunk(10, &mut chunk).unwrap_err().to_string();
        assert!(err.contains("big.txt line 3 is longer than"), "{err}");
        assert_eq!(chunk, ["one", "two"], "the lines before are kept");
        // Without a final newline too.
        let long = vec![b'z'; MAX_LINE_BYTES + 1];
        let err = read_all(&long, Format::Lines).unwrap_err().to_string();
        assert!(err.contains("line 1 is longer than"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let e = read_all(b"ok\nok\nbad\xff\n", Format::Lines)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn jsonl_reads_the_field_and_names_bad_lines() {
        let f = Format::JsonLines {
            field: "text".into(),
        };
        let t = read_all(
            b"{\"text\": \"x\", \"id\": 1}\n\n{\"text\": \"\\u00e9t\\u00e9\"}\n",
            f.clone(),
        )
        .unwrap();
        assert_eq!(t, vec!["x", "été"]);
        let e = read_all(b"{\"text\": \"x\"}\n{\"body\": \"y\"}\n", f.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("--field"), "{e}");
        let e = read_all(b"{\"text\": 3}\n", f.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a string"), "{e}");
        let e = read_all(b"{oops\n", f).unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
    }
}
