//! The Redis store: standalone (a `ConnectionManager` that reconnects by
//! itself) or Redis Cluster (`ClusterConnection`), both with connect and
//! response timeouts so an outage is a prompt `store_unavailable`, never a
//! hung login.
//!
//! Key schema (`P` is the prefix, `samlgate` by default; `{...}` is the
//! cluster hash tag, so every key of one user lives in one slot):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:user:{email}` | string | the user as JSON |
//! | `P:users` | sorted set | every email, score 0 (lexicographic index for listing) |
//! | `P:account-users:{ACCOUNT}` | sorted set | the emails of one account (every account but `default`), score 0 |
//! | `P:vanity:{name}` | string | the email owning the vanity name |
//! | `P:session:{id}` | string, TTL | session data |
//! | `P:request:{id}` | string, TTL | outstanding AuthnRequest id → RelayState |
//! | `P:replay:{id}` | string, TTL | assertion id seen, until it expires |
//! | `P:verify:{hash}` | string, TTL | SHA-256 of a verification token → email |
//! | `P:slo:{ACCOUNT:hash}` | set, TTL | the session keys opened with one NameID (Single Logout) |
//! | `{P:accounts}:doc` | hash | account id → its record (JSON) |
//! | `{P:accounts}:rev` | hash | account id → its revision |
//! | `{P:accounts}:host` | hash | host → the account id listing it |
//! | `{P:accounts}:hosts` | hash | account id → its hosts, newline-separated |
//! | `{P:accounts}:version` | string | the accounts version (bumped by every change) |
//! | `{P:accounts}:log` | sorted set | account id, scored by the version of its last change |
//! | `{P:accounts}:ids` | sorted set | every account id, score 0 (for listing) |
//! | `{P:accounts}:token` | hash | SHA-256 of a token's secret → the token (JSON) |
//! | `{P:accounts}:tokens:ACCOUNT` | hash | token id → the token (JSON) |
//! | `P:doc:SPACE:{key}` | string | a small document (SCIM user id → email, a group) |
//! | `P:docs:SPACE` | sorted set | the keys of a document space, score 0 (for listing) |
//! | `{P:revoked}:seq` | string | the session revocation sequence |
//! | `{P:revoked}:log` | sorted set | `SEQ:email`, scored by its sequence (the newest 10,000) |
//!
//! Every account key shares one hash tag: a write of an account (its
//! record, its hosts, the version, the change log) is one Lua script, atomic
//! on a cluster too. Replicas poll the version (one `GET`) and read what
//! changed since.
//!
//! A user record and its index entry are written in one pipeline but are not
//! one transaction (they live in different slots); listing skips index
//! entries whose record is gone, and every write re-adds the index entry.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, Value};

use super::{
    AccountChanges, DocSpace, Ephemeral, Expect, PutAccount, REVOCATION_LOG, Revocations, Store,
    StoreError, StoreFuture, StoredAccount, TokenRecord, UserRecord, decode_user, encode_user,
    revocations_after,
};

/// Adds ARGV[1] to the set KEYS[1], keeps it alive ARGV[2] ms more, and
/// drops a random member when it holds more than ARGV[3].
const SET_ADD_SCRIPT: &str = "redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
if redis.call('SCARD', KEYS[1]) > tonumber(ARGV[3]) then
  local out = redis.call('SRANDMEMBER', KEYS[1], 2)
  for _, m in ipairs(out) do
    if m ~= ARGV[1] then redis.call('SREM', KEYS[1], m) break end
  end
end
return 1";

/// Appends ARGV (emails) to the revocation log; returns the sequence.
const REVOKE_SCRIPT: &str = "local n = #ARGV - 1
local s = redis.call('INCRBY', KEYS[1], n)
for i = 1, n do
  local q = s - n + i
  redis.call('ZADD', KEYS[2], q, q .. ':' .. ARGV[i + 1])
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[1]) + 1))
return s";

/// The revocation sequence and the log entries after ARGV[1].
const REVOCATIONS_SCRIPT: &str = "local s = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '' or tonumber(ARGV[1]) >= s then return {s} end
local items = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], s)
table.insert(items, 1, s)
return items";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis (standalone or cluster) store.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
}

fn err(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// KEYS: doc, rev, host, version, log, ids, hosts. ARGV: id, record,
/// expect (`any` | `absent` | `rev`), expected revision, hosts (newline-separated).
const PUT_ACCOUNT_SCRIPT: &str = r"
local id, record, expect, erev, hostsj = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local cur = redis.call('HGET', KEYS[2], id)
if expect == 'absent' and cur then return {'conflict', cur} end
if expect == 'rev' and cur ~= erev then return {'conflict', cur or ''} end
local hosts = {}
for h in string.gmatch(hostsj, '[^\n]+') do table.insert(hosts, h) end
for _, h in ipairs(hosts) do
  local o = redis.call('HGET', KEYS[3], h)
  if o and o ~= id then return {'host_taken', h, o} end
end
local old = redis.call('HGET', KEYS[7], id)
if old then
  for h in string.gmatch(old, '[^\n]+') do
    local keep = false
    for _, n in ipairs(hosts) do if n == h then keep = true end end
    if not keep and redis.call('HGET', KEYS[3], h) == id then redis.call('HDEL', KEYS[3], h) end
  end
end
for _, h in ipairs(hosts) do redis.call('HSET', KEYS[3], h, id) end
redis.call('HSET', KEYS[7], id, hostsj)
local v = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], id, record)
redis.call('HSET', KEYS[2], id, v)
redis.call('ZADD', KEYS[5], v, id)
redis.call('ZADD', KEYS[6], 0, id)
if cur then return {'ok', v, 0} end
return {'ok', v, 1}
";

/// KEYS: doc, rev, host, version, log, ids, hosts, tokens of the account,
/// token. ARGV: id.
const DELETE_ACCOUNT_SCRIPT: &str = r"
local id = ARGV[1]
if redis.call('HDEL', KEYS[1], id) == 0 then return 0 end
redis.call('HDEL', KEYS[2], id)
local old = redis.call('HGET', KEYS[7], id)
if old then
  for h in string.gmatch(old, '[^\n]+') do
    if redis.call('HGET', KEYS[3], h) == id then redis.call('HDEL', KEYS[3], h) end
  end
end
redis.call('HDEL', KEYS[7], id)
redis.call('ZREM', KEYS[6], id)
local v = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[5], v, id)
for _, t in ipairs(redis.call('HVALS', KEYS[8])) do
  local ok, rec = pcall(cjson.decode, t)
  if ok and rec['hash'] then redis.call('HDEL', KEYS[9], rec['hash']) end
end
redis.call('DEL', KEYS[8])
return 1
";

/// KEYS: version, log. ARGV: since.
const ACCOUNT_CHANGES_SCRIPT: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v <= tonumber(ARGV[1]) then return {v, {}} end
return {v, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')}
";

/// KEYS: doc, rev. ARGV: id.
const GET_ACCOUNT_SCRIPT: &str =
    "return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}";

/// KEYS: tokens of the account, token. ARGV: id, hash, JSON.
const PUT_TOKEN_SCRIPT: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1";

/// KEYS: tokens of the account, token. ARGV: id.
const DELETE_TOKEN_SCRIPT: &str = r"
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t then return 0 end
local ok, rec = pcall(cjson.decode, t)
if ok and rec['hash'] then redis.call('HDEL', KEYS[2], rec['hash']) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
";

const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl RedisStore {
    /// Connects to a standalone Redis (`redis://[:password@]host:port[/db]`).
    /// The password may also come from `SAMLGATE_REDIS_PASSWORD`.
    pub async fn standalone(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| StoreError::Open(format!("store.url: {e}")))?;
        if let Ok(pw) = std::env::var("SAMLGATE_REDIS_PASSWORD") {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client =
            redis::Client::open(info).map_err(|e| StoreError::Open(format!("store.url: {e}")))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let cm = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| StoreError::Unavailable(format!("redis: no answer from {url}")))?
        .map_err(err)?;
        Ok(Self {
            conn: Conn::Single(cm),
            prefix: prefix.to_owned(),
        })
    }

    /// Connects to a Redis Cluster through any of its nodes.
    pub async fn cluster(nodes: &[String], prefix: &str) -> Result<Self, StoreError> {
        let mut b = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2);
        if let Ok(pw) = std::env::var("SAMLGATE_REDIS_PASSWORD") {
            b = b.password(pw);
        }
        let client = b
            .build()
            .map_err(|e| StoreError::Open(format!("store.nodes: {e}")))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Unavailable("redis cluster: no answer".into()))?
            .map_err(err)?;
        Ok(Self {
            conn: Conn::Cluster(conn),
            prefix: prefix.to_owned(),
        })
    }

    fn user_key(&self, email: &str) -> String {
        format!("{}:user:{{{email}}}", self.prefix)
    }
    /// Per user: SET its record (NX: only if absent, the answer that
    /// counts) and ZADD it to the ordered index.
    /// The writes of `users`: each record (`SET`, `NX` when
    /// `only_if_absent`, its reply kept), then one `ZADD` per index with
    /// every member at once (a member-per-command `ZADD` cost a million
    /// command dispatches per million-row import).
    fn user_writes(&self, users: &[UserRecord], only_if_absent: bool) -> Vec<(Cmd, bool)> {
        let mut cmds = Vec::with_capacity(users.len() + 2);
        for u in users {
            let mut set = redis::cmd("SET");
            set.arg(self.user_key(&u.email)).arg(encode_user(u));
            if only_if_absent {
                set.arg("NX");
            }
            cmds.push((set, only_if_absent));
        }
        if users.is_empty() {
            return cmds;
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.index_key());
        for u in users {
            zadd.arg(0).arg(&u.email);
        }
        cmds.push((zadd, false));
        let mut per_account: Vec<(&str, Cmd)> = Vec::new();
        for u in users.iter().filter(|u| super::indexed(&u.account)) {
            let at = match per_account.iter().position(|(a, _)| *a == u.account) {
                Some(i) => i,
                None => {
                    let mut z = redis::cmd("ZADD");
                    z.arg(self.account_index_key(&u.account));
                    per_account.push((&u.account, z));
                    per_account.len() - 1
                }
            };
            if let Some((_, z)) = per_account.get_mut(at) {
                z.arg(0).arg(&u.email);
            }
        }
        cmds.extend(per_account.into_iter().map(|(_, z)| (z, false)));
        cmds
    }
    fn account_index_key(&self, account: &str) -> String {
        format!("{}:account-users:{{{account}}}", self.prefix)
    }
    fn index_key(&self) -> String {
        format!("{}:users", self.prefix)
    }
    fn vanity_key(&self, name: &str) -> String {
        format!("{}:vanity:{{{name}}}", self.prefix)
    }
    fn eph_key(&self, kind: Ephemeral, key: &str) -> String {
        format!("{}:{}:{{{key}}}", self.prefix, kind.as_str())
    }

    fn doc_key(&self, space: DocSpace, key: &str) -> String {
        format!("{}:doc:{}:{{{key}}}", self.prefix, space.as_str())
    }
    /// A capped log: one list (one key, so one cluster slot).
    fn log_key(&self, log: &str) -> String {
        format!("{}:log:{{{log}}}", self.prefix)
    }
    fn docs_key(&self, space: DocSpace) -> String {
        format!("{}:docs:{}", self.prefix, space.as_str())
    }
    fn revoked_key(&self, what: &str) -> String {
        format!("{{{}:revoked}}:{what}", self.prefix)
    }

    /// An account key: every one shares the hash tag `{P:accounts}`.
    fn acct_key(&self, what: &str) -> String {
        format!("{{{}:accounts}}:{what}", self.prefix)
    }

    /// Reads account `id`'s record and revision together.
    fn get_account_cmd(&self, id: &str) -> Cmd {
        redis::cmd("EVAL")
            .arg(GET_ACCOUNT_SCRIPT)
            .arg(2)
            .arg(self.acct_key("doc"))
            .arg(self.acct_key("rev"))
            .arg(id)
            .clone()
    }

    /// The seven keys an account write touches, in the scripts' order.
    fn account_keys(&self) -> [String; 7] {
        ["doc", "rev", "host", "version", "log", "ids", "hosts"].map(|k| self.acct_key(k))
    }

    /// At most `limit` members of the lexicographic index `key` (a sorted
    /// set of score 0) after `after`, in order.
    async fn members_after(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let min = match after {
            Some(a) => format!("({a}"),
            None => "-".to_owned(),
        };
        self.query(
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(min)
                .arg("+")
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(limit),
        )
        .await
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let v = match &self.conn {
            Conn::Single(c) => c.clone().req_packed_command(cmd).await,
            Conn::Cluster(c) => c.clone().req_packed_command(cmd).await,
        }
        .map_err(err)?;
        redis::from_redis_value(v).map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
    }

    /// Runs `cmds` and returns the replies of those marked `true`, in order.
    /// Standalone: one pipeline (one round trip). Cluster: the commands touch
    /// many slots, which one pipeline cannot span, so they are sent
    /// concurrently over the multiplexed connection instead.
    async fn many(&self, cmds: Vec<(Cmd, bool)>) -> Result<Vec<Value>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let keep: Vec<bool> = cmds.iter().map(|(_, k)| *k).collect();
        let replies: Vec<Value> = match &self.conn {
            Conn::Single(c) => {
                let mut p = Pipeline::with_capacity(cmds.len());
                for (cmd, _) in cmds {
                    p.add_command(cmd);
                }
                p.query_async(&mut c.clone()).await.map_err(err)?
            }
            Conn::Cluster(c) => {
                let mut set = tokio::task::JoinSet::new();
                let n = cmds.len();
                for (i, (cmd, _)) in cmds.into_iter().enumerate() {
                    let mut conn = c.clone();
                    set.spawn(async move { (i, conn.req_packed_command(&cmd).await) });
                }
                let mut out = vec![Value::Nil; n];
                while let Some(joined) = set.join_next().await {
                    let (i, r) =
                        joined.map_err(|e| StoreError::Unavailable(format!("redis task: {e}")))?;
                    if let Some(slot) = out.get_mut(i) {
                        *slot = r.map_err(err)?;
                    }
                }
                out
            }
        };
        Ok(replies
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(v, _)| v)
            .collect())
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

fn is_ok(v: &Value) -> bool {
    matches!(v, Value::Okay) || matches!(v, Value::SimpleString(s) if s == "OK")
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Store for RedisStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let pong: String = self.query(&redis::cmd("PING")).await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(StoreError::Unavailable(format!(
                    "redis: PING answered {pong}"
                )))
            }
        })
    }

    fn get_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, Option<UserRecord>> {
        Box::pin(async move {
            let key = self.user_key(email);
            let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(&key)).await?;
            v.map(|b| decode_user(&key, &b)).transpose()
        })
    }

    fn get_users<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, Vec<Option<UserRecord>>> {
        Box::pin(async move {
            let vals: Vec<Value> = match &self.conn {
                // One MGET per 1,000 keys: a command per key cost a
                // dispatch each on the server.
                Conn::Single(_) => {
                    let cmds = emails
                        .chunks(1000)
                        .map(|part| {
                            let mut m = redis::cmd("MGET");
                            for e in part {
                                m.arg(self.user_key(e));
                            }
                            (m, true)
                        })
                        .collect();
                    let mut out = Vec::with_capacity(emails.len());
                    for v in self.many(cmds).await? {
                        match v {
                            Value::Array(items) => out.extend(items),
                            other => {
                                return Err(StoreError::Unavailable(format!(
                                    "redis: MGET answered {other:?}"
                                )));
                            }
                        }
                    }
                    out
                }
                // Keys of different slots: one GET each, concurrently.
                Conn::Cluster(_) => {
                    let cmds = emails
                        .iter()
                        .map(|e| (redis::cmd("GET").arg(self.user_key(e)).clone(), true))
                        .collect();
                    self.many(cmds).await?
                }
            };
            if vals.len() != emails.len() {
                return Err(StoreError::Unavailable(format!(
                    "redis: {} values for {} keys",
                    vals.len(),
                    emails.len()
                )));
            }
            vals.iter()
                .zip(emails)
                .map(|(v, e)| {
                    bytes_of(v)
                        .map(|b| decode_user(&self.user_key(e), b))
                        .transpose()
                })
                .collect()
        })
    }

    fn insert_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            // Standalone, several users: first all at once with MSETNX
            // (every key or none), which is what a first import meets;
            // when any exists, one SET NX each as below.
            if matches!(self.conn, Conn::Single(_)) && users.len() > 1 {
                let mut m = redis::cmd("MSETNX");
                for u in users {
                    m.arg(self.user_key(&u.email)).arg(encode_user(u));
                }
                let mut cmds = vec![(m, true)];
                cmds.extend(self.user_writes(users, true).into_iter().skip(users.len()));
                // The index commands are harmless when MSETNX set nothing.
                let vals = self.many(cmds).await?;
                if matches!(vals.first(), Some(Value::Int(1))) {
                    return Ok(vec![true; users.len()]);
                }
            }
            let vals = self.many(self.user_writes(users, true)).await?;
            Ok(vals.iter().map(is_ok).collect())
        })
    }

    fn put_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.many(self.user_writes(users, false)).await.map(|_| ()) })
    }

    fn delete_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let old = self.get_user(email).await?;
            let n: i64 = self
                .query(redis::cmd("DEL").arg(self.user_key(email)))
                .await?;
            let _: i64 = self
                .query(redis::cmd("ZREM").arg(self.index_key()).arg(email))
                .await?;
            if let Some(u) = &old
                && super::indexed(&u.account)
            {
                let _: i64 = self
                    .query(
                        redis::cmd("ZREM")
                            .arg(self.account_index_key(&u.account))
                            .arg(email),
                    )
                    .await?;
            }
            if let Some(UserRecord {
                vanity: Some(name), ..
            }) = old
            {
                self.release_vanity(&name, email).await?;
            }
            Ok(n > 0)
        })
    }

    fn list_users<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<UserRecord>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut cursor = after.map(str::to_owned);
            while out.len() < limit {
                let want = limit - out.len();
                let emails = self
                    .members_after(&self.index_key(), cursor.as_deref(), want)
                    .await?;
                if emails.is_empty() {
                    break;
                }
                cursor = emails.last().cloned();
                let users = self.get_users(&emails).await?;
                out.extend(users.into_iter().flatten());
                if emails.len() < want {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn list_account_users<'a>(
        &'a self,
        account: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<UserRecord>, Option<String>)> {
        Box::pin(async move {
            if !super::indexed(account) {
                // A bounded scan of every user.
                let mut out = Vec::new();
                let mut cursor = after.map(str::to_owned);
                let mut seen = 0usize;
                while out.len() < limit && seen < limit.saturating_mul(super::DEFAULT_SCAN_FACTOR) {
                    let page = self.list_users(cursor.as_deref(), limit).await?;
                    let done = page.len() < limit;
                    seen += page.len();
                    for u in page {
                        cursor = Some(u.email.clone());
                        if u.account == account {
                            out.push(u);
                            if out.len() == limit {
                                return Ok((out, cursor));
                            }
                        }
                    }
                    if done {
                        return Ok((out, None));
                    }
                }
                return Ok((out, cursor));
            }
            let emails = self
                .members_after(&self.account_index_key(account), after, limit)
                .await?;
            let next = (emails.len() == limit)
                .then(|| emails.last().cloned())
                .flatten();
            let users = self.get_users(&emails).await?;
            Ok((
                users
                    .into_iter()
                    .flatten()
                    .filter(|u| u.account == account)
                    .collect(),
                next,
            ))
        })
    }

    fn claim_vanities<'a>(&'a self, claims: &'a [(String, String)]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            // Standalone, several names: all at once with MSETNX when none
            // is taken (a first import), else one SET NX GET each.
            if matches!(self.conn, Conn::Single(_)) && claims.len() > 1 {
                let mut m = redis::cmd("MSETNX");
                for (name, email) in claims {
                    m.arg(self.vanity_key(name)).arg(email);
                }
                let won: i64 = self.query(&m).await?;
                if won == 1 {
                    return Ok(vec![true; claims.len()]);
                }
            }
            let cmds = claims
                .iter()
                .map(|(name, email)| {
                    (
                        redis::cmd("SET")
                            .arg(self.vanity_key(name))
                            .arg(email)
                            .arg("NX")
                            .arg("GET")
                            .clone(),
                        true,
                    )
                })
                .collect();
            let vals = self.many(cmds).await?;
            // SET NX GET returns the old value: nil means we claimed it.
            Ok(vals
                .iter()
                .zip(claims)
                .map(|(v, (_, email))| match v {
                    Value::Nil => true,
                    other => bytes_of(other).is_some_and(|b| b == email.as_bytes()),
                })
                .collect())
        })
    }

    fn release_vanity<'a>(&'a self, name: &'a str, email: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .query(
                    redis::cmd("EVAL")
                        .arg(RELEASE_SCRIPT)
                        .arg(1)
                        .arg(self.vanity_key(name))
                        .arg(email),
                )
                .await?;
            Ok(())
        })
    }

    fn put_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: Value = self
                .query(
                    redis::cmd("SET")
                        .arg(self.eph_key(kind, key))
                        .arg(value)
                        .arg("PX")
                        .arg(ttl_ms(ttl)),
                )
                .await?;
            Ok(())
        })
    }

    fn insert_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let v: Value = self
                .query(
                    redis::cmd("SET")
                        .arg(self.eph_key(kind, key))
                        .arg(value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms(ttl)),
                )
                .await?;
            Ok(is_ok(&v))
        })
    }

    fn get_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.query(redis::cmd("GET").arg(self.eph_key(kind, key)))
                .await
        })
    }

    fn take_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.query(redis::cmd("GETDEL").arg(self.eph_key(kind, key)))
                .await
        })
    }

    fn delete_ephemeral<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .query(redis::cmd("DEL").arg(self.eph_key(kind, key)))
                .await?;
            Ok(())
        })
    }

    fn put_account<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        hosts: &'a [String],
        expect: Expect,
    ) -> StoreFuture<'a, PutAccount> {
        Box::pin(async move {
            let (kind, rev) = match expect {
                Expect::Any => ("any", String::new()),
                Expect::Absent => ("absent", String::new()),
                Expect::Revision(r) => ("rev", r.to_string()),
            };
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(PUT_ACCOUNT_SCRIPT).arg(7);
            for k in self.account_keys() {
                cmd.arg(k);
            }
            cmd.arg(id)
                .arg(record)
                .arg(kind)
                .arg(rev)
                .arg(hosts.join("\n"));
            let v: Vec<Value> = self.query(&cmd).await?;
            let text = |i: usize| -> String {
                v.get(i)
                    .and_then(bytes_of)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            let int = |i: usize| -> u64 {
                match v.get(i) {
                    Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                    _ => 0,
                }
            };
            match text(0).as_str() {
                "ok" => Ok(PutAccount::Written {
                    revision: int(1),
                    created: int(2) == 1,
                }),
                "host_taken" => Ok(PutAccount::HostTaken {
                    host: text(1),
                    owner: text(2),
                }),
                "conflict" => Ok(PutAccount::Conflict {
                    revision: text(1).parse().ok(),
                }),
                other => Err(StoreError::Unavailable(format!(
                    "redis: the account script answered {other:?}"
                ))),
            }
        })
    }

    fn get_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAccount>> {
        Box::pin(async move {
            let v: Vec<Value> = self.query(&self.get_account_cmd(id)).await?;
            Ok(stored_account(v.first(), v.get(1)))
        })
    }

    fn get_accounts<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<StoredAccount>>> {
        Box::pin(async move {
            // Every account key is in one slot: one pipeline on a cluster too.
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                let mut p = Pipeline::with_capacity(chunk.len());
                for id in chunk {
                    p.add_command(self.get_account_cmd(id));
                }
                let replies: Vec<Value> = match &self.conn {
                    Conn::Single(c) => p.query_async(&mut c.clone()).await.map_err(err)?,
                    Conn::Cluster(c) => p.query_async(&mut c.clone()).await.map_err(err)?,
                };
                for v in replies {
                    out.push(match v {
                        Value::Array(pair) => stored_account(pair.first(), pair.get(1)),
                        _ => None,
                    });
                }
            }
            Ok(out)
        })
    }

    fn delete_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(DELETE_ACCOUNT_SCRIPT).arg(9);
            for k in self.account_keys() {
                cmd.arg(k);
            }
            cmd.arg(self.acct_key(&format!("tokens:{id}")))
                .arg(self.acct_key("token"))
                .arg(id);
            let n: i64 = self.query(&cmd).await?;
            Ok(n == 1)
        })
    }

    fn list_accounts<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, StoredAccount)>> {
        Box::pin(async move {
            let ids = self
                .members_after(&self.acct_key("ids"), after, limit)
                .await?;
            let got = self.get_accounts(&ids).await?;
            Ok(ids
                .into_iter()
                .zip(got)
                .filter_map(|(id, a)| a.map(|a| (id, a)))
                .collect())
        })
    }

    fn account_changes(&self, since: u64) -> StoreFuture<'_, AccountChanges> {
        Box::pin(async move {
            let v: Vec<Value> = self
                .query(
                    redis::cmd("EVAL")
                        .arg(ACCOUNT_CHANGES_SCRIPT)
                        .arg(2)
                        .arg(self.acct_key("version"))
                        .arg(self.acct_key("log"))
                        .arg(since),
                )
                .await?;
            let version = match v.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            let changed = match v.get(1) {
                Some(Value::Array(ids)) => ids
                    .iter()
                    .filter_map(bytes_of)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
                _ => Vec::new(),
            };
            Ok(AccountChanges { version, changed })
        })
    }

    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_vec(token).unwrap_or_default();
            let _: i64 = self
                .query(
                    redis::cmd("EVAL")
                        .arg(PUT_TOKEN_SCRIPT)
                        .arg(2)
                        .arg(self.acct_key(&format!("tokens:{}", token.account)))
                        .arg(self.acct_key("token"))
                        .arg(&token.id)
                        .arg(&token.hash)
                        .arg(json),
                )
                .await?;
            Ok(())
        })
    }

    fn token_by_hash<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Box::pin(async move {
            let v: Option<Vec<u8>> = self
                .query(redis::cmd("HGET").arg(self.acct_key("token")).arg(hash))
                .await?;
            Ok(v.and_then(|b| serde_json::from_slice(&b).ok()))
        })
    }

    fn list_tokens<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Vec<TokenRecord>> {
        Box::pin(async move {
            let vals: Vec<Vec<u8>> = self
                .query(redis::cmd("HVALS").arg(self.acct_key(&format!("tokens:{account}"))))
                .await?;
            let mut out: Vec<TokenRecord> = vals
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect();
            out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    fn delete_token<'a>(&'a self, account: &'a str, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self
                .query(
                    redis::cmd("EVAL")
                        .arg(DELETE_TOKEN_SCRIPT)
                        .arg(2)
                        .arg(self.acct_key(&format!("tokens:{account}")))
                        .arg(self.acct_key("token"))
                        .arg(id),
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn add_to_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .query(
                    redis::cmd("EVAL")
                        .arg(SET_ADD_SCRIPT)
                        .arg(1)
                        .arg(self.eph_key(kind, key))
                        .arg(member)
                        .arg(ttl_ms(ttl))
                        .arg(super::SET_MAX),
                )
                .await?;
            Ok(())
        })
    }

    fn set_members<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.query(redis::cmd("SMEMBERS").arg(self.eph_key(kind, key)))
                .await
        })
    }

    fn remove_from_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .query(redis::cmd("SREM").arg(self.eph_key(kind, key)).arg(member))
                .await?;
            Ok(())
        })
    }

    fn log_push<'a>(
        &'a self,
        log: &'a str,
        entries: &'a [Vec<u8>],
        keep: usize,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            let key = self.log_key(log);
            // LPUSH puts each argument at the head in turn: the last
            // (newest) ends first.
            let _: i64 = self
                .query(redis::cmd("LPUSH").arg(&key).arg(entries))
                .await?;
            let _: Value = self
                .query(
                    redis::cmd("LTRIM")
                        .arg(&key)
                        .arg(0)
                        .arg(keep.saturating_sub(1)),
                )
                .await?;
            Ok(())
        })
    }

    fn log_recent<'a>(&'a self, log: &'a str, limit: usize) -> StoreFuture<'a, Vec<Vec<u8>>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            self.query(
                redis::cmd("LRANGE")
                    .arg(self.log_key(log))
                    .arg(0)
                    .arg(limit - 1),
            )
            .await
        })
    }

    fn log_delete<'a>(&'a self, log: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self.query(redis::cmd("DEL").arg(self.log_key(log))).await?;
            Ok(())
        })
    }

    fn get_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.query(redis::cmd("GET").arg(self.doc_key(space, key)))
                .await
        })
    }

    fn put_doc<'a>(
        &'a self,
        space: DocSpace,
        key: &'a str,
        value: &'a [u8],
        only_if_absent: bool,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut set = redis::cmd("SET");
            set.arg(self.doc_key(space, key)).arg(value);
            if only_if_absent {
                set.arg("NX");
            }
            let v: Value = self.query(&set).await?;
            if !is_ok(&v) {
                return Ok(false);
            }
            // The listing index: re-added by every write, so an index entry
            // lost to a failure between the two commands comes back.
            let _: i64 = self
                .query(redis::cmd("ZADD").arg(self.docs_key(space)).arg(0).arg(key))
                .await?;
            Ok(true)
        })
    }

    fn put_docs<'a>(
        &'a self,
        space: DocSpace,
        docs: &'a [(String, Vec<u8>)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if docs.is_empty() {
                return Ok(());
            }
            let mut cmds = Vec::with_capacity(docs.len() + 1);
            for (k, v) in docs {
                let mut set = redis::cmd("SET");
                set.arg(self.doc_key(space, k)).arg(v.as_slice());
                cmds.push((set, false));
            }
            // The listing index (one key): every member in one command.
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(self.docs_key(space));
            for (k, _) in docs {
                zadd.arg(0).arg(k);
            }
            cmds.push((zadd, false));
            self.many(cmds).await.map(|_| ())
        })
    }

    fn delete_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self
                .query(redis::cmd("DEL").arg(self.doc_key(space, key)))
                .await?;
            let _: i64 = self
                .query(redis::cmd("ZREM").arg(self.docs_key(space)).arg(key))
                .await?;
            Ok(n == 1)
        })
    }

    fn list_docs<'a>(
        &'a self,
        space: DocSpace,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            let min = match after {
                Some(a) if a >= prefix => format!("({a}").into_bytes(),
                _ => format!("[{prefix}").into_bytes(),
            };
            // 0xFF never occurs in UTF-8: the end of the prefix's range.
            let mut max = format!("[{prefix}").into_bytes();
            max.push(0xFF);
            let keys: Vec<String> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(self.docs_key(space))
                        .arg(min)
                        .arg(max)
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit),
                )
                .await?;
            let cmds = keys
                .iter()
                .map(|k| {
                    let mut c = redis::cmd("GET");
                    c.arg(self.doc_key(space, k));
                    (c, true)
                })
                .collect();
            let vals = self.many(cmds).await?;
            Ok(keys
                .into_iter()
                .zip(vals)
                .filter_map(|(k, v)| bytes_of(&v).map(|b| (k, b.to_vec())))
                .collect())
        })
    }

    fn revoke_sessions<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(REVOKE_SCRIPT)
                .arg(2)
                .arg(self.revoked_key("seq"))
                .arg(self.revoked_key("log"))
                .arg(REVOCATION_LOG);
            for e in emails {
                cmd.arg(e);
            }
            self.query(&cmd).await
        })
    }

    fn revocations_since(&self, since: Option<u64>) -> StoreFuture<'_, Revocations> {
        Box::pin(async move {
            let v: Vec<Value> = self
                .query(
                    redis::cmd("EVAL")
                        .arg(REVOCATIONS_SCRIPT)
                        .arg(2)
                        .arg(self.revoked_key("seq"))
                        .arg(self.revoked_key("log"))
                        .arg(since.map(|s| s.to_string()).unwrap_or_default()),
                )
                .await?;
            let seq = match v.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            let entries: Vec<(u64, String)> = v
                .iter()
                .skip(1)
                .filter_map(bytes_of)
                .filter_map(|b| {
                    let t = std::str::from_utf8(b).ok()?;
                    let (q, e) = t.split_once(':')?;
                    Some((q.parse().ok()?, e.to_owned()))
                })
                .collect();
            Ok(revocations_after(seq, &entries, since))
        })
    }
}

/// An account's record and revision as two script replies.
fn stored_account(record: Option<&Value>, revision: Option<&Value>) -> Option<StoredAccount> {
    let record = record.and_then(bytes_of)?.to_vec();
    let revision = revision
        .and_then(bytes_of)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())?;
    Some(StoredAccount { record, revision })
}
