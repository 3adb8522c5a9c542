//! Caption languages: BCP 47 tags whose language is a known ISO 639 code.
//!
//! The tag names the HLS rendition (`LANGUAGE=`), the published directory
//! (`captions-<tag>`) and the row that holds the captions, so it is checked
//! and put in one canonical form (`pt-BR`, `zh-Hans`) on the way in: `EN`,
//! `en` and `eng` are one language, not three.

use std::fmt;
use std::str::FromStr;

/// ISO 639-2/B codes (used by MP4 and Matroska language tags) whose
/// ISO 639-3 code differs.
const BIBLIOGRAPHIC: [(&str, &str); 20] = [
    ("alb", "sqi"),
    ("arm", "hye"),
    ("baq", "eus"),
    ("bur", "mya"),
    ("chi", "zho"),
    ("cze", "ces"),
    ("dut", "nld"),
    ("fre", "fra"),
    ("geo", "kat"),
    ("ger", "deu"),
    ("gre", "ell"),
    ("ice", "isl"),
    ("mac", "mkd"),
    ("mao", "mri"),
    ("may", "msa"),
    ("per", "fas"),
    ("rum", "ron"),
    ("slo", "slk"),
    ("tib", "bod"),
    ("wel", "cym"),
];
/// RFC 5646's longest tag worth keeping.
const MAX_TAG_LEN: usize = 35;

/// A checked language tag and its English name, for the player's menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    tag: String,
    label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language tag `{0}`: use a BCP 47 tag whose language is an ISO 639 code, such as `en`, `pt-BR` or `zh-Hans`")]
pub struct UnknownLanguage(pub String);

impl Language {
    /// The canonical tag: `en`, `pt-BR`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `English`, `Portuguese (BR)`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// From a stream's language tag in a container (`eng`, `fre`, `en`), or
    /// `und` (undetermined) when it has none or an unknown one.
    pub fn of_stream(tag: Option<&str>) -> Language {
        tag.and_then(|t| t.parse().ok()).unwrap_or_else(|| "und".parse().expect("und is a tag"))
    }
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(raw: &str) -> Result<Language, UnknownLanguage> {
        let unknown = || UnknownLanguage(raw.chars().take(64).collect());
        if raw.is_empty() || raw.len() > MAX_TAG_LEN {
            return Err(unknown());
        }
        let mut subtags = raw.split(['-', '_']);
        let primary = subtags.next().unwrap_or_default().to_ascii_lowercase();
        let language = match primary.len() {
            2 => isolang::Language::from_639_1(&primary),
            3 => {
                let code = BIBLIOGRAPHIC.iter().find(|(b, _)| *b == primary).map_or(primary.as_str(), |(_, t)| t);
                isolang::Language::from_639_3(code)
            }
            _ => None,
        }
        .ok_or_else(unknown)?;
        let mut tag = language.to_639_1().unwrap_or(language.to_639_3()).to_string();
        let mut qualifiers = Vec::new();
        for subtag in subtags {
            if subtag.is_empty() || subtag.len() > 8 || !subtag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(unknown());
            }
            // RFC 5646 §2.1.1: scripts in title case, regions in upper case.
            let canonical = match subtag.len() {
                4 if subtag.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    subtag[..1].to_ascii_uppercase() + &subtag[1..].to_ascii_lowercase()
                }
                2 => subtag.to_ascii_uppercase(),
                _ => subtag.to_ascii_lowercase(),
            };
            tag.push('-');
            tag.push_str(&canonical);
            qualifiers.push(canonical);
        }
        let name = if tag == "und" { "Unknown language" } else { language.to_name() };
        let label =
            if qualifiers.is_empty() { name.to_string() } else { format!("{name} ({})", qualifiers.join(", ")) };
        Ok(Language { tag, label })
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(raw: &str) -> String {
        raw.parse::<Language>().map(|l| l.tag).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn tags_take_one_canonical_form() {
        assert_eq!(tag("en"), "en");
        assert_eq!(tag("EN"), "en");
        assert_eq!(tag("eng"), "en");
        assert_eq!(tag("fre"), "fr", "ISO 639-2/B, as MP4 files carry it");
        assert_eq!(tag("pt_br"), "pt-BR");
        assert_eq!(tag("zh-hans-cn"), "zh-Hans-CN");
        assert_eq!(tag("yue"), "yue", "a language with no two-letter code");
        assert_eq!(tag("es-419"), "es-419");
        let pt: Language = "pt-BR".parse().unwrap();
        assert_eq!(pt.label(), "Portuguese (BR)");
        assert_eq!("de".parse::<Language>().unwrap().label(), "German");
        assert_eq!(Language::of_stream(None).tag(), "und");
        assert_eq!(Language::of_stream(Some("xx1")).label(), "Unknown language");
        assert_eq!(Language::of_stream(Some("ger")).tag(), "de");
    }

    #[test]
    fn unknown_or_malformed_tags_are_refused() {
        for bad in ["", "english", "xx", "qqq", "en-", "en--US", "en-US!", "en-abcdefghi", "e", "<script>"] {
            assert!(bad.parse::<Language>().is_err(), "{bad}");
        }
        assert!(tag("xx").starts_with("unknown language tag `xx`: use a BCP 47 tag"));
    }
}
