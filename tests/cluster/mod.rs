//! Clustering against a real etcd cluster (tests/common/etcd.rs): the etcd client's
//! key-values, leases, transactions, watches, failover and auth.

mod etcd_client;
