//! The PostgreSQL event store for Annals. (work in progress)
