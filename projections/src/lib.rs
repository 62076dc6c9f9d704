//! Projection runners for Annals. (work in progress)
