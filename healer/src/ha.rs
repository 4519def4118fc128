//! Leader election for two or more healers sharing one etcd (`--etcd`).
//!
//! Each healer holds an etcd lease and tries to create the leader key under it with a
//! transaction that succeeds only while the key does not exist; whoever created it leads
//! until its lease ends. The lease is kept alive every `ttl / 6`; a leader that has not
//! renewed it for two thirds of the TTL steps down by itself *before* etcd can expire the
//! key and let another healer win, so two healers never believe they lead at once. Every
//! write a leader makes to the shared state is also guarded by the leader key's value (see
//! `state`), so a deposed leader's late write fails instead of landing.
//!
//! The value of the leader key says who leads and where its API is, so a follower can send
//! a human to the leader.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

/// Who a healer is, as written in the leader key and shown in `/api/v1/state`.
pub use hale_core::api::HealerMember as Member;

/// This healer's view of the election.
pub struct Leadership {
    pub me: Member,
    me_json: String,
    key: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    /// The leader as last read (this healer or another); `None` while nobody leads.
    leader: Mutex<Option<Member>>,
}

impl Leadership {
    pub fn new(prefix: &str, api: String, ttl: Duration) -> Leadership {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id = format!("{}-{}-{}", host.trim(), std::process::id(), hex::encode(rand::random::<[u8; 4]>()));
        let me = Member { id, api };
        let me_json = serde_json::to_string(&me).unwrap_or_default();
        Leadership {
            me,
            me_json,
            key: format!("{}/leader", prefix.trim_end_matches('/')),
            ttl,
            leading: watch::channel(false).0,
            leader: Mutex::new(None),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub fn leader(&self) -> Option<Member> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The leader key's value while this healer leads (what guarded writes compare).
    pub fn my_value(&self) -> &str {
        &self.me_json
    }

    fn set(&self, leading: bool, leader: Option<Member>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
        if *self.leading.borrow() != leading {
            tracing::info!(id = %self.me.id, leading, "healer leadership changed");
            self.leading.send_replace(leading);
        }
    }

    /// Campaigns until `shutdown` resolves, then gives the lead up at once (revokes the
    /// lease) so another healer need not wait for the TTL.
    pub async fn campaign(&self, client: Client, shutdown: impl std::future::Future<Output = ()>) {
        let mut held_lease = None;
        tokio::select! {
            _ = self.campaign_forever(client.clone(), &mut held_lease) => {}
            _ = shutdown => {}
        }
        self.set(false, None);
        if let Some(lease) = held_lease {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.clone().lease_revoke(lease)).await;
        }
    }

    async fn campaign_forever(&self, client: Client, held: &mut Option<i64>) {
        let ttl_s = self.ttl.as_secs().max(2) as i64;
        let tick = self.ttl / 6;
        // No renewal for this long: step down before the lease can expire in etcd.
        let give_up = self.ttl * 2 / 3;
        loop {
            let lease = match with_timeout(tick * 2, client.clone().lease_grant(ttl_s, None)).await {
                Ok(l) => l.id(),
                Err(e) => {
                    tracing::warn!(error = %e, "healer election: cannot get an etcd lease; retrying");
                    self.set(false, None);
                    tokio::time::sleep(tick).await;
                    continue;
                }
            };
            *held = Some(lease);
            let mut kept = Instant::now();
            let mut keeper = None;
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if keeper.is_none() {
                    keeper = with_timeout(tick, client.clone().lease_keep_alive(lease)).await.ok();
                }
                if let Some((k, stream)) = keeper.as_mut() {
                    let renewed = tokio::time::timeout(tick, async {
                        k.keep_alive().await?;
                        stream.message().await
                    })
                    .await;
                    match renewed {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => kept = Instant::now(),
                        Ok(Ok(Some(_))) => {
                            tracing::warn!("healer election: the lease expired in etcd");
                            break;
                        }
                        _ => keeper = None, // reopen the stream on the next tick
                    }
                }
                if kept.elapsed() >= give_up {
                    tracing::warn!("healer election: lease not renewed in time; stepping down");
                    break;
                }
                match self.try_lead(&client, lease, tick).await {
                    Ok(leader) => {
                        let leading = leader.as_ref() == Some(&self.me);
                        self.set(leading, leader);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "healer election: etcd unreachable");
                        if kept.elapsed() >= give_up {
                            break;
                        }
                    }
                }
            }
            self.set(false, None);
            *held = None;
            let _ = with_timeout(tick, client.clone().lease_revoke(lease)).await;
        }
    }

    /// One round: create the leader key if nobody holds it; either way, who leads now.
    async fn try_lead(&self, client: &Client, lease: i64, wait: Duration) -> Result<Option<Member>, EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), self.me_json.clone(), Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let resp = with_timeout(wait, client.clone().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Some(self.me.clone()));
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                return Ok(get.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok()));
            }
        }
        Ok(None)
    }
}

/// Why a call to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Call(#[from] etcd_client::Error),
    /// A partitioned etcd may never answer: every call is bounded.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// An etcd call bounded in time.
pub async fn with_timeout<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(EtcdError::Timeout(limit)),
    }
}
