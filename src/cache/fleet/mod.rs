//! What the instances of a fleet share besides the entries (SPEC §7): the
//! change feed and its per-user (sharded) variant on a cluster, the waiters
//! it wakes, the fetch lease's waiting side, and the `allUsers` generations.
//!
//! Why a folder apart from `store`: none of these holds entries. The feed
//! calls its listeners (the near cache, the waiters, the slots, the
//! sessions' record) through traits it defines ([`changes::Evicts`],
//! [`changes::Heard`], [`sharded::Listener`]), so nothing here points back
//! at its listeners; it uses the Redis connection of `store::redis` to
//! publish and subscribe.

pub mod changes;
pub mod generations;
pub mod lease;
pub mod sharded;
pub mod waiters;
