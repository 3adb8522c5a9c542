-- API keys. Only a SHA-256 hash of each secret is stored: the secret is
-- shown once, when the key is created. Revoking deletes the row, so every
-- API process refuses the key on its next request.
CREATE TABLE api_keys (
    name         TEXT PRIMARY KEY,
    scope        TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
