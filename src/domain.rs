//! Domain types shared by every stage: identifiers, job states and what a
//! lecture shows to clients.
//!
//! These types do no I/O. Each one is parsed once at the edge (`FromStr`,
//! `parse`) so that an invalid value cannot travel further into the system.

use std::fmt;
use std::str::FromStr;

/// Identifies a lecture. The lecture's job uses the same id, so enqueueing a
/// lecture twice is idempotent and a job always leads back to its lecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LectureId(String);

impl LectureId {
    /// A new, time-ordered id (UUIDv7), so ids sort roughly by creation.
    pub fn new() -> Self {
        LectureId(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LectureId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for LectureId {
    type Err = InvalidValue;

    /// Accepts only what `new` produces: 32 lowercase hex digits. Ids end up in
    /// file paths and object keys, so nothing else may get through.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(LectureId(s.to_string()))
        } else {
            Err(InvalidValue(format!("`{s}` is not a lecture id (32 lowercase hex digits)")))
        }
    }
}

impl fmt::Display for LectureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value that failed validation, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Where a job is in its life. `Completed`, `Failed` and `Cancelled` are final;
/// every other state has something that moves it on (a worker's claim, the
/// clock for `Delayed`, lease expiry for `Active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Waiting,
    Active,
    Delayed,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Waiting,
        JobState::Active,
        JobState::Delayed,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The status a lecture shows for its job's state. A job waiting for a
    /// retry is still `pending`: it will run again without anyone's help.
    pub fn processing_status(self) -> ProcessingStatus {
        match self {
            JobState::Waiting | JobState::Delayed => ProcessingStatus::Pending,
            JobState::Active => ProcessingStatus::Processing,
            JobState::Completed => ProcessingStatus::Completed,
            JobState::Failed | JobState::Cancelled => ProcessingStatus::Failed,
        }
    }
}

impl FromStr for JobState {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            InvalidValue(format!(
                "unknown job state `{s}` (one of waiting, active, delayed, completed, failed, cancelled)"
            ))
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status the HTTP contract of the system we replace shows on a lecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessingStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl ProcessingStatus {
    pub const ALL: [ProcessingStatus; 4] = [
        ProcessingStatus::Pending,
        ProcessingStatus::Processing,
        ProcessingStatus::Completed,
        ProcessingStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingStatus::Pending => "pending",
            ProcessingStatus::Processing => "processing",
            ProcessingStatus::Completed => "completed",
            ProcessingStatus::Failed => "failed",
        }
    }
}

impl FromStr for ProcessingStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ProcessingStatus::Pending),
            "processing" => Ok(ProcessingStatus::Processing),
            "completed" => Ok(ProcessingStatus::Completed),
            "failed" => Ok(ProcessingStatus::Failed),
            _ => Err(InvalidValue(format!("unknown status `{s}` (one of pending, processing, completed, failed)"))),
        }
    }
}

/// Milliseconds since the Unix epoch: the one time representation stored in
/// every backend, so SQLite and PostgreSQL compare times the same way.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// RFC 3339 text for a stored millisecond timestamp, as the API shows it.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lecture_ids_round_trip_and_reject_paths() {
        let id = LectureId::new();
        assert_eq!(id.as_str().parse::<LectureId>().unwrap(), id);
        assert!("../../etc/passwd".parse::<LectureId>().is_err());
        assert!("ABCDEF00000000000000000000000000".parse::<LectureId>().is_err());
    }

    #[test]
    fn every_job_state_parses_back_and_maps_to_a_status() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            let status = state.processing_status();
            assert_eq!(status.as_str().parse::<ProcessingStatus>().unwrap(), status);
        }
        assert!("running".parse::<JobState>().is_err());
        // What clients see for each state (the seed's four statuses).
        let expected = [
            (JobState::Waiting, ProcessingStatus::Pending),
            (JobState::Delayed, ProcessingStatus::Pending),
            (JobState::Active, ProcessingStatus::Processing),
            (JobState::Completed, ProcessingStatus::Completed),
            (JobState::Failed, ProcessingStatus::Failed),
            (JobState::Cancelled, ProcessingStatus::Failed),
        ];
        assert_eq!(expected.len(), JobState::ALL.len());
        for (state, status) in expected {
            assert_eq!(state.processing_status(), status, "{state}");
        }
        let names: Vec<&str> = expected.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(names, ["pending", "pending", "processing", "completed", "failed", "failed"]);
    }
}
