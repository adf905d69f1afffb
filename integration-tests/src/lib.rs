//! End-to-end tests of the whole system: the real binaries started as child processes
//! on loopback, with temporary data directories, killed with signals for fault tests.
//!
//! The scenarios live in `tests/`; this library will hold the small fixtures that start
//! and stop processes and poll for conditions with deadlines.
