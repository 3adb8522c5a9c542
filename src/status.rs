//! What clients read about a lecture and its job: the lecture document (a
//! lecture record joined with its job, in the field names of the API we
//! replace) and the job view. Both are built here once, so the HTTP API and
//! the CLI's `--json` show one shape each.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{rfc3339, JobState, ProcessingStatus};
use crate::lectures::{Lecture, RenditionSummary};
use crate::publish::Storage;
use crate::queue::{AttemptError, JobRecord};
use crate::redact::for_clients;
use crate::transcode::command::{MASTER_PLAYLIST, MEDIA_PLAYLIST, THUMBNAIL};
use crate::transcode::playlist::captions_dir;
use crate::transcode::previews::STORYBOARD_VTT;

/// A lecture as clients see it. Every field of the seed's document is here
/// under its seed name; the rest are additions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LectureDocument {
    #[serde(rename = "_id")]
    pub id: String,
    pub course_id: String,
    pub name_of_topic: String,
    pub processing_status: ProcessingStatus,
    /// Whole percent, 0 to 100.
    #[schema(maximum = 100)]
    pub progress: u32,
    /// True once the video can be played: completed, or processing with the
    /// first segment of every rendition published (progressive publishing).
    pub playable: bool,
    pub processing_error: Option<String>,
    pub job_id: String,
    pub attempts: u32,
    pub video_link: Option<String>,
    pub thumbnail_link: Option<String>,
    /// Seconds from the start of the frame the thumbnail shows; before the
    /// video is published, the time asked for at upload, if any.
    pub thumbnail_time: Option<f64>,
    /// WebVTT whose cues name tiles of a sprite (`storyboard.jpg#xywh=…`):
    /// seek-bar previews for Video.js, Mux Player and hls.js UIs.
    pub storyboard_link: Option<String>,
    /// Caption tracks, also listed as subtitles renditions in the master
    /// playlist. Each is published with the video.
    pub captions: Vec<CaptionLink>,
    pub renditions: Vec<RenditionSummary>,
    pub duration_seconds: Option<f64>,
    pub no_of_views: i64,
    pub no_of_likes: i64,
    /// Kept from the seed's document; vidpipe stores what it is given.
    #[schema(value_type = Vec<Object>)]
    pub comments: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl LectureDocument {
    /// `job` is `None` when the job record is gone: cleaned after it
    /// finished, or lost with a Redis queue's data. The lecture's own record
    /// then tells: published means completed, a stored failure means failed,
    /// anything else is pending until the reconciler re-enqueues it.
    pub fn new(lecture: Lecture, job: Option<&JobRecord>, storage: &dyn Storage) -> LectureDocument {
        let status = match job {
            // The lecture and its job are read one after the other; a
            // completion committed in between shows as still processing for
            // a moment, never as completed without its video.
            Some(j) if j.state == JobState::Completed && lecture.published_prefix.is_none() => {
                ProcessingStatus::Processing
            }
            Some(j) => j.state.processing_status(),
            None if lecture.published_prefix.is_some() => ProcessingStatus::Completed,
            None if lecture.failed_error.is_some() => ProcessingStatus::Failed,
            None => ProcessingStatus::Pending,
        };
        let completed = status == ProcessingStatus::Completed;
        let link = |file: &str| lecture.published_prefix.as_ref().map(|p| storage.url(&format!("{p}/{file}")));
        // Early playback: only while a worker is producing the video.
        let early = lecture
            .playable_prefix
            .as_ref()
            .filter(|_| status == ProcessingStatus::Processing)
            .map(|p| storage.url(&format!("{p}/{MASTER_PLAYLIST}")));
        let processing_error = match (job, status) {
            (None, _) => lecture.failed_error.clone(),
            (Some(j), ProcessingStatus::Failed) => j.last_error.clone(),
            // A pending job that already failed once shows why it is retrying.
            (Some(j), ProcessingStatus::Pending) => j.last_error.clone(),
            _ => None,
        };
        let updated_at = job.map_or(lecture.updated_at, |j| j.updated_at.max(lecture.updated_at));
        LectureDocument {
            id: lecture.id.to_string(),
            job_id: lecture.id.to_string(),
            course_id: lecture.course_id,
            name_of_topic: lecture.name_of_topic,
            processing_status: status,
            progress: if completed { 100 } else { job.map_or(0, |j| whole_percent(j.progress)) },
            // Stored whole for operators; clients see it without server details.
            processing_error: processing_error.as_deref().map(for_clients),
            attempts: job.map_or(0, |j| j.attempts),
            playable: completed || early.is_some(),
            video_link: if completed { link(MASTER_PLAYLIST) } else { early },
            thumbnail_link: if completed && lecture.has_thumbnail { link(THUMBNAIL) } else { None },
            thumbnail_time: lecture.thumbnail_time,
            storyboard_link: if completed && lecture.has_storyboard { link(STORYBOARD_VTT) } else { None },
            captions: if completed {
                lecture
                    .captions
                    .iter()
                    .filter_map(|c| {
                        let link = link(&format!("{}/{MEDIA_PLAYLIST}", captions_dir(&c.language)))?;
                        Some(CaptionLink { language: c.language.clone(), label: c.label.clone(), link })
                    })
                    .collect()
            } else {
                Vec::new()
            },
            renditions: if completed { lecture.renditions } else { Vec::new() },
            duration_seconds: lecture.duration_seconds,
            no_of_views: lecture.no_of_views,
            no_of_likes: lecture.no_of_likes,
            comments: lecture.comments,
            created_at: rfc3339(lecture.created_at),
            updated_at: rfc3339(updated_at),
        }
    }
}

/// A caption track of a lecture.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptionLink {
    /// BCP 47: `en`, `pt-BR`.
    pub language: String,
    /// The language's name, as the player's menu shows it.
    pub label: String,
    /// The track's HLS subtitles playlist (segmented WebVTT).
    pub link: String,
}

/// Progress in whole percent, the one type every answer uses.
fn whole_percent(progress: f64) -> u32 {
    progress.clamp(0.0, 100.0).floor() as u32
}

/// Who reads a job: clients see redacted errors and no host names, admins
/// see which worker ran it, operators at the CLI see everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Client,
    Admin,
    Operator,
}

/// A job, the one shape in which the HTTP API and `vidpipe queue --json`
/// show it. `id` is the lecture's id. Times are RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    /// Lower runs first.
    pub priority: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Whole percent, 0 to 100.
    #[schema(maximum = 100)]
    pub progress: u32,
    /// The worker that holds or last held it; admins only.
    pub worker: Option<String>,
    pub last_error: Option<String>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptView>,
    pub run_at: String,
    pub lease_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One failed attempt of a job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: u32,
    pub error: String,
    /// RFC 3339.
    pub at: String,
    pub worker: Option<String>,
}

impl JobView {
    pub fn new(job: &JobRecord, audience: Audience) -> JobView {
        let error = |text: &str| match audience {
            Audience::Operator => text.to_string(),
            Audience::Client | Audience::Admin => for_clients(text),
        };
        let worker = |name: &Option<String>| if audience == Audience::Client { None } else { name.clone() };
        let attempt = |e: &AttemptError| AttemptView {
            attempt: e.attempt,
            error: error(&e.error),
            at: rfc3339(e.at),
            worker: worker(&e.worker),
        };
        JobView {
            id: job.id.clone(),
            state: job.state,
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            progress: whole_percent(job.progress),
            worker: worker(&job.worker_id),
            last_error: job.last_error.as_deref().map(error),
            errors: job.errors.iter().map(attempt).collect(),
            run_at: rfc3339(job.run_at),
            lease_until: job.lease_until.map(rfc3339),
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LectureId;
    use crate::lectures::NewLecture;
    use crate::publish::LocalStorage;

    fn lecture(published: Option<&str>) -> Lecture {
        let new = NewLecture {
            id: LectureId::new(),
            course_id: "c".into(),
            name_of_topic: "t".into(),
            source_path: "/nowhere".into(),
            original_filename: None,
            thumbnail_time: None,
            captions: None,
        };
        Lecture { published_prefix: published.map(str::to_string), ..Lecture::new(new, 0) }
    }

    fn job(state: JobState) -> JobRecord {
        JobRecord {
            id: "j".into(),
            state,
            priority: 0,
            attempts: 1,
            max_attempts: 3,
            run_at: 0,
            worker_id: None,
            lease_until: None,
            progress: 99.0,
            last_error: None,
            errors: Vec::new(),
            created_at: 0,
            updated_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn completed_always_comes_with_its_video_link() {
        let storage = LocalStorage::new("/media".into(), "http://h/media".into());
        // Lecture read just before the completion committed, job just after.
        let doc = LectureDocument::new(lecture(None), Some(&job(JobState::Completed)), &storage);
        assert_eq!(doc.processing_status, ProcessingStatus::Processing);
        assert_eq!(doc.video_link, None);
        let doc = LectureDocument::new(lecture(Some("l/a")), Some(&job(JobState::Completed)), &storage);
        assert_eq!(doc.processing_status, ProcessingStatus::Completed);
        assert_eq!(doc.video_link.as_deref(), Some("http://h/media/l/a/master.m3u8"));
        // Job record gone (cleaned, or lost with Redis): the lecture decides.
        let doc = LectureDocument::new(lecture(Some("l/a")), None, &storage);
        assert_eq!(doc.processing_status, ProcessingStatus::Completed);
        let doc = LectureDocument::new(lecture(None), None, &storage);
        assert_eq!(doc.processing_status, ProcessingStatus::Pending);
    }
}
