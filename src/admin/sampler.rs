//! The memory of the operator page's charts: a bounded ring buffer of
//! samples (one per 10 s, 360 of them: the last hour), oldest first.
//!
//! A sample is a whole [`Reading`] of cumulative counters plus what is
//! asked of the application itself (fetches in flight, a store ping); the
//! charts plot the differences between neighbouring samples. Memory is
//! bounded: a reading holds a few numbers per widget.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::reading::Reading;
use crate::clock::Millis;

/// Everything read at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When (Unix ms, the system clock).
    pub at_ms: Millis,
    /// The recorder's cumulative counters.
    pub reading: Reading,
    /// This application's upstream fetches in flight.
    pub fetches_in_flight: usize,
    /// This application's open dashboards (live connections).
    pub open_pages: usize,
    /// The store's kind, as `/readyz` names it.
    pub store_kind: &'static str,
    /// Why the store's ping failed; `None`: it answered.
    pub store_error: Option<String>,
}

/// A ring buffer of the last `capacity` samples.
pub struct Sampler {
    capacity: usize,
    samples: Mutex<VecDeque<Arc<Sample>>>,
}

impl Sampler {
    /// An empty buffer keeping at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(Arc::new(sample));
    }

    /// The samples kept, oldest first (a copy of the handles: the lock is
    /// held only for that).
    pub fn window(&self) -> Vec<Arc<Sample>> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().cloned().collect()
    }

    /// How many samples are kept now.
    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no sample has been taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: Millis) -> Sample {
        Sample {
            at_ms: ms,
            reading: Reading::default(),
            fetches_in_flight: 0,
            open_pages: 0,
            store_kind: "memory",
            store_error: None,
        }
    }

    #[test]
    fn keeps_the_last_samples_oldest_first() {
        let sampler = Sampler::new(3);
        assert!(sampler.is_empty());
        for ms in 1..=5 {
            sampler.push(at(ms));
        }
        let kept: Vec<Millis> = sampler.window().iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(sampler.len(), 3);
    }
}
