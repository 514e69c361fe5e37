//! API keys and per-key rate limits. Keys are kept only as SHA-256 digests and compared
//! in constant time; a rate limit is a token bucket per key (one shared bucket when the
//! server has no keys).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

type Hash = [u8; 32];

#[derive(Default)]
pub struct Auth {
    keys: Vec<Hash>,
    /// Requests per minute per key.
    rate: Option<f64>,
    buckets: Mutex<HashMap<Hash, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

fn digest(key: &str) -> Hash {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal in time that does not depend on where the first difference is.
fn same(a: &Hash, b: &Hash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Accepts `keys` (none: anyone may call) and allows `per_minute` requests per key.
    pub fn new(keys: &[String], per_minute: Option<u32>) -> Self {
        Self {
            keys: keys.iter().map(|k| digest(k)).collect(),
            rate: per_minute.map(f64::from),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks an `Authorization` header value and takes one request from its key's bucket.
    pub fn check(&self, header: Option<&str>) -> ApiResult<()> {
        let who = if self.required() {
            let Some(h) = header else {
                return Err(ApiError::unauthorized(
                    "no API key: send the header `Authorization: Bearer <key>`",
                ));
            };
            let key = h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .ok_or_else(|| {
                    ApiError::unauthorized("the Authorization header must be `Bearer <key>`")
                })?
                .trim();
            let d = digest(key);
            // look at every key, so the time taken does not tell which one matched
            let known = self.keys.iter().fold(false, |acc, k| acc | same(k, &d));
            if !known {
                return Err(ApiError::unauthorized("the API key is not valid"));
            }
            d
        } else {
            [0; 32]
        };
        self.take(who)
    }

    fn take(&self, who: Hash) -> ApiResult<()> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let b = buckets.entry(who).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate / 60.0).min(rate);
        b.at = now;
        if b.tokens < 1.0 {
            let wait = (1.0 - b.tokens) * 60.0 / rate;
            return Err(ApiError::rate_limited(format!(
                "rate limit of {rate} requests per minute reached; retry in {wait:.1} s"
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_rate_limited() {
        let a = Auth::new(&["k1".into(), "k2".into()], Some(2));
        assert_eq!(a.check(None).unwrap_err().status.as_u16(), 401);
        assert_eq!(
            a.check(Some("Bearer nope")).unwrap_err().status.as_u16(),
            401
        );
        assert_eq!(a.check(Some("k1")).unwrap_err().status.as_u16(), 401);
        a.check(Some("Bearer k1")).unwrap();
        a.check(Some("Bearer k1")).unwrap();
        assert_eq!(a.check(Some("Bearer k1")).unwrap_err().status.as_u16(), 429);
        // another key has its own bucket
        a.check(Some("Bearer k2")).unwrap();
        let open = Auth::new(&[], None);
        assert!(!open.required());
        open.check(None).unwrap();
    }
}
