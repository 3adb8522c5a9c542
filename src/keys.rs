//! API keys: who may call the API, and with which scope.
//!
//! A key is a random 256-bit secret shown once, at creation. The database
//! keeps only its SHA-256 hash: the secret is random, so a slow password
//! hash would add nothing, and a plain hash lets every request find its key
//! with one indexed lookup. Every request reads the table, so a revoked key
//! (its row deleted) is refused at once by every API process sharing the
//! database, and a newly created key works at once.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use rand::TryRng;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::Database;
use crate::domain::{now_ms, InvalidValue};

/// Every secret starts with this, so a leaked one is easy to recognise (and
/// to search for in logs or repositories).
const SECRET_PREFIX: &str = "vp_";

/// `last_used_at` is written at most this often per key, so a busy client
/// does not turn every read into a write.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// What a key may do. `Admin` may do everything `Upload` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Create uploads; read lecture and job documents.
    Upload,
    /// Everything, including deletes, retries, cancels and queue-wide actions.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Upload => "upload",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "upload" => Ok(Scope::Upload),
            "admin" => Ok(Scope::Admin),
            other => Err(InvalidValue(format!("`{other}` is not a scope; use upload or admin"))),
        }
    }
}

/// A key's name: what operators see and revoke by. Never secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(KeyName(s.to_string()))
        } else {
            Err(InvalidValue(format!("`{s}` is not a key name: use 1 to 64 letters, digits, `.`, `_` or `-`")))
        }
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub name: String,
    pub scope: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// The caller a valid key identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub name: String,
    pub scope: Scope,
    /// The key's digest: what [`ApiKeys::exists`] asks about later.
    pub secret_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key named `{0}` already exists; revoke it first or choose another name")]
    NameTaken(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the operating system gave no random bytes for the secret: {0}")]
    Entropy(String),
}

/// The `api_keys` table.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    db: Database,
}

impl ApiKeys {
    pub fn new(db: Database) -> ApiKeys {
        ApiKeys { db }
    }

    /// Creates a key and returns its secret, which is stored nowhere.
    pub async fn create(&self, name: &KeyName, scope: Scope) -> Result<String, KeyError> {
        let secret = format!("{SECRET_PREFIX}{}", random_secret().map_err(KeyError::Entropy)?);
        let inserted = sqlx::query(
            "INSERT INTO api_keys (name, scope, secret_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(scope.as_str())
        .bind(hash(&secret))
        .bind(now_ms())
        .execute(&self.db.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(KeyError::NameTaken(name.to_string()));
        }
        Ok(secret)
    }

    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let rows = sqlx::query("SELECT name, scope, created_at, last_used_at FROM api_keys ORDER BY created_at, name")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyInfo {
                    name: r.try_get("name")?,
                    scope: r.try_get("scope")?,
                    created_at: crate::domain::rfc3339(r.try_get("created_at")?),
                    last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(crate::domain::rfc3339),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// `false` if no key has that name.
    pub async fn revoke(&self, name: &KeyName) -> Result<bool, KeyError> {
        let deleted =
            sqlx::query("DELETE FROM api_keys WHERE name = $1").bind(name.as_str()).execute(&self.db.pool).await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// True if at least one key exists.
    pub async fn any(&self) -> Result<bool, KeyError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys").fetch_one(&self.db.pool).await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The holder of `secret`, if it is a key that exists now.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<KeyHolder>, KeyError> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let digest = hash(secret);
        let Some(row) = sqlx::query("SELECT name, scope FROM api_keys WHERE secret_hash = $1")
            .bind(&digest)
            .fetch_optional(&self.db.pool)
            .await?
        else {
            return Ok(None);
        };
        let name: String = row.try_get("name")?;
        let scope: String = row.try_get("scope")?;
        let Ok(scope) = scope.parse() else {
            tracing::error!(key = %name, scope = %scope, "API key with an unknown scope refused");
            return Ok(None);
        };
        let now = now_ms();
        let touched = sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE secret_hash = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(&digest)
        .bind(now - LAST_USED_RESOLUTION_MS)
        .execute(&self.db.pool)
        .await;
        if let Err(e) = touched {
            tracing::warn!(key = %name, error = %e, "could not record the key's last use");
        }
        Ok(Some(KeyHolder { name, scope, secret_hash: digest }))
    }

    /// Whether the key with this digest still exists. A response that
    /// outlives its request (an event stream) asks, so that revoking a key
    /// ends what it opened.
    pub async fn exists(&self, secret_hash: &str) -> Result<bool, KeyError> {
        let row = sqlx::query("SELECT 1 AS one FROM api_keys WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// 256 random bits, straight from the OS as a secret should be, in
/// URL-safe base64 (43 characters).
pub fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng.try_fill_bytes(&mut bytes).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How a random secret is stored: its SHA-256, in hex.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scopes_are_validated() {
        assert!("ci-uploader.2".parse::<KeyName>().is_ok());
        assert!("".parse::<KeyName>().is_err());
        assert!("has space".parse::<KeyName>().is_err());
        assert!("x".repeat(65).parse::<KeyName>().is_err());
        assert_eq!("admin".parse::<Scope>().unwrap(), Scope::Admin);
        assert!("root".parse::<Scope>().unwrap_err().0.contains("upload or admin"));
        assert!(Scope::Admin > Scope::Upload);
    }

    #[tokio::test]
    async fn only_a_hash_is_stored_and_revocation_is_immediate() {
        let (_dir, db) = crate::db::scratch().await;
        let keys = ApiKeys::new(db.clone());
        assert!(!keys.any().await.unwrap());
        let name: KeyName = "uploader".parse().unwrap();
        let secret = keys.create(&name, Scope::Upload).await.unwrap();
        assert!(secret.starts_with("vp_") && secret.len() > 40, "{secret}");
        assert!(matches!(keys.create(&name, Scope::Admin).await, Err(KeyError::NameTaken(_))));
        let stored: Vec<String> = sqlx::query("SELECT secret_hash FROM api_keys")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("secret_hash"))
            .collect();
        assert_eq!(stored, vec![hash(&secret)]);
        assert!(!stored[0].contains(&secret[3..]), "the secret itself is not stored");

        let holder = keys.authenticate(&secret).await.unwrap().expect("valid key");
        assert_eq!((holder.name.as_str(), holder.scope), ("uploader", Scope::Upload));
        assert!(keys.list().await.unwrap()[0].last_used_at.is_some());
        assert!(keys.authenticate("vp_wrong").await.unwrap().is_none());
        assert!(keys.exists(&holder.secret_hash).await.unwrap());
        assert!(keys.revoke(&name).await.unwrap());
        assert!(keys.authenticate(&secret).await.unwrap().is_none());
        assert!(!keys.exists(&holder.secret_hash).await.unwrap(), "a revoked key no longer exists");
        assert!(!keys.revoke(&name).await.unwrap());
    }
}
