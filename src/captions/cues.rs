//! Caption files as timed cues: reading WebVTT and SRT, and writing WebVTT,
//! whole or cut into the segments of an HLS subtitles rendition.
//!
//! The reader is strict where a mistake would show on screen (a timing line
//! that does not parse, a cue that ends before it starts) and lenient where
//! real files differ harmlessly (a byte-order mark, CRLF line ends, SRT cue
//! numbers, cues out of order). Styling blocks (`STYLE`, `REGION`) and cue
//! identifiers are dropped: players style captions themselves, and an id
//! repeated in every segment a cue spans would not mean one cue.

use std::fmt::Write as _;

/// Caption files larger than this are refused (a two-hour lecture's
/// captions are about 150 KB).
pub const MAX_CAPTION_BYTES: usize = 1 << 20;
/// More cues than this are refused: about one every 0.4 s for two hours.
pub const MAX_CUES: usize = 20_000;
/// Cue times past this are refused (100 hours): no lecture is that long,
/// and a time beyond it is a typo.
const MAX_TIME_MS: u64 = 100 * 3600 * 1000;
/// WebVTT cue settings a player understands without a `REGION` block.
const KNOWN_SETTINGS: [&str; 5] = ["vertical", "line", "position", "size", "align"];

/// One caption: shown from `start_ms` until `end_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start_ms: u64,
    pub end_ms: u64,
    /// WebVTT cue settings (`align:start line:0`), possibly empty.
    pub settings: String,
    /// One or more lines, none empty.
    pub text: String,
}

/// Why a caption file was refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CueError {
    #[error("the captions file is larger than the limit of {MAX_CAPTION_BYTES} bytes")]
    TooLarge,
    #[error("the captions file is not UTF-8 text; save it as UTF-8")]
    NotUtf8,
    #[error(
        "the captions file is neither WebVTT (first line `WEBVTT`) nor SRT (numbered cues with times like \
         `00:00:01,000 --> 00:00:04,000`)"
    )]
    UnknownFormat,
    #[error("the captions file is not valid {format}: line {line}: {problem}")]
    Invalid { format: &'static str, line: usize, problem: String },
    #[error("the captions file has no cues")]
    Empty,
    #[error("the captions file has more than {MAX_CUES} cues")]
    TooManyCues,
}

/// Reads a WebVTT or SRT file (told apart by its first line) into cues
/// sorted by start time.
pub fn parse(bytes: &[u8]) -> Result<Vec<Cue>, CueError> {
    if bytes.len() > MAX_CAPTION_BYTES {
        return Err(CueError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CueError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text).replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let first = lines.iter().position(|l| !l.trim().is_empty()).ok_or(CueError::Empty)?;
    let header = lines[first];
    let webvtt = first == 0
        && header.strip_prefix("WEBVTT").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
    let mut cues = if webvtt {
        read_blocks(&lines, Format::WebVtt)?
    } else if lines.get(first + 1).is_some_and(|l| l.contains("-->")) || header.contains("-->") {
        read_blocks(&lines, Format::Srt)?
    } else {
        return Err(CueError::UnknownFormat);
    };
    if cues.is_empty() {
        return Err(CueError::Empty);
    }
    cues.sort_by_key(|c| (c.start_ms, c.end_ms));
    Ok(cues)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    WebVtt,
    Srt,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::WebVtt => "WebVTT",
            Format::Srt => "SRT",
        }
    }
}

/// Blocks are runs of non-blank lines; `lines` are numbered from 1 in
/// errors.
fn read_blocks(lines: &[&str], format: Format) -> Result<Vec<Cue>, CueError> {
    let invalid = |line: usize, problem: String| CueError::Invalid { format: format.name(), line: line + 1, problem };
    let mut cues = Vec::new();
    let mut i = 0;
    // WebVTT: the header block (`WEBVTT` and any header lines) comes first.
    if format == Format::WebVtt {
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
    }
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let block = &lines[start..i];
        if format == Format::WebVtt && ["NOTE", "STYLE", "REGION"].iter().any(|k| starts_keyword(block[0], k)) {
            continue;
        }
        // An identifier (WebVTT) or cue number (SRT) may come first.
        let timing = if block[0].contains("-->") { 0 } else { 1 };
        let Some(timing_line) = block.get(timing).filter(|l| l.contains("-->")) else {
            // Point at the line that was meant as the timing line: the
            // first, unless it reads like an identifier.
            let meant =
                if block[0].starts_with(|c: char| c.is_ascii_digit()) && block[0].contains(':') { 0 } else { timing };

            return Err(invalid(
                start + meant.min(block.len() - 1),
                "expected a cue timing line like `00:00:01.000 --> 00:00:04.000`".into(),
            ));
        };
        let (start_ms, end_ms, settings) =
            read_timing(timing_line, format).map_err(|problem| invalid(start + timing, problem))?;
        if end_ms <= start_ms {
            return Err(invalid(
                start + timing,
                format!("the cue ends ({}) before it starts ({})", timestamp(end_ms), timestamp(start_ms)),
            ));
        }
        let text: Vec<String> = block[timing + 1..].iter().map(|l| l.trim_end().replace("-->", "→")).collect();
        if text.is_empty() {
            // A cue with no text shows nothing; WebVTT allows it, so skip it.
            continue;
        }
        if cues.len() == MAX_CUES {
            return Err(CueError::TooManyCues);
        }
        cues.push(Cue { start_ms, end_ms, settings, text: text.join("\n") });
    }
    Ok(cues)
}

fn starts_keyword(line: &str, keyword: &str) -> bool {
    line.strip_prefix(keyword).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// `start --> end [settings]`.
fn read_timing(line: &str, format: Format) -> Result<(u64, u64, String), String> {
    let (start, rest) = line.split_once("-->").expect("the caller checked for -->");
    let mut rest = rest.split_whitespace();
    let end = rest.next().ok_or("the cue has no end time")?;
    let start_ms = read_time(start.trim(), format)?;
    let end_ms = read_time(end, format)?;
    // SRT's optional `X1:… Y1:…` box has no WebVTT meaning; WebVTT settings
    // are kept when a player knows them without a region.
    let settings = match format {
        Format::Srt => String::new(),
        Format::WebVtt => rest
            .filter(|s| {
                s.split_once(':').is_some_and(|(name, value)| KNOWN_SETTINGS.contains(&name) && !value.is_empty())
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    Ok((start_ms, end_ms, settings))
}

/// WebVTT: `[hh:]mm:ss.ttt`. SRT: `hh:mm:ss,ttt` (a `.` and fewer digits
/// are taken too: both are common in files made by hand).
fn read_time(text: &str, format: Format) -> Result<u64, String> {
    let bad = || match format {
        Format::WebVtt => format!("`{text}` is not a time like `00:01:02.500`"),
        Format::Srt => format!("`{text}` is not a time like `00:01:02,500`"),
    };
    let separators: &[char] = if format == Format::Srt { &[',', '.'] } else { &['.'] };
    let (clock, fraction) = text.rsplit_once(separators).ok_or_else(bad)?;
    let exact = format == Format::WebVtt;
    if fraction.is_empty() || fraction.len() > 3 || (exact && fraction.len() != 3) || !all_digits(fraction) {
        return Err(bad());
    }
    let millis: u64 = fraction.parse::<u64>().map_err(|_| bad())? * 10u64.pow(3 - fraction.len() as u32);
    let parts: Vec<&str> = clock.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [m, s] if format == Format::WebVtt => ("0", *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad()),
    };
    let two = |s: &str| s.len() == 2 && all_digits(s);
    if !all_digits(hours) || hours.is_empty() || !two(minutes) || !two(seconds) {
        return Err(bad());
    }
    let (h, m, s): (u64, u64, u64) =
        (hours.parse().map_err(|_| bad())?, minutes.parse().map_err(|_| bad())?, seconds.parse().map_err(|_| bad())?);
    if m > 59 || s > 59 {
        return Err(bad());
    }
    let ms = ((h * 60 + m) * 60 + s) * 1000 + millis;
    if ms > MAX_TIME_MS {
        return Err(format!("`{text}` is past 100 hours"));
    }
    Ok(ms)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `hh:mm:ss.ttt`.
pub fn timestamp(ms: u64) -> String {
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn write_cue(out: &mut String, cue: &Cue) {
    let _ = write!(out, "\n{} --> {}", timestamp(cue.start_ms), timestamp(cue.end_ms));
    if !cue.settings.is_empty() {
        out.push(' ');
        out.push_str(&cue.settings);
    }
    out.push('\n');
    out.push_str(&cue.text);
    out.push('\n');
}

/// The cues as one WebVTT file: the form captions are stored in.
pub fn to_webvtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n");
    for cue in cues {
        write_cue(&mut out, cue);
    }
    out
}

/// The WebVTT segments of an HLS subtitles rendition, one per media segment
/// of `durations` (seconds, in playlist order), so captions switch with the
/// video's segments. A cue goes into every segment it overlaps: a player
/// that starts in the middle of a long cue still shows it, and drops the
/// repeats it already has; cues after the video's end are left out. Cue times stay those of the whole video; the
/// `X-TIMESTAMP-MAP` header says cue time 0 is media time 0, which is where
/// the ladder's segments start.
pub fn segments(cues: &[Cue], durations: &[f64]) -> Vec<String> {
    let mut out = Vec::with_capacity(durations.len());
    let mut from = 0.0;
    for duration in durations {
        let to = from + duration;
        let (start, end) = ((from * 1000.0).round() as u64, (to * 1000.0).round() as u64);
        let mut text = String::from("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n");
        for cue in cues.iter().filter(|c| c.start_ms < end && c.end_ms > start) {
            write_cue(&mut text, cue);
        }
        out.push(text);
        from = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTT: &str = "WEBVTT - lecture 1\n\nNOTE made by hand\n\nSTYLE\n::cue { color: red }\n\n\
        intro\n00:01.000 --> 00:04.500 align:start region:r1\nWelcome\nto the course\n\n\
        00:00:05.250 --> 00:00:07.000\n<v Ada>Arrays</v> start at 0 --> really\n";

    #[test]
    fn webvtt_is_read_with_its_settings_and_without_styles_or_ids() {
        let cues = parse(VTT.as_bytes()).unwrap();
        assert_eq!(cues.len(), 2);
        assert_eq!(
            cues[0],
            Cue { start_ms: 1000, end_ms: 4500, settings: "align:start".into(), text: "Welcome\nto the course".into() }
        );
        assert_eq!(cues[1].start_ms, 5250);
        assert_eq!(cues[1].text, "<v Ada>Arrays</v> start at 0 → really", "a --> in text would end the cue");
        let written = to_webvtt(&cues);
        assert!(
            written.starts_with("WEBVTT\n\n00:00:01.000 --> 00:00:04.500 align:start\nWelcome\nto the course\n"),
            "{written}"
        );
        assert_eq!(parse(written.as_bytes()).unwrap(), cues, "what is stored reads back the same");
    }

    #[test]
    fn srt_with_crlf_bom_and_cues_out_of_order_is_read() {
        let srt = "\u{feff}2\r\n00:00:03,5 --> 00:00:04,000\r\nsecond\r\n\r\n1\r\n00:00:01,000 --> 00:00:02,250 X1:10\r\n<i>first</i>\r\nline two\r\n";
        let cues = parse(srt.as_bytes()).unwrap();
        assert_eq!(cues.iter().map(|c| (c.start_ms, c.end_ms)).collect::<Vec<_>>(), [(1000, 2250), (3500, 4000)]);
        assert_eq!(cues[0].text, "<i>first</i>\nline two");
        assert_eq!(cues[0].settings, "");
    }

    #[test]
    fn bad_files_are_refused_with_the_line_to_fix() {
        let err = |text: &str| parse(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err("WEBVTT\n\n00:01.000 --> 00:04.000\nok\n\n00:05.000 -> 00:06.000\nbroken\n"),
            "the captions file is not valid WebVTT: line 6: expected a cue timing line like `00:00:01.000 --> 00:00:04.000`"
        );
        assert!(err("WEBVTT\n\n00:01.000 --> 00:00.500\nbackwards\n")
            .contains("line 3: the cue ends (00:00:00.500) before it starts (00:00:01.000)"));
        assert!(
            err("WEBVTT\n\n00:01,000 --> 00:02.000\ncomma\n").contains("`00:01,000` is not a time like `00:01:02.500`")
        );
        assert!(err("WEBVTT\n\n00:61.000 --> 01:02.000\nx\n").contains("is not a time"));
        assert!(err("1\n00:00:01 --> 00:00:02,000\nno millis\n").contains("not valid SRT: line 2"));
        assert_eq!(err("just some text\nand more\n"), CueError::UnknownFormat.to_string());
        assert_eq!(err("WEBVTT\n\nNOTE nothing else\n"), CueError::Empty.to_string());
        assert_eq!(err(""), CueError::Empty.to_string());
        assert_eq!(parse(&[0xff, 0xfe, 0x41]).unwrap_err(), CueError::NotUtf8);
        assert_eq!(parse(&vec![b'a'; MAX_CAPTION_BYTES + 1]).unwrap_err(), CueError::TooLarge);
        let many: String = (0..=MAX_CUES).map(|i| format!("{}\n00:00:00,000 --> 00:00:01,000\nx\n\n", i + 1)).collect();
        assert_eq!(parse(many.as_bytes()).unwrap_err(), CueError::TooManyCues);
        assert!(err("WEBVTT\n\n101:00:00.000 --> 101:00:01.000\nlate\n").contains("past 100 hours"));
    }

    #[test]
    fn segments_hold_every_cue_that_overlaps_them_at_its_own_time() {
        let cues = parse(b"WEBVTT\n\n00:01.000 --> 00:02.000\na\n\n00:05.000 --> 00:07.000\nspans\n\n00:13.000 --> 00:14.000\nafter the end\n").unwrap();
        let parts = segments(&cues, &[6.0, 6.0, 0.5]);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n")));
        assert!(
            parts[0].contains("00:00:01.000 --> 00:00:02.000\na\n")
                && parts[0].contains("00:00:05.000 --> 00:00:07.000\nspans")
        );
        assert!(parts[1].contains("00:00:05.000 --> 00:00:07.000\nspans") && !parts[1].contains("\na\n"));
        assert!(!parts[2].contains("-->"), "{}", parts[2]);
        for part in &parts {
            let reread = parse(part.as_bytes());
            assert!(reread.is_ok() || reread == Err(CueError::Empty));
        }
    }
}
