//! Live streams held open at once: at most `API_MAX_STREAMS_PER_KEY` per credential and
//! `API_MAX_STREAMS` in all, so one key cannot hold the api's connections and memory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

pub struct StreamLimits {
    total: Arc<Semaphore>,
    per_key: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream; dropping it (the stream ended or its client went away) frees its place.
pub struct StreamSlot {
    limits: Arc<StreamLimits>,
    key: String,
    _total: OwnedSemaphorePermit,
}

impl StreamLimits {
    pub fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total)),
            per_key,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more stream of the credential `key`, or why there is none.
    pub fn open(self: &Arc<Self>, key: String) -> Result<StreamSlot, ApiError> {
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            ApiError::Unavailable("the api holds as many live streams as it may (API_MAX_STREAMS); retry later".into())
        })?;
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_default();
        if *count >= self.per_key {
            return Err(ApiError::TooMany(format!(
                "this credential already holds {} live streams (API_MAX_STREAMS_PER_KEY); close one first",
                self.per_key
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            key,
            _total: total,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_key_and_in_all_and_freed_on_drop() {
        let limits = StreamLimits::new(3, 2);
        let a1 = limits.open("a".into()).unwrap();
        let _a2 = limits.open("a".into()).unwrap();
        assert!(matches!(limits.open("a".into()), Err(ApiError::TooMany(_))));
        let _b1 = limits.open("b".into()).unwrap();
        assert!(matches!(limits.open("c".into()), Err(ApiError::Unavailable(_))));
        drop(a1);
        let _a3 = limits.open("a".into()).unwrap();
        assert_eq!(limits.open.lock().unwrap()["a"], 2);
    }
}
