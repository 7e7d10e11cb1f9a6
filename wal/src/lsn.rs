//! Positions and identities in the log: [`Lsn`] and [`Epoch`].
//!
//! Both are plain `u64` newtypes so that an LSN cannot be passed where an epoch is expected (and
//! vice versa); they serialize as bare numbers. `Lsn(u64::MAX)` is reserved and never assigned,
//! which keeps "the LSN after the last one" representable without overflow checks everywhere.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Log sequence number: the position of an entry in the WAL. Consecutive entries have
/// consecutive LSNs (see `docs/0001-wal-format.md`, section 6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The reserved LSN that is never assigned to an entry.
    pub const RESERVED: Lsn = Lsn(u64::MAX);

    /// Returns the LSN after this one, or `None` if that would be the reserved [`Lsn::RESERVED`].
    pub const fn checked_next(self) -> Option<Lsn> {
        if self.0 >= u64::MAX - 1 {
            None
        } else {
            Some(Lsn(self.0 + 1))
        }
    }

    /// Returns the LSN after this one, saturating at [`Lsn::RESERVED`].
    pub(crate) const fn saturating_next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

/// Writer epoch an entry was written under. The WAL stores it and never interprets it; the
/// catalog's `promote` records give it meaning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Epoch {
    fn from(value: u64) -> Self {
        Epoch(value)
    }
}

impl From<Epoch> for u64 {
    fn from(epoch: Epoch) -> Self {
        epoch.0
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::Error as ValueError;

    use super::*;

    #[test]
    fn test_should_never_step_onto_the_reserved_lsn() {
        assert_eq!(Lsn(1).checked_next(), Some(Lsn(2)));
        assert_eq!(Lsn(u64::MAX - 2).checked_next(), Some(Lsn(u64::MAX - 1)));
        assert_eq!(Lsn(u64::MAX - 1).checked_next(), None);
        assert_eq!(Lsn::RESERVED.checked_next(), None);
        assert_eq!(Lsn::RESERVED.saturating_next(), Lsn::RESERVED);
    }

    #[test]
    fn test_should_display_and_deserialize_as_bare_numbers() {
        assert_eq!(Lsn(42).to_string(), "42");
        assert_eq!(Epoch(7).to_string(), "7");
        let lsn = Lsn::deserialize(IntoDeserializer::<ValueError>::into_deserializer(9u64));
        assert_eq!(lsn, Ok(Lsn(9)));
        let epoch = Epoch::deserialize(IntoDeserializer::<ValueError>::into_deserializer(3u64));
        assert_eq!(epoch, Ok(Epoch(3)));
        assert!(Lsn(1) < Lsn(2));
    }
}
