//! The shop gateway's admin API (`/admin/pool`): its pools of replicas, their readiness and
//! the catalog's primary; and the catalog replicas' own admin calls the healer makes around
//! it (promote, rejoin, fence), so a failover is one vocabulary from end to end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Role, ServiceKind};

/// A replica as `GET /admin/pool` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMember {
    pub instance: String,
    /// Its base URL (`http://host:port`), without a trailing slash.
    pub url: String,
    /// Passing its readiness checks.
    pub ready: bool,
    /// Skipped for a few seconds after a failed request.
    #[serde(default)]
    pub ejected: bool,
    /// Requests in flight to it.
    #[serde(default)]
    pub outstanding: usize,
}

impl PoolMember {
    /// The member as a pool change names it.
    pub fn spec(&self) -> MemberSpec {
        MemberSpec { instance: self.instance.clone(), url: self.url.clone() }
    }
}

/// One service's pool as `GET /admin/pool` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub members: Vec<PoolMember>,
    /// The catalog's primary, which takes the writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The epoch of that primary (catalog only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl PoolView {
    /// The primary's member, if the pool has one and it is a member.
    pub fn primary_member(&self) -> Option<&PoolMember> {
        let primary = self.primary.as_deref()?;
        self.members.iter().find(|m| m.instance == primary)
    }
}

/// The gateway's `GET /admin/pool` (and its answer to a pool change): every pool by service.
pub type Pools = BTreeMap<ServiceKind, PoolView>;

/// A member as `PUT /admin/pool/{service}` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub instance: String,
    pub url: String,
}

/// The body of `PUT /admin/pool/{service}`: what is absent stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolUpdate {
    /// The whole new member list; members that stay keep their state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberSpec>>,
    /// The catalog's new primary (a member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The gateway's `/readyz` detail when it is ready: ready replicas by service, and whether
/// the catalog primary (writes) is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReadiness {
    pub ready_replicas: BTreeMap<String, usize>,
    pub catalog_primary: PrimaryReadiness,
}

/// `catalog_primary` of [`GatewayReadiness`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryReadiness {
    pub instance: Option<String>,
    pub ready: bool,
}

/// What a ready catalog replica's `/readyz` says of its role: the gateway follows the
/// primary of the highest epoch, and fences one that still claims an older epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogReadiness {
    pub role: Role,
    pub epoch: u64,
    /// The last change it holds.
    #[serde(default)]
    pub seq: u64,
}

/// The body of a catalog replica's `POST /admin/promote` (optional there) and
/// `POST /admin/fence`: the epoch to promote to at least, or to learn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRequest {
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// `GET /admin/replication`: where a replica stands in its replication group — the
/// failover protocol's status call (ARCHITECTURE.md). `role`, `epoch` and `last_seq` are
/// what the healer needs of any service that speaks the protocol; the rest is the
/// catalog's. Fields in the order the catalog has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// False from a rejoin until the standby has caught up with its new primary.
    #[serde(default)]
    pub caught_up: bool,
    pub epoch: u64,
    /// The primary a standby follows (`null` unless a standby).
    #[serde(default)]
    pub following: Option<String>,
    #[serde(default)]
    pub instance: String,
    /// Changes the primary has that this standby has not applied.
    #[serde(default)]
    pub lag_changes: u64,
    #[serde(default)]
    pub last_seq: u64,
    pub role: Role,
    /// A standby: whether its primary counted it in its sync set at their last contact —
    /// then every write the primary acknowledged is here too. `None`: the service does not
    /// say (a failover may promote it as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<bool>,
    /// The sync set this standby was in (a standby), or the primary's own set now: a
    /// release moves it on, so a standby released while away is seen to be behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_stamp: Option<SyncStamp>,
    /// A primary: writes wait for a sync standby that does not confirm them, and are
    /// refused; the failover authority may release the standby (`POST /admin/release`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_blocked: bool,
}

/// One sync set of a primary: the epoch it leads under, and how many times under that
/// epoch its standby was released. Ordered: a later set is greater.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SyncStamp {
    pub epoch: u64,
    pub generation: u64,
}

/// `POST /admin/release`: the failover authority takes the standby out of the primary's
/// sync set of `stamp` (compare and set: a set that moved on is not released again), so
/// the primary acknowledges writes alone; the authority promotes that standby no more
/// until it is back in a later set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub stamp: SyncStamp,
}

/// A catalog replica's answer to `POST /admin/promote`. Fields in the order the catalog
/// has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The epoch it now leads under; the gateway sends it with every write.
    pub epoch: u64,
    /// The last change it holds.
    #[serde(default)]
    pub last_seq: u64,
    pub role: Role,
}

/// A catalog replica's answer to `POST /admin/fence`: its role and epoch after learning
/// the epoch sent (a primary of an older one is now fenced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fenced {
    pub epoch: u64,
    pub role: Role,
}

/// The body of a catalog replica's `POST /admin/rejoin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejoinRequest {
    /// The new primary's base URL.
    pub primary: String,
    /// Its epoch.
    pub epoch: u64,
}

/// A catalog replica's answer to `POST /admin/rejoin`. Fields in the order the catalog
/// has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejoined {
    pub epoch: u64,
    /// The primary it follows now.
    pub following: String,
    /// The last change of the log it shares with that primary, which it kept.
    pub kept_through_seq: u64,
    pub role: Role,
    /// Changes only it had, set aside in `diverged_changes`.
    pub set_aside: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    fn member(instance: &str, ready: bool) -> PoolMember {
        PoolMember {
            instance: instance.into(),
            url: format!("http://127.0.0.1:80{}", instance.len()),
            ready,
            ejected: false,
            outstanding: 0,
        }
    }

    #[test]
    fn pools_round_trip_and_parse_as_the_gateway_writes_them() {
        let pools: Pools = [
            (
                ServiceKind::Catalog,
                PoolView {
                    members: vec![member("catalog-1", false), member("catalog-2", true)],
                    primary: Some("catalog-2".into()),
                    epoch: Some(2),
                },
            ),
            (ServiceKind::Search, PoolView { members: vec![member("search-1", true)], primary: None, epoch: None }),
        ]
        .into();
        round_trip(&pools);
        let served = r#"{"catalog":{"members":[{"instance":"catalog-1","url":"http://127.0.0.1:809","ready":false,
            "ejected":false,"outstanding":0},{"instance":"catalog-2","url":"http://127.0.0.1:809","ready":true,
            "ejected":false,"outstanding":0}],"primary":"catalog-2","epoch":2},"search":{"members":[{"instance":
            "search-1","url":"http://127.0.0.1:808","ready":true,"ejected":false,"outstanding":0}]}}"#;
        let parsed: Pools = serde_json::from_str(served).expect("pools");
        assert_eq!(parsed, pools);
        let text = serde_json::to_string(&parsed).expect("json");
        assert_eq!(text, served.split_whitespace().collect::<String>(), "the same JSON, keys in the same order");
        let catalog = &parsed[&ServiceKind::Catalog];
        assert_eq!(catalog.primary_member().map(|m| m.ready), Some(true));
        assert_eq!(parsed[&ServiceKind::Search].primary_member(), None);
    }

    #[test]
    fn a_pool_update_says_only_what_changes() {
        let members = PoolUpdate { members: Some(vec![member("search-1", true).spec()]), ..PoolUpdate::default() };
        round_trip(&members);
        assert_eq!(
            serde_json::to_string(&members).expect("json"),
            r#"{"members":[{"instance":"search-1","url":"http://127.0.0.1:808"}]}"#
        );
        let primary = PoolUpdate { primary: Some("catalog-2".into()), epoch: Some(3), members: None };
        assert_eq!(serde_json::to_string(&primary).expect("json"), r#"{"primary":"catalog-2","epoch":3}"#);
        assert!(serde_json::from_str::<PoolUpdate>(r#"{"primary":"x","weight":2}"#).is_err(), "unknown fields");
        assert_eq!(serde_json::from_str::<PoolUpdate>("{}").expect("nothing changes"), PoolUpdate::default());
    }

    #[test]
    fn replica_admin_bodies_round_trip_and_parse_as_the_catalog_writes_them() {
        let served = r#"{"epoch":3,"last_seq":41,"role":"primary"}"#;
        let promoted: Promoted = serde_json::from_str(served).expect("promoted");
        assert_eq!(promoted, Promoted { role: Role::Primary, epoch: 3, last_seq: 41 });
        round_trip(&promoted);
        assert_eq!(serde_json::to_string(&promoted).expect("json"), served);
        let served = r#"{"epoch":4,"role":"fenced"}"#;
        let fenced: Fenced = serde_json::from_str(served).expect("fenced");
        assert_eq!(fenced, Fenced { epoch: 4, role: Role::Fenced });
        round_trip(&fenced);
        assert_eq!(serde_json::to_string(&fenced).expect("json"), served);
        let served =
            r#"{"epoch":3,"following":"http://127.0.0.1:8082","kept_through_seq":40,"role":"standby","set_aside":1}"#;
        let rejoined: Rejoined = serde_json::from_str(served).expect("rejoined");
        assert_eq!((rejoined.kept_through_seq, rejoined.set_aside), (40, 1));
        assert_eq!(serde_json::to_string(&rejoined).expect("json"), served);
        let request = RejoinRequest { primary: "http://127.0.0.1:8082".into(), epoch: 3 };
        round_trip(&request);
        assert_eq!(serde_json::to_string(&request).expect("json"), r#"{"primary":"http://127.0.0.1:8082","epoch":3}"#);
        round_trip(&EpochRequest { epoch: Some(3) });
        assert_eq!(serde_json::from_str::<EpochRequest>("{}").expect("empty"), EpochRequest::default());
        let ready: CatalogReadiness =
            serde_json::from_str(r#"{"role":"primary","epoch":2,"seq":9,"status":"ready","instance":"catalog-1"}"#)
                .expect("readiness");
        assert_eq!(ready, CatalogReadiness { role: Role::Primary, epoch: 2, seq: 9 });
        round_trip(&ready);
    }

    #[test]
    fn the_gateway_readiness_round_trips() {
        let ready = GatewayReadiness {
            ready_replicas: [("catalog".to_string(), 2)].into(),
            catalog_primary: PrimaryReadiness { instance: Some("catalog-1".into()), ready: true },
        };
        round_trip(&ready);
        assert_eq!(
            serde_json::to_string(&ready).expect("json"),
            r#"{"ready_replicas":{"catalog":2},"catalog_primary":{"instance":"catalog-1","ready":true}}"#
        );
    }
}
