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
//! | `P:vanity:{name}` | string | the email owning the vanity name |
//! | `P:session:{id}` | string, TTL | session data |
//! | `P:request:{id}` | string, TTL | outstanding AuthnRequest id → RelayState |
//! | `P:replay:{id}` | string, TTL | assertion id seen, until it expires |
//! | `P:verify:{hash}` | string, TTL | SHA-256 of a verification token → email |
//!
//! A user record and its index entry are written in one pipeline but are not
//! one transaction (they live in different slots); listing skips index
//! entries whose record is gone, and every write re-adds the index entry.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, Value};

use super::{Ephemeral, Store, StoreError, StoreFuture, UserRecord, decode_user, encode_user};

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
    fn user_writes(&self, users: &[UserRecord], only_if_absent: bool) -> Vec<(Cmd, bool)> {
        let mut cmds = Vec::with_capacity(users.len() * 2);
        for u in users {
            let mut set = redis::cmd("SET");
            set.arg(self.user_key(&u.email)).arg(encode_user(u));
            if only_if_absent {
                set.arg("NX");
            }
            cmds.push((set, only_if_absent));
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(self.index_key()).arg(0).arg(&u.email);
            cmds.push((zadd, false));
        }
        cmds
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
        let replies: Vec<Value> = match &self.conn {
            Conn::Single(c) => {
                let mut p = Pipeline::with_capacity(cmds.len());
                for (cmd, _) in &cmds {
                    p.add_command(cmd.clone());
                }
                p.query_async(&mut c.clone()).await.map_err(err)?
            }
            Conn::Cluster(c) => {
                let mut set = tokio::task::JoinSet::new();
                for (i, (cmd, _)) in cmds.iter().enumerate() {
                    let mut conn = c.clone();
                    let cmd = cmd.clone();
                    set.spawn(async move { (i, conn.req_packed_command(&cmd).await) });
                }
                let mut out = vec![Value::Nil; cmds.len()];
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
            .zip(cmds.iter())
            .filter(|(_, (_, keep))| *keep)
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
            let cmds = emails
                .iter()
                .map(|e| (redis::cmd("GET").arg(self.user_key(e)).clone(), true))
                .collect();
            let vals = self.many(cmds).await?;
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
                let min = match &cursor {
                    Some(a) => format!("({a}"),
                    None => "-".to_owned(),
                };
                let want = limit - out.len();
                let emails: Vec<String> = self
                    .query(
                        redis::cmd("ZRANGE")
                            .arg(self.index_key())
                            .arg(&min)
                            .arg("+")
                            .arg("BYLEX")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(want),
                    )
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

    fn claim_vanities<'a>(&'a self, claims: &'a [(String, String)]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
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
}
