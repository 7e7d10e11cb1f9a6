//! Admission of write bodies: one budget of bytes for every body being read, inflated and
//! decoded at once.
//!
//! Each request is capped (`server.max_payload_size`, before and after decompression), but
//! concurrency was not: eight small zstd bodies inflating to a gigabyte each took the node's
//! memory together. A request reserves its body's bytes as it is read (before each growth of
//! its buffer, so bodies refused are discarded as they arrive) and the inflated
//! bytes as decompression allocates them (by buffer capacity, so growth is paid before it
//! happens), then its decoded rows as the builders make them (see `builder`: a line of a few
//! bytes can decode to a hundred), and holds them until its rows are in the WAL. Past the budget it gets 503 with
//! `Retry-After` instead of waiting: a client retrying later is cheaper than a queue of bodies
//! in memory. A body that alone needs more than the whole budget can never fit: 413.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::IngestError;

/// Bytes per permit: coarse enough that reserving costs little, fine enough to waste little.
const UNIT: usize = 64 * 1024;

/// The node's budget of in-flight write bytes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InflightBudget {
    permits: Arc<Semaphore>,
    units: usize,
}

/// Bytes one request holds of the budget; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: InflightBudget,
    permit: Option<OwnedSemaphorePermit>,
    units: usize,
}

impl InflightBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Self {
        let units = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
            units,
        }
    }

    /// An empty reservation for a new request, grown as its body is read and inflated.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
            units: 0,
        }
    }

    /// Reserves `bytes` for a new request.
    ///
    /// # Errors
    /// See [`Reservation::grow_to`].
    #[cfg(test)]
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, IngestError> {
        let mut reservation = self.reservation();
        reservation.grow_to(bytes)?;
        Ok(reservation)
    }

    /// Bytes not reserved by anyone now.
    #[cfg(test)]
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits().saturating_mul(UNIT)
    }
}

impl Reservation {
    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.units.saturating_mul(UNIT)
    }

    /// Makes the reservation cover `bytes` in all (it never shrinks).
    ///
    /// # Errors
    /// [`IngestError::TooLarge`] when `bytes` exceed the whole budget (it can never fit);
    /// [`IngestError::Busy`] when other requests hold too much of it now.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), IngestError> {
        let needed = bytes.div_ceil(UNIT);
        if needed <= self.units {
            return Ok(());
        }
        if needed > self.budget.units {
            return Err(IngestError::TooLarge {
                limit: self.budget.units.saturating_mul(UNIT),
            });
        }
        let more = u32::try_from(needed - self.units).map_err(|_| IngestError::TooLarge {
            limit: self.budget.units.saturating_mul(UNIT),
        })?;
        let granted = self
            .budget
            .permits
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| {
                IngestError::Busy(format!(
                    "the node is decoding other writes (ingest.max_inflight_bytes, {} bytes, in use); retry shortly",
                    self.budget.units.saturating_mul(UNIT)
                ))
            })?;
        match &mut self.permit {
            Some(held) => held.merge(granted),
            None => self.permit = Some(granted),
        }
        self.units = needed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_admit_within_the_budget_and_refuse_past_it() {
        let budget = InflightBudget::new(1 << 20);
        let mut first = budget.reserve(600 * 1024).unwrap();
        assert!(matches!(
            budget.reserve(600 * 1024),
            Err(IngestError::Busy(_))
        ));
        let mut second = budget.reserve(300 * 1024).unwrap();
        // Growth is paid for as it happens, and refused when the budget is gone.
        assert!(matches!(
            first.grow_to(900 * 1024),
            Err(IngestError::Busy(_))
        ));
        second.grow_to(360 * 1024).unwrap();
        // More than the whole budget can never fit.
        assert!(matches!(
            first.grow_to(2 << 20),
            Err(IngestError::TooLarge { .. })
        ));
        drop(first);
        drop(second);
        assert_eq!(budget.available_bytes(), 1 << 20);
        budget.reserve(1 << 20).unwrap();
    }
}
