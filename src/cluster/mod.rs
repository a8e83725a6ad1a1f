//! Clustering: several agents coordinated through etcd.

pub mod etcd;
