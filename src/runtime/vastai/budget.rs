//! What this agent's Vast.ai instances cost and may cost: the dollars per hour of the
//! instances it holds plus the offers being ordered right now, against
//! `vast_api/max_dph_total`. An offer's price is reserved before it is ordered and released
//! once the instance counts as held (or the order failed), so two kernels ordered together
//! cannot both pass the total. A rental in progress is also known by its label's token, so
//! the poll loop does not take its instance (not recorded in any kernel yet) for a leak.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::{Seen, VastRuntime};
use crate::runtime::RuntimeError;

/// A rental in progress ([`VastRuntime::start_renting`]); dropping it ends it, its
/// reservation included, also when the provisioning future is dropped.
pub(super) struct Renting {
    map: Arc<Mutex<HashMap<String, f64>>>,
    token: String,
}

impl Drop for Renting {
    fn drop(&mut self) {
        self.map.lock().remove(&self.token);
    }
}

impl VastRuntime {
    fn renting(&self) -> MutexGuard<'_, HashMap<String, f64>> {
        self.renting.lock()
    }

    /// Dollars per hour of the instances this agent holds and of the offers being rented
    /// now.
    pub(super) fn committed_dph(&self) -> f64 {
        // Lock order: `renting`, then `seen`.
        let renting = self.renting();
        Self::committed(&renting, &self.seen())
    }

    fn committed(renting: &HashMap<String, f64>, seen: &HashMap<u64, Seen>) -> f64 {
        let held: f64 = seen
            .values()
            .filter(|s| s.ended.is_none() && s.destroyed.is_none())
            .map(|s| s.dph)
            .sum();
        held + renting.values().sum::<f64>()
    }

    /// A rental starting for the kernel whose label carries `token`: its instances are not
    /// leaks while the guard lives (their handle is not recorded yet).
    pub(super) fn start_renting(&self, token: &str) -> Renting {
        self.renting().insert(token.to_string(), 0.0);
        Renting {
            map: self.renting.clone(),
            token: token.to_string(),
        }
    }

    /// Reserves `dph` in the committed total for the rental of `token`, unless that would
    /// pass `max_dph_total` (RESOURCE_EXHAUSTED naming it). Checked and reserved at once, so
    /// two kernels ordered together cannot both pass the budget.
    pub(super) fn reserve(
        &self,
        token: &str,
        dph: f64,
        max_total: Option<f64>,
    ) -> Result<(), RuntimeError> {
        let mut renting = self.renting();
        renting.insert(token.to_string(), 0.0);
        let committed = Self::committed(&renting, &self.seen());
        if let Some(total) = max_total {
            if committed + dph > total + 1e-9 {
                return Err(RuntimeError::Exhausted(format!(
                    "vast_api/max_dph_total: ${committed:.3}/h of ${total:.3}/h is in use or being rented; the next offer costs ${dph:.3}/h"
                )));
            }
        }
        renting.insert(token.to_string(), dph);
        Ok(())
    }

    /// The reservation of `token`'s rental ends: the instance is tracked (counted as held)
    /// or the rental failed.
    pub(super) fn unreserve(&self, token: &str) {
        if let Some(dph) = self.renting().get_mut(token) {
            *dph = 0.0;
        }
    }

    /// The tokens of rentals in progress.
    pub(super) fn renting_tokens(&self) -> BTreeSet<String> {
        self.renting().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::runtime::RuntimeError;
    use std::sync::Arc;
    use tokio::sync::watch as tokio_watch;

    #[test]
    fn two_rentals_together_cannot_pass_max_dph_total() {
        let (_tx, rx) = tokio_watch::channel(Arc::new(ClusterConfig::default()));
        let dir = tempfile::tempdir().unwrap();
        let rt = VastRuntime::new(rx, "ns", "a1", dir.path());
        let first = rt.start_renting("tok1");
        let second = rt.start_renting("tok2");
        rt.reserve("tok1", 2.0, Some(3.0)).unwrap();
        // The first order is not answered yet: its price already counts.
        let err = rt.reserve("tok2", 2.0, Some(3.0)).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Exhausted(m) if m.contains("vast_api/max_dph_total")),
            "{err}"
        );
        // Rented: counted as held, no longer as reserved.
        rt.track(7, "k1", 2.0);
        rt.unreserve("tok1");
        assert!((rt.committed_dph() - 2.0).abs() < 1e-9);
        assert_eq!(
            rt.renting_tokens(),
            BTreeSet::from(["tok1".to_string(), "tok2".to_string()])
        );
        // The rental that failed frees its reservation when it ends.
        drop(second);
        drop(first);
        assert!(rt.renting_tokens().is_empty());
        rt.reserve("tok3", 1.0, Some(3.0)).unwrap();
    }
}
