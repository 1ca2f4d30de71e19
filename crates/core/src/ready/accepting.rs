//! accepting
