//! `seccomp-node-agent`: runs on every node, receives its desired file set from the
//! distributor and writes each file atomically with the exact mode, owner and group.
//!
//! This crate will hold (see `ARCHITECTURE.md` and DESIGN sections 6-7): the safe file
//! writer (paths confined to the allowed root, no symlink following, temp file + fchown +
//! fchmod + fsync + rename + directory fsync), owner/group resolution against the host
//! root, the record of placed files, drift detection, and the sync client with backoff.
