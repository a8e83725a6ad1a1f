//! Clustering against a real etcd cluster (tests/common/etcd.rs): the etcd client's
//! key-values, leases, transactions, watches, failover and auth; then real agents
//! (processes) coordinating through it: placement, failover, paging once, quorum,
//! fencing and etcd outages.

mod agents;
mod etcd_client;
mod outage;
mod paging;
mod quorum;
mod support;
