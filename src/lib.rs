//! sidecarctl as a library: the waPC host, admission answers, OCI distribution and the
//! commands built on them. The binary is its command line; the integration tests that
//! drive modules in-process (property tests, the fuzz run) use the same host.

pub mod admission;
pub mod bench;
pub mod evaluation;
pub mod files;
pub mod metadata;
pub mod oci;
pub mod playground;
pub mod rollout;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod testsuite;
