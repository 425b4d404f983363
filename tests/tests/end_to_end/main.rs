//! tally's end-to-end tests against the AWS API server `scripts/test`
//! starts on loopback (moto's server): one test binary, one module per
//! suite, so the SDK is linked once for them all. `tests/README.md` says
//! what each proves. Only the model tests have a binary of their own,
//! `models` (`tests/tests/models/main.rs` says why).
//!
//! Without the server (`TALLY_TEST_ENDPOINT`) every test that needs it
//! fails, never skips, naming `scripts/test`.

mod aggregate;
mod alert_stores;
mod bad_input;
mod deploy;
mod dev;
mod faults_pipeline;
mod ingest;
mod rules;
mod rules_adapters;
mod state_stores;
mod totals_stores;
