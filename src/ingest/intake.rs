//! The request body, bounded before the multipart parser sees it.
//!
//! multer (the parser behind axum's `Multipart`) buffers a part's header
//! block until the blank line that ends it. 300 MiB of header bytes with no
//! `\r\n\r\n` were measured to cost the server 300 MiB of memory. So the
//! body stream is watched here, byte by byte, for the multipart structure
//! that matters: every delimiter line `--boundary` and the header block after
//! it must end within [`MAX_PART_HEADER_BYTES`]. The same wrapper bounds the
//! whole body (chunked bodies have no `Content-Length` to check up front) and
//! the pause between two chunks (a slowloris upload is cut off).
//!
//! A chunk that breaks a rule is never passed on, so the parser never holds
//! more than [`MAX_PART_HEADER_BYTES`] of an unfinished header block plus the
//! chunk it is parsing.
//!
//! multer also reads ahead without bound: it takes every chunk the body has
//! ready before it hands any on (3.1's `StreamBuffer::poll_stream` loops
//! until `Pending`), so a client faster than the disk fills the server's
//! memory (measured: 400 MB resident after a 530 MB upload over loopback).
//! The stream given to it yields to the scheduler after every chunk it
//! hands on, which multer takes as "nothing ready", so the parser holds a
//! few chunks at most.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// A part's header block (and the preamble before the first part) must end
/// within this many bytes.
pub const MAX_PART_HEADER_BYTES: usize = 16 * 1024;

/// Why the body stream was cut off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("a multipart part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")]
    HeaderTooLong,
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the upload stalled: nothing arrived for {0:?}")]
    Stalled(Duration),
    #[error("the upload was interrupted: {0}")]
    Read(String),
}

/// Where in the multipart structure the guard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the first delimiter: `seen` bytes of preamble so far.
    Preamble { seen: usize },
    /// In a part's body, looking for the next delimiter.
    Data,
    /// Right after a delimiter: `--` there means the closing one; spaces
    /// and tabs (transport padding) may follow; then the line's CRLF.
    /// `seen` counts toward the header limit.
    AfterDelimiter { dashes: u8, seen: usize },
    /// The CR of the delimiter line's CRLF was seen.
    DelimiterLineEnd { seen: usize },
    /// In a header block: `seen` bytes, `tail` holds the last four.
    Headers { seen: usize, tail: u32 },
    /// After the closing delimiter: the epilogue, ignored.
    Done,
}

/// Follows the multipart structure of a byte stream and refuses any header
/// block (or preamble) longer than the limit. Chunk boundaries may fall
/// anywhere, including inside a delimiter.
#[derive(Debug, Clone)]
pub struct PartHeaderGuard {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    /// Knuth-Morris-Pratt failure function of `delimiter`.
    failure: Vec<usize>,
    /// How much of `delimiter` the latest bytes match.
    matched: usize,
    place: Place,
    limit: usize,
}

impl PartHeaderGuard {
    pub fn new(boundary: &str, limit: usize) -> PartHeaderGuard {
        let delimiter: Vec<u8> = [b"\r\n--".as_slice(), boundary.as_bytes()].concat();
        let mut failure = vec![0; delimiter.len()];
        let mut k = 0;
        for i in 1..delimiter.len() {
            while k > 0 && delimiter[i] != delimiter[k] {
                k = failure[k - 1];
            }
            if delimiter[i] == delimiter[k] {
                k += 1;
            }
            failure[i] = k;
        }
        // The first delimiter may open the body without a CRLF before it.
        PartHeaderGuard { delimiter, failure, matched: 2, place: Place::Preamble { seen: 0 }, limit }
    }

    /// Advances over `chunk`; `Err` as soon as a header block or the
    /// preamble passes the limit.
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), IntakeError> {
        for &b in chunk {
            self.place = match self.place {
                Place::Done => return Ok(()),
                // The parser consumes the delimiter line (padding and CRLF)
                // and then looks for a blank line of its own, so the guard
                // does too: that CRLF does not count toward the header end.
                Place::AfterDelimiter { .. } | Place::DelimiterLineEnd { .. } | Place::Headers { .. }
                    if self.header_bytes() + 1 > self.limit =>
                {
                    return Err(IntakeError::HeaderTooLong);
                }
                Place::Headers { seen, tail } => {
                    let tail = (tail << 8) | b as u32;
                    if tail == u32::from_be_bytes(*b"\r\n\r\n") {
                        self.matched = 0;
                        Place::Data
                    } else {
                        Place::Headers { seen: seen + 1, tail }
                    }
                }
                Place::AfterDelimiter { dashes, seen } => match (b, dashes) {
                    (b'-', 0) => Place::AfterDelimiter { dashes: 1, seen: seen + 1 },
                    (b'-', 1) => Place::Done,
                    (b' ' | b'\t', _) => Place::AfterDelimiter { dashes: 2, seen: seen + 1 },
                    (b'\r', _) => Place::DelimiterLineEnd { seen: seen + 1 },
                    _ => Place::Headers { seen: seen + 1, tail: b as u32 },
                },
                Place::DelimiterLineEnd { seen } => match b {
                    b'\n' => Place::Headers { seen: seen + 1, tail: 0 },
                    _ => Place::Headers { seen: seen + 1, tail: b as u32 },
                },
                Place::Preamble { .. } | Place::Data => {
                    if self.advance_match(b) {
                        Place::AfterDelimiter { dashes: 0, seen: 0 }
                    } else if let Place::Preamble { seen } = self.place {
                        if seen + 1 > self.limit {
                            return Err(IntakeError::HeaderTooLong);
                        }
                        Place::Preamble { seen: seen + 1 }
                    } else {
                        Place::Data
                    }
                }
            };
        }
        Ok(())
    }

    /// Bytes of the delimiter line's end and header block seen so far.
    fn header_bytes(&self) -> usize {
        match self.place {
            Place::AfterDelimiter { seen, .. } | Place::DelimiterLineEnd { seen } | Place::Headers { seen, .. } => seen,
            _ => 0,
        }
    }

    /// Feeds one byte to the delimiter matcher; true when it completes one.
    fn advance_match(&mut self, b: u8) -> bool {
        while self.matched > 0 && self.delimiter[self.matched] != b {
            self.matched = self.failure[self.matched - 1];
        }
        if self.delimiter[self.matched] == b {
            self.matched += 1;
        }
        if self.matched == self.delimiter.len() {
            self.matched = 0;
            return true;
        }
        false
    }
}

/// The body as the parser may see it: structure checked, size bounded, and
/// every pause between chunks shorter than `idle`.
pub fn bounded<S, E>(
    body: S,
    boundary: &str,
    max_bytes: u64,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, IntakeError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    let guard = PartHeaderGuard::new(boundary, MAX_PART_HEADER_BYTES);
    futures::stream::unfold((body, guard, 0u64, false), move |(mut body, mut guard, total, failed)| async move {
        if failed {
            return None;
        }
        if total > 0 {
            // Hand the parser one chunk at a time (the module docs say why).
            tokio::task::yield_now().await;
        }
        let next = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Err(IntakeError::Stalled(idle)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(IntakeError::Read(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                let total = total + chunk.len() as u64;
                if total > max_bytes {
                    Err(IntakeError::TooLarge(max_bytes))
                } else {
                    guard.check(&chunk).map(|()| chunk)
                }
            }
        };
        let total = total + next.as_ref().map_or(0, |c| c.len() as u64);
        let failed = next.is_err();
        Some((next, (body, guard, total, failed)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDARY: &str = "XyZ123";

    fn form(file: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"--XyZ123\r\nContent-Disposition: form-data; name=\"courseId\"\r\n\r\nmath\r\n");
        body.extend_from_slice(
            b"--XyZ123\r\nContent-Disposition: form-data; name=\"uploadedFile\"; filename=\"a.mp4\"\r\n\
              Content-Type: video/mp4\r\n\r\n",
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--XyZ123--\r\n");
        body
    }

    /// However fast the client, the parser holds a few chunks at a time:
    /// the source here is always ready (as a loopback client outrunning the
    /// disk is). multer hands on all it has read as one chunk, so the
    /// largest chunk is what it held.
    #[tokio::test]
    async fn the_parser_reads_ahead_a_bounded_amount_however_fast_the_client() {
        const CHUNK: usize = 64 * 1024;
        const CHUNKS: usize = 512;
        let body = form(&vec![b'x'; CHUNK * CHUNKS]);
        let source = futures::stream::iter(body.chunks(CHUNK).map(Bytes::copy_from_slice).collect::<Vec<_>>())
            .map(Ok::<_, std::io::Error>);
        let mut parts = multer::Multipart::new(bounded(source, BOUNDARY, u64::MAX, Duration::from_secs(5)), BOUNDARY);
        let mut course = parts.next_field().await.unwrap().unwrap();
        while course.chunk().await.unwrap().is_some() {}
        drop(course);
        let mut file = parts.next_field().await.unwrap().unwrap();
        let (mut received, mut largest) = (0, 0);
        while let Some(chunk) = file.chunk().await.unwrap() {
            received += chunk.len();
            largest = largest.max(chunk.len());
        }
        assert_eq!(received, CHUNK * CHUNKS);
        assert!(largest <= 8 * CHUNK, "the parser held {largest} bytes at once");
    }

    /// A part header that never ends, after one of the delimiter lines a
    /// parser accepts: with headers, with none, with transport padding.
    fn header_bomb(bytes: usize, opening: usize) -> Vec<u8> {
        let openings: [&[u8]; 3] = [
            b"--XyZ123\r\nContent-Disposition: form-data; name=\"uploadedFile\"; filename=\"",
            b"--XyZ123\r\n\r\n",
            b"--XyZ123 \t\r\n",
        ];
        let mut body = openings[opening % openings.len()].to_vec();
        body.extend(std::iter::repeat_n(b'a', bytes));
        body
    }

    /// Splits `data` at the given cut points.
    fn split(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([data.len()]) {
            if cut > start {
                chunks.push(Bytes::copy_from_slice(&data[start..cut]));
                start = cut;
            }
        }
        chunks
    }

    /// Runs chunks through the guard; returns the bytes passed on and the error.
    fn run(chunks: Vec<Bytes>) -> (usize, Option<IntakeError>) {
        let mut guard = PartHeaderGuard::new(BOUNDARY, MAX_PART_HEADER_BYTES);
        let mut passed = 0;
        for chunk in chunks {
            if let Err(e) = guard.check(&chunk) {
                return (passed, Some(e));
            }
            passed += chunk.len();
        }
        (passed, None)
    }

    #[test]
    fn a_header_block_without_its_blank_line_is_cut_off() {
        assert_eq!(run(vec![Bytes::from(header_bomb(100_000, 0))]).1, Some(IntakeError::HeaderTooLong));
        assert_eq!(run(vec![Bytes::from(form(&[0u8; 100_000]))]).1, None, "big file data is not a header");
        let preamble = [vec![b'p'; 20_000], form(b"x")].concat();
        assert_eq!(run(vec![Bytes::from(preamble)]).1, Some(IntakeError::HeaderTooLong));
        // No headers at all: the parser wants a blank line after the
        // delimiter line, so a bare `--B CRLF CRLF` and data is still a header.
        let headerless = [b"--XyZ123\r\n\r\n".to_vec(), vec![b'a'; 100_000]].concat();
        assert_eq!(run(vec![Bytes::from(headerless)]).1, Some(IntakeError::HeaderTooLong));
        let padded = [b"--XyZ123 \t \r\n".to_vec(), vec![b'a'; 100_000]].concat();
        assert_eq!(run(vec![Bytes::from(padded)]).1, Some(IntakeError::HeaderTooLong));
        let padding_bomb = [b"--XyZ123".to_vec(), vec![b' '; 100_000]].concat();
        assert_eq!(run(vec![Bytes::from(padding_bomb)]).1, Some(IntakeError::HeaderTooLong));
        // A file whose bytes look like a delimiter without a following header
        // end is data until the real delimiter.
        let tricky = form(b"\r\n--XyZ12\r\n--XyZ1\r\n-");
        assert_eq!(run(vec![Bytes::from(tricky)]).1, None);
    }

    proptest! {
        /// However the stream is split, a well-formed form passes whole.
        #[test]
        fn valid_forms_pass_whatever_the_split(file in proptest::collection::vec(any::<u8>(), 0..4096),
                                               cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let body = form(&file);
            let (passed, error) = run(split(&body, &cuts));
            prop_assert_eq!(error, None);
            prop_assert_eq!(passed, body.len());
        }

        /// However the stream is split, an endless header block is refused
        /// before more than the limit of it has been passed on to the parser
        /// (plus the one chunk that opened it).
        #[test]
        fn header_bombs_are_refused_within_the_limit(extra in 1usize..50_000, opening in 0usize..3,
                                                     cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let body = header_bomb(MAX_PART_HEADER_BYTES + extra, opening);
            let (passed, error) = run(split(&body, &cuts));
            prop_assert_eq!(error, Some(IntakeError::HeaderTooLong));
            prop_assert!(passed <= MAX_PART_HEADER_BYTES + BOUNDARY.len() + 4, "passed on {} bytes", passed);
        }
    }

    #[tokio::test]
    async fn the_stream_is_bounded_in_size_and_in_pauses() {
        let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(form(&[7u8; 1000])))]);
        let all: Vec<_> = bounded(body, BOUNDARY, 500, Duration::from_secs(5)).collect().await;
        assert_eq!(all.last().unwrap(), &Err(IntakeError::TooLarge(500)));

        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"--XyZ123\r\n"))).unwrap();
        let started = std::time::Instant::now();
        let all: Vec<_> = bounded(rx, BOUNDARY, 1 << 20, Duration::from_millis(200)).collect().await;
        assert_eq!(all.last().unwrap(), &Err(IntakeError::Stalled(Duration::from_millis(200))));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(tx);
    }
}
