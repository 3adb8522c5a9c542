//! Splitting a long source into time ranges that several workers encode at
//! once, and the names of the jobs that encode them.
//!
//! A chunk is a list entry, not a file: each chunk job seeks to its range in
//! the one source and encodes every rendition of it, so nothing is
//! re-encoded or copied to split. Ranges are whole multiples of the segment
//! length, so chunk boundaries fall on segment boundaries (and so on IDR
//! frames) in every rendition, and the joined playlists are the chunks'
//! segments one after the other.
//!
//! Sound is one more job for the whole source (see [`Part::Audio`]):
//! encoding it per chunk would put AAC priming, a click, at every boundary.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::InvalidValue;
use crate::transcode::command::SEGMENT_SECONDS;

/// When and how a source is split (`VIDPIPE_CHUNK_AFTER`,
/// `VIDPIPE_CHUNK_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Sources longer than this are split; shorter ones stay one job.
    /// `None`: never split.
    pub after: Option<Duration>,
    seconds: u32,
}

impl Chunking {
    /// `seconds` must be a positive multiple of the segment length.
    pub fn new(after: Option<Duration>, seconds: u32) -> Result<Chunking, InvalidValue> {
        if seconds == 0 || !seconds.is_multiple_of(SEGMENT_SECONDS) {
            return Err(InvalidValue(format!(
                "chunk length {seconds}s must be a positive multiple of the {SEGMENT_SECONDS}s segment length, \
                 e.g. 60"
            )));
        }
        Ok(Chunking { after, seconds })
    }

    pub fn seconds(&self) -> u32 {
        self.seconds
    }

    /// The chunks of a source of `duration_seconds`, or `None` when it is
    /// not long enough to split (one chunk would be the whole video).
    pub fn split(&self, duration_seconds: f64) -> Option<Vec<ChunkRange>> {
        let after = self.after?.as_secs_f64();
        if duration_seconds <= after || duration_seconds <= self.seconds as f64 {
            return None;
        }
        let first = ChunkRange::new(0, 1, self.seconds).first_seconds() as f64;
        let count = 1 + ((duration_seconds - first) / self.seconds as f64).ceil() as u32;
        Some((0..count).map(|index| ChunkRange::new(index, count, self.seconds)).collect())
    }
}

/// The first chunk is this short (or the chunk length, if shorter): the
/// lecture plays once it is published, so a short one makes a long lecture
/// playable about as soon as a one-job encode would.
const FIRST_CHUNK_SECONDS: u32 = 2 * SEGMENT_SECONDS;

/// One chunk: `[start, start + length)` of the source, the last one open to
/// the end of the stream (a probed duration is a claim, not a fact). The
/// first is [`FIRST_CHUNK_SECONDS`] long, every other `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub index: u32,
    /// Chunks in the lecture.
    pub count: u32,
    /// Chunk length in seconds.
    pub seconds: u32,
}

impl ChunkRange {
    pub fn new(index: u32, count: u32, seconds: u32) -> ChunkRange {
        ChunkRange { index, count, seconds }
    }

    fn first_seconds(&self) -> u32 {
        FIRST_CHUNK_SECONDS.min(self.seconds)
    }

    /// Where the chunk starts, in whole seconds.
    pub fn start_whole_seconds(&self) -> u32 {
        match self.index {
            0 => 0,
            n => self.first_seconds() + (n - 1) * self.seconds,
        }
    }

    /// How long the chunk is, in whole seconds; `None` for the last chunk:
    /// it runs to the end.
    pub fn length_whole_seconds(&self) -> Option<u32> {
        (self.index + 1 < self.count).then_some(if self.index == 0 { self.first_seconds() } else { self.seconds })
    }

    pub fn start_seconds(&self) -> f64 {
        self.start_whole_seconds() as f64
    }

    pub fn length_seconds(&self) -> Option<f64> {
        self.length_whole_seconds().map(f64::from)
    }

    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The file name pattern of this chunk's segments: unique per chunk, so
    /// chunks publish side by side in one rendition directory whatever
    /// number of segments each turns out to make.
    pub fn segment_pattern(&self) -> String {
        format!("c{:04}_%05d.m4s", self.index)
    }

    /// This chunk's own media playlist, as published next to the segments
    /// for the joining job to read.
    pub fn playlist_name(&self) -> String {
        format!("chunk_{:04}.m3u8", self.index)
    }
}

/// The child jobs of a chunked lecture. Their ids are the lecture's id with
/// a suffix (`<lecture>.audio`, `<lecture>.c0003-of-0010x60s`), so any
/// worker can tell from a claimed id what to do, with no other table and
/// the same on every queue backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildJob {
    pub lecture: String,
    pub part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole source's sound, as the alternate audio rendition.
    Audio,
    Video(ChunkRange),
}

impl ChildJob {
    /// The parent's (the lecture's) id, if `id` is a child job's.
    pub fn parent_of(id: &str) -> Option<&str> {
        id.split_once('.').map(|(parent, _)| parent)
    }
}

impl fmt::Display for ChildJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.part {
            Part::Audio => write!(f, "{}.audio", self.lecture),
            Part::Video(r) => write!(f, "{}.c{:04}-of-{:04}x{}s", self.lecture, r.index, r.count, r.seconds),
        }
    }
}

impl FromStr for ChildJob {
    type Err = InvalidValue;
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidValue(format!("`{id}` is not a chunk job's id"));
        let (lecture, suffix) = id.split_once('.').ok_or_else(invalid)?;
        let part = if suffix == "audio" {
            Part::Audio
        } else {
            let rest = suffix.strip_prefix('c').ok_or_else(invalid)?;
            let (index, rest) = rest.split_once("-of-").ok_or_else(invalid)?;
            let (count, seconds) = rest.strip_suffix('s').and_then(|r| r.split_once('x')).ok_or_else(invalid)?;
            let number = |s: &str| s.parse::<u32>().map_err(|_| invalid());
            let range = ChunkRange::new(number(index)?, number(count)?, number(seconds)?);
            if range.index >= range.count || range.seconds == 0 {
                return Err(invalid());
            }
            Part::Video(range)
        };
        Ok(ChildJob { lecture: lecture.to_string(), part })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunking(after: u64, seconds: u32) -> Chunking {
        Chunking::new(Some(Duration::from_secs(after)), seconds).unwrap()
    }

    #[test]
    fn chunk_lengths_are_whole_segments() {
        assert!(Chunking::new(None, 20).is_err(), "20 s chunks would end mid-segment");
        assert!(Chunking::new(None, 0).is_err());
        assert!(Chunking::new(None, 18).is_ok());
    }

    #[test]
    fn only_sources_longer_than_the_threshold_are_split() {
        assert_eq!(chunking(600, 60).split(600.0), None, "at the threshold: one job");
        assert_eq!(Chunking::new(None, 60).unwrap().split(7200.0), None, "splitting off");
        assert_eq!(chunking(0, 60).split(59.0), None, "one chunk would be the whole video");
        let chunks = chunking(600, 60).split(600.5).unwrap();
        assert_eq!(chunks.len(), 11, "12 s, then 60 s chunks");
        assert_eq!((chunks[0].start_seconds(), chunks[0].length_seconds()), (0.0, Some(12.0)), "a short first chunk");
        assert_eq!((chunks[1].start_seconds(), chunks[1].length_seconds()), (12.0, Some(60.0)));
        assert_eq!(chunks[10].start_seconds(), 552.0);
        assert_eq!(chunks[10].length_seconds(), None, "the last chunk runs to the end");
        assert_eq!(chunks[9].length_seconds(), Some(60.0));
        let short = chunking(10, 6).split(13.0).unwrap();
        assert_eq!(
            short.iter().map(|c| c.start_seconds()).collect::<Vec<_>>(),
            [0.0, 6.0, 12.0],
            "6 s chunks: 6 s first"
        );
        assert!(chunks.iter().enumerate().all(|(i, c)| c.index == i as u32 && c.count == 11));
    }

    #[test]
    fn child_ids_say_what_to_encode_and_round_trip() {
        let lecture = "0190d2a0-0000-7000-8000-000000000000";
        for part in [Part::Audio, Part::Video(ChunkRange::new(3, 10, 60))] {
            let child = ChildJob { lecture: lecture.into(), part };
            let id = child.to_string();
            assert_eq!(id.parse::<ChildJob>().unwrap(), child);
            assert_eq!(ChildJob::parent_of(&id), Some(lecture));
        }
        assert_eq!(
            format!("{}", ChildJob { lecture: "L".into(), part: Part::Video(ChunkRange::new(3, 10, 60)) }),
            "L.c0003-of-0010x60s"
        );
        assert_eq!(ChildJob::parent_of(lecture), None, "a lecture's own job has no parent");
        for bad in ["L", "L.c3", "L.c0010-of-0010x60s", "L.c0001-of-0010x0s", "L.video"] {
            assert!(bad.parse::<ChildJob>().is_err(), "{bad}");
        }
    }
}
