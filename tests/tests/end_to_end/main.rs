//! tally's end-to-end tests against the AWS API server `scripts/test`
//! starts on loopback (moto's server): one test binary, one module per
//! suite, so the SDK is linked once. `tests/README.md` says what each
//! proves.
//!
//! Without the server (`TALLY_TEST_ENDPOINT`) every test that needs it
//! fails, never skips, naming `scripts/test`.

mod aggregate;
mod aggregate_model;
mod alert_stores;
mod bad_input;
mod deploy;
mod dev;
mod faults_pipeline;
mod ingest;
mod ingest_model;
mod rules;
mod rules_adapters;
mod state_stores;
mod totals_stores;
