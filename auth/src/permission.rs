//! Permissions and the one rule that relates them.
//!
//! COMPAT.md: `read`, `write`, `delete`, `admin`; admin satisfies every check and nothing else
//! implies anything (a `write` token cannot read, a `delete` token cannot write). The rule lives
//! in [`grants`] alone so the HTTP layer, the token API and the binary's route table cannot
//! disagree about it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One thing a token may be allowed to do. Serialized as a lowercase string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Query data (`/api/v1/query...`).
    Read,
    /// Ingest data (every write endpoint).
    Write,
    /// Delete data.
    Delete,
    /// Everything, including token management, flush and the cluster API.
    Admin,
}

impl Permission {
    /// Every permission, in declaration order.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Admin,
    ];

    /// Returns the wire name (`"read"`, `"write"`, `"delete"`, `"admin"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A permission name that is not one of `read`, `write`, `delete`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?} (expected read, write, delete or admin)")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    /// Parses a wire name. Exact and lowercase, like the serde form, so a stored record and a
    /// request body accept the same spellings.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|permission| permission.as_str() == name)
            .ok_or_else(|| UnknownPermission(name.to_string()))
    }
}

/// Returns whether a token holding `held` may do what needs `needed`: it holds `needed` itself
/// or holds `admin`. No other permission implies another.
pub fn grants(held: &[Permission], needed: Permission) -> bool {
    held.iter()
        .any(|permission| *permission == needed || *permission == Permission::Admin)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_permission() -> impl Strategy<Value = Permission> {
        prop::sample::select(Permission::ALL.to_vec())
    }

    #[test]
    fn test_should_let_admin_satisfy_every_permission() {
        for needed in Permission::ALL {
            assert!(
                grants(&[Permission::Admin], needed),
                "admin must grant {needed}"
            );
        }
    }

    #[test]
    fn test_should_not_imply_anything_from_non_admin_permissions() {
        for held in [Permission::Read, Permission::Write, Permission::Delete] {
            for needed in Permission::ALL {
                assert_eq!(
                    grants(&[held], needed),
                    held == needed,
                    "{held} vs {needed}"
                );
            }
        }
        assert!(!grants(&[], Permission::Read));
    }

    #[test]
    fn test_should_round_trip_wire_names() {
        for permission in Permission::ALL {
            let json = serde_json::to_string(&permission).expect("serializes");
            assert_eq!(json, format!("\"{}\"", permission.as_str()));
            let parsed: Permission = serde_json::from_str(&json).expect("parses");
            assert_eq!(parsed, permission);
            assert_eq!(permission.as_str().parse::<Permission>(), Ok(permission));
        }
        assert!("Admin".parse::<Permission>().is_err());
        assert!("".parse::<Permission>().is_err());
        assert!(serde_json::from_str::<Permission>("\"owner\"").is_err());
    }

    proptest! {
        #[test]
        fn test_should_grant_exactly_when_held_or_admin(
            held in prop::collection::vec(any_permission(), 0..6),
            needed in any_permission(),
        ) {
            let expected = held.contains(&needed) || held.contains(&Permission::Admin);
            prop_assert_eq!(grants(&held, needed), expected);
        }

        #[test]
        fn test_should_grant_monotonically(
            held in prop::collection::vec(any_permission(), 0..6),
            extra in any_permission(),
            needed in any_permission(),
        ) {
            // Adding a permission never takes anything away.
            let mut more = held.clone();
            more.push(extra);
            prop_assert!(!grants(&held, needed) || grants(&more, needed));
        }
    }
}
