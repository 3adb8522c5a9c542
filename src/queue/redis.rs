//! The queue in Redis (`VIDPIPE_QUEUE_URL=redis://...`), the seed system's
//! choice, with the same behaviour as the SQL queue.
//!
//! Every state change is one Lua script, so it is atomic on the server.
//! Layout under a key prefix `P` (default `vidpipe`):
//! - `P:job:<id>`: a hash with every field of the job;
//! - `P:waiting`: sorted set scored by (priority, enqueue sequence);
//! - `P:delayed`: sorted set scored by the time the job becomes due;
//! - `P:active`: the lease set, scored by lease expiry; the reaper moves
//!   expired entries back to `waiting` (or to `failed`);
//! - `P:completed`, `P:failed`, `P:cancelled`: scored by finish time;
//! - `P:seq` (FIFO counter) and `P:paused`.
//!
//! Times come from the Redis server's clock (`TIME`), so workers with skewed
//! clocks still agree on lease expiry. Redis may lose its data (it runs
//! without persistence here); lecture records stay in SQL and the worker's
//! reconciler re-enqueues any unfinished lecture whose job is gone.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;

use super::{AttemptError, Backoff, Claim, Counts, EnqueueOptions, FailOutcome, JobRecord, Queue, QueueError};
use crate::domain::JobState;

const PRELUDE: &str = r#"
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jkey(id) return P .. ':job:' .. id end
local function waiting_score(id)
  local h = redis.call('HMGET', jkey(id), 'priority', 'seq')
  return (tonumber(h[1]) + 1000) * 1e12 + tonumber(h[2])
end
local function unlist(id)
  for _, s in ipairs({'waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled'}) do
    redis.call('ZREM', P .. ':' .. s, id)
  end
end
-- After a failed or lost attempt: back in line (`retry_state` at `at`) if it
-- may retry and has attempts left, else failed for good. Returns the state.
local function retry_or_fail(id, k, now, may_retry, retry_state, at)
  if may_retry and tonumber(redis.call('HGET', k, 'attempts')) < tonumber(redis.call('HGET', k, 'max_attempts')) then
    redis.call('HSET', k, 'state', retry_state, 'run_at', at)
    if retry_state == 'delayed' then
      redis.call('ZADD', P .. ':delayed', at, id)
    else
      redis.call('ZADD', P .. ':waiting', waiting_score(id), id)
    end
    return retry_state
  end
  redis.call('HSET', k, 'state', 'failed', 'finished_at', now)
  redis.call('ZADD', P .. ':failed', now, id)
  return 'failed'
end
local function holds(k, token)
  return redis.call('HGET', k, 'lease_token') == token and redis.call('HGET', k, 'state') == 'active'
end
"#;

const ENQUEUE: &str = r#"
local id = ARGV[2]
if redis.call('EXISTS', jkey(id)) == 1 then return 0 end
local now = now_ms()
local delay = tonumber(ARGV[4])
local seq = redis.call('INCR', P .. ':seq')
local state = 'waiting'
if delay > 0 then state = 'delayed' end
redis.call('HSET', jkey(id), 'id', id, 'state', state, 'priority', ARGV[3], 'seq', seq, 'attempts', 0,
  'max_attempts', ARGV[5], 'run_at', now + delay, 'progress', 0, 'errors', '[]', 'created_at', now, 'updated_at', now)
if delay > 0 then
  redis.call('ZADD', P .. ':delayed', now + delay, id)
else
  redis.call('ZADD', P .. ':waiting', waiting_score(id), id)
end
return 1
"#;

const CLAIM: &str = r#"
if redis.call('GET', P .. ':paused') == '1' then return false end
local now = now_ms()
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('HSET', jkey(id), 'state', 'waiting')
  redis.call('ZADD', P .. ':waiting', waiting_score(id), id)
end
local popped = redis.call('ZPOPMIN', P .. ':waiting')
if #popped == 0 then return false end
local id = popped[1]
local k = jkey(id)
local attempts = redis.call('HINCRBY', k, 'attempts', 1)
local lease_until = now + tonumber(ARGV[4])
redis.call('HSET', k, 'state', 'active', 'lease_token', ARGV[2], 'lease_until', lease_until, 'worker_id', ARGV[3],
  'progress', 0, 'updated_at', now)
if redis.call('HEXISTS', k, 'started_at') == 0 then redis.call('HSET', k, 'started_at', now) end
redis.call('ZADD', P .. ':active', lease_until, id)
return {id, attempts}
"#;

const HEARTBEAT: &str = r#"
local k = jkey(ARGV[2])
if not holds(k, ARGV[3]) then return 0 end
local now = now_ms()
local lease_until = now + tonumber(ARGV[4])
redis.call('HSET', k, 'lease_until', lease_until, 'progress', ARGV[5], 'updated_at', now)
redis.call('ZADD', P .. ':active', lease_until, ARGV[2])
return 1
"#;

const COMPLETE: &str = r#"
local id = ARGV[2]
local k = jkey(id)
if not holds(k, ARGV[3]) then return 0 end
local now = now_ms()
redis.call('HSET', k, 'state', 'completed', 'progress', 100, 'finished_at', now, 'updated_at', now)
redis.call('HDEL', k, 'lease_token', 'lease_until', 'last_error')
unlist(id)
redis.call('ZADD', P .. ':completed', now, id)
return 1
"#;

/// Replies `{0}` (lease lost), `{1}` (failed for good) or `{2, retry_at}`:
/// read back by [`fail_outcome`] alone.
const FAIL: &str = r#"
local id = ARGV[2]
local k = jkey(id)
if not holds(k, ARGV[3]) then return {0} end
local now = now_ms()
local errors = cjson.decode(redis.call('HGET', k, 'errors') or '[]')
table.insert(errors, {attempt = tonumber(ARGV[8]), error = ARGV[4], at = now, worker = ARGV[7]})
redis.call('HSET', k, 'errors', cjson.encode(errors), 'last_error', ARGV[4], 'updated_at', now)
redis.call('HDEL', k, 'lease_token', 'lease_until')
unlist(id)
local at = now + tonumber(ARGV[6])
if retry_or_fail(id, k, now, ARGV[5] == '1', 'delayed', at) == 'delayed' then return {2, at} end
return {1}
"#;

/// The FAIL script's reply, as its comment lists them.
fn fail_outcome(reply: &[i64]) -> Result<FailOutcome, QueueError> {
    match *reply {
        [0] => Ok(FailOutcome::LeaseLost),
        [1] => Ok(FailOutcome::Failed),
        [2, retry_at] => Ok(FailOutcome::RetryAt(retry_at)),
        _ => Err(QueueError::Corrupt(format!("the fail script replied {reply:?}"))),
    }
}

const RELEASE: &str = r#"
local id = ARGV[2]
local k = jkey(id)
if not holds(k, ARGV[3]) then return 0 end
local now = now_ms()
redis.call('HINCRBY', k, 'attempts', -1)
redis.call('HSET', k, 'state', 'waiting', 'run_at', now, 'updated_at', now)
redis.call('HDEL', k, 'lease_token', 'lease_until', 'worker_id')
unlist(id)
redis.call('ZADD', P .. ':waiting', waiting_score(id), id)
return 1
"#;

const REAP: &str = r#"
local now = now_ms()
local moved = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':active', '-inf', '(' .. now)) do
  local k = jkey(id)
  unlist(id)
  if redis.call('EXISTS', k) == 1 then
    redis.call('HDEL', k, 'lease_token', 'lease_until')
    redis.call('HSET', k, 'last_error', 'the worker running it stopped renewing its lease (crashed or lost)',
      'updated_at', now, 'run_at', now)
    retry_or_fail(id, k, now, true, 'waiting', now)
    moved = moved + 1
  end
end
return moved
"#;

const CANCEL: &str = r#"
local id = ARGV[2]
local k = jkey(id)
local state = redis.call('HGET', k, 'state')
if state ~= 'waiting' and state ~= 'delayed' and state ~= 'active' then return 0 end
local now = now_ms()
unlist(id)
redis.call('HSET', k, 'state', 'cancelled', 'last_error', 'cancelled', 'finished_at', now, 'updated_at', now)
redis.call('HDEL', k, 'lease_token', 'lease_until')
redis.call('ZADD', P .. ':cancelled', now, id)
return 1
"#;

const RETRY: &str = r#"
local id = ARGV[2]
local k = jkey(id)
local state = redis.call('HGET', k, 'state')
if state ~= 'failed' and state ~= 'cancelled' then return 0 end
local now = now_ms()
unlist(id)
redis.call('HSET', k, 'state', 'waiting', 'attempts', 0, 'progress', 0, 'run_at', now, 'updated_at', now)
redis.call('HDEL', k, 'finished_at', 'last_error')
redis.call('ZADD', P .. ':waiting', waiting_score(id), id)
return 1
"#;

const REMOVE: &str = r#"
local id = ARGV[2]
unlist(id)
return redis.call('DEL', jkey(id))
"#;

const CLEAN: &str = r#"
-- Only finished sets are scored by time; the others are never cleaned.
if ARGV[2] ~= 'completed' and ARGV[2] ~= 'failed' and ARGV[2] ~= 'cancelled' then return {} end
local ids = redis.call('ZRANGEBYSCORE', P .. ':' .. ARGV[2], '-inf', '(' .. ARGV[3])
for _, id in ipairs(ids) do
  unlist(id)
  redis.call('DEL', jkey(id))
end
return ids
"#;

const POSITION: &str = r#"
local id = ARGV[2]
local rank = redis.call('ZRANK', P .. ':waiting', id)
if rank then return rank end
if redis.call('ZSCORE', P .. ':delayed', id) then return redis.call('ZCARD', P .. ':waiting') end
return -1
"#;

const COUNTS: &str = r#"
local out = {}
for _, s in ipairs({'waiting', 'active', 'delayed', 'completed', 'failed', 'cancelled'}) do
  table.insert(out, redis.call('ZCARD', P .. ':' .. s))
end
return out
"#;

struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    complete: Script,
    fail: Script,
    release: Script,
    reap: Script,
    cancel: Script,
    retry: Script,
    remove: Script,
    clean: Script,
    position: Script,
    counts: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            enqueue: s(ENQUEUE),
            claim: s(CLAIM),
            heartbeat: s(HEARTBEAT),
            complete: s(COMPLETE),
            fail: s(FAIL),
            release: s(RELEASE),
            reap: s(REAP),
            cancel: s(CANCEL),
            retry: s(RETRY),
            remove: s(REMOVE),
            clean: s(CLEAN),
            position: s(POSITION),
            counts: s(COUNTS),
        }
    }
}

pub struct RedisQueue {
    conn: ConnectionManager,
    prefix: String,
    backoff: Backoff,
    scripts: Scripts,
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Redis(e.to_string())
    }
}

impl RedisQueue {
    /// Connects (and checks the connection with PING). `prefix` namespaces
    /// every key, so several deployments or tests can share one Redis.
    pub async fn connect(url: &str, prefix: &str, backoff: Backoff) -> Result<RedisQueue, QueueError> {
        let client = redis::Client::open(url).map_err(|e| QueueError::Redis(format!("{url}: {e}")))?;
        let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| QueueError::Redis(format!("{url}: no answer within 10s")))?
            .map_err(|e| QueueError::Redis(format!("{url}: {e}")))?;
        let _: String =
            redis::cmd("PING").query_async(&mut conn).await.map_err(|e| QueueError::Redis(format!("{url}: {e}")))?;
        Ok(RedisQueue { conn, prefix: prefix.to_string(), backoff, scripts: Scripts::new() })
    }

    fn call<'a>(&'a self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix);
        invocation
    }
}

fn field<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> Result<T, QueueError> {
    map.get(name)
        .ok_or_else(|| QueueError::Corrupt(format!("job hash lacks `{name}`")))?
        .parse()
        .map_err(|_| QueueError::Corrupt(format!("job field `{name}` is not a number")))
}

fn optional<T: std::str::FromStr>(map: &HashMap<String, String>, name: &str) -> Option<T> {
    map.get(name).and_then(|v| v.parse().ok())
}

fn job_from_hash(map: HashMap<String, String>) -> Result<JobRecord, QueueError> {
    let state: JobState = map
        .get("state")
        .map(String::as_str)
        .unwrap_or_default()
        .parse()
        .map_err(|e: crate::domain::InvalidValue| QueueError::Corrupt(e.0))?;
    let errors: Vec<AttemptError> = serde_json::from_str(map.get("errors").map(String::as_str).unwrap_or("[]"))
        .map_err(|e| QueueError::Corrupt(format!("errors of job: {e}")))?;
    Ok(JobRecord {
        id: map.get("id").cloned().unwrap_or_default(),
        state,
        priority: field(&map, "priority")?,
        attempts: field(&map, "attempts")?,
        max_attempts: field(&map, "max_attempts")?,
        run_at: field(&map, "run_at")?,
        worker_id: map.get("worker_id").cloned(),
        lease_until: optional(&map, "lease_until"),
        progress: optional(&map, "progress").unwrap_or(0.0),
        last_error: map.get("last_error").cloned(),
        errors,
        created_at: field(&map, "created_at")?,
        updated_at: field(&map, "updated_at")?,
        started_at: optional(&map, "started_at"),
        finished_at: optional(&map, "finished_at"),
    })
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, id: &str, options: &EnqueueOptions) -> Result<(), QueueError> {
        let _: i64 = self
            .call(&self.scripts.enqueue)
            .arg(id)
            .arg(options.priority)
            .arg(options.delay.as_millis() as u64)
            .arg(options.max_attempts)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claim>, QueueError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let claimed: Option<(String, u32)> = self
            .call(&self.scripts.claim)
            .arg(&token)
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(claimed.map(|(job_id, attempt)| Claim { job_id, attempt, token }))
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration, progress: f64) -> Result<bool, QueueError> {
        let held: i64 = self
            .call(&self.scripts.heartbeat)
            .arg(&claim.job_id)
            .arg(&claim.token)
            .arg(lease.as_millis() as u64)
            .arg(progress.clamp(0.0, 100.0))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    async fn complete(&self, claim: &Claim) -> Result<bool, QueueError> {
        let done: i64 = self
            .call(&self.scripts.complete)
            .arg(&claim.job_id)
            .arg(&claim.token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(done == 1)
    }

    async fn fail(&self, claim: &Claim, worker: &str, error: &str, retryable: bool) -> Result<FailOutcome, QueueError> {
        let reply: Vec<i64> = self
            .call(&self.scripts.fail)
            .arg(&claim.job_id)
            .arg(&claim.token)
            .arg(error)
            .arg(if retryable { "1" } else { "0" })
            .arg(self.backoff.delay(claim.attempt).as_millis() as u64)
            .arg(worker)
            .arg(claim.attempt)
            .invoke_async(&mut self.conn.clone())
            .await?;
        fail_outcome(&reply)
    }

    async fn release(&self, claim: &Claim) -> Result<(), QueueError> {
        let _: i64 = self
            .call(&self.scripts.release)
            .arg(&claim.job_id)
            .arg(&claim.token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn reap_expired(&self) -> Result<u64, QueueError> {
        let moved: u64 = self.call(&self.scripts.reap).invoke_async(&mut self.conn.clone()).await?;
        Ok(moved)
    }

    async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        let done: i64 = self.call(&self.scripts.cancel).arg(id).invoke_async(&mut self.conn.clone()).await?;
        Ok(done == 1)
    }

    async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        let done: i64 = self.call(&self.scripts.retry).arg(id).invoke_async(&mut self.conn.clone()).await?;
        Ok(done == 1)
    }

    async fn remove(&self, id: &str) -> Result<bool, QueueError> {
        let done: i64 = self.call(&self.scripts.remove).arg(id).invoke_async(&mut self.conn.clone()).await?;
        Ok(done == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let map: HashMap<String, String> =
            redis::cmd("HGETALL").arg(format!("{}:job:{id}", self.prefix)).query_async(&mut self.conn.clone()).await?;
        if map.is_empty() {
            return Ok(None);
        }
        job_from_hash(map).map(Some)
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(format!("{}:job:{id}", self.prefix));
        }
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        maps.into_iter().filter(|m| !m.is_empty()).map(job_from_hash).collect()
    }

    async fn position(&self, id: &str) -> Result<Option<u64>, QueueError> {
        let rank: i64 = self.call(&self.scripts.position).arg(id).invoke_async(&mut self.conn.clone()).await?;
        Ok(u64::try_from(rank).ok())
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let n: Vec<u64> = self.call(&self.scripts.counts).invoke_async(&mut self.conn.clone()).await?;
        let [waiting, active, delayed, completed, failed, cancelled] = n[..] else {
            return Err(QueueError::Corrupt("counts script returned the wrong shape".into()));
        };
        Ok(Counts { waiting, active, delayed, completed, failed, cancelled })
    }

    async fn set_paused(&self, paused: bool) -> Result<(), QueueError> {
        let _: () = redis::cmd("SET")
            .arg(format!("{}:paused", self.prefix))
            .arg(if paused { "1" } else { "0" })
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn is_paused(&self) -> Result<bool, QueueError> {
        let value: Option<String> =
            redis::cmd("GET").arg(format!("{}:paused", self.prefix)).query_async(&mut self.conn.clone()).await?;
        Ok(value.as_deref() == Some("1"))
    }

    async fn list(&self, state: JobState, limit: u32, offset: u64) -> Result<Vec<JobRecord>, QueueError> {
        let (start, stop) = (offset as i64, offset as i64 + limit as i64 - 1);
        // Runnable sets are kept in claim order; finished ones newest first.
        let command = match state {
            JobState::Waiting | JobState::Delayed | JobState::Active => "ZRANGE",
            JobState::Completed | JobState::Failed | JobState::Cancelled => "ZREVRANGE",
        };
        let ids: Vec<String> = redis::cmd(command)
            .arg(format!("{}:{}", self.prefix, state.as_str()))
            .arg(start)
            .arg(stop)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut jobs = self.get_many(&ids).await?;
        let order: HashMap<&String, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        jobs.sort_by_key(|j| order.get(&j.id).copied().unwrap_or(usize::MAX));
        Ok(jobs)
    }

    async fn clean(&self, state: JobState, before_ms: i64) -> Result<Vec<String>, QueueError> {
        let ids: Vec<String> = self
            .call(&self.scripts.clean)
            .arg(state.as_str())
            .arg(before_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ids)
    }

    /// Reads the ids of the states asked for and sorts them here: the state
    /// sets are ordered for claiming, not by id. Finished jobs are bounded by
    /// cleanup, so this stays a read of the live queue's size.
    async fn page(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let states: Vec<JobState> = state.map_or_else(|| JobState::ALL.to_vec(), |s| vec![s]);
        let mut pipe = redis::pipe();
        for state in &states {
            pipe.cmd("ZRANGE").arg(format!("{}:{}", self.prefix, state.as_str())).arg(0).arg(-1);
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut ids: Vec<String> =
            sets.into_iter().flatten().filter(|id| before.is_none_or(|b| id.as_str() < b)).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit as usize);
        let mut jobs = self.get_many(&ids).await?;
        jobs.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(jobs)
    }
}
