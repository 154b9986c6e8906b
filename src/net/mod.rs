//! The network's ground rules, shared by every stage that connects anywhere (the API client and
//! every sink): where the notifier may connect at all.

pub mod egress;
