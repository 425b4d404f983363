//! tally's embedded adapters: the core ports on one machine, one module per
//! AWS adapter they stand in for.
//!
//! - [`database`]: the SQLite file under the tables: opening it, its lock
//!   and schema, the stages' checkpoints, and the change logs that play the
//!   part of the DynamoDB streams (old and new image of every write);
//! - [`state_table`]: SQLite as the state table, with its change log;
//! - [`totals_tables`]: the partial items and the totals, with the totals'
//!   change log;
//! - [`alerts_table`]: the alert records and marks;
//! - [`directory`]: a local directory laid out like the bucket
//!   (`counters/<date>/<instance>`) as the object store;
//! - [`notifier`]: alerts as JSON lines, to stdout or a file.
//!
//! They exist so that the same stage code runs with no AWS account: `tally
//! demo` and `tally run` wire them where the Lambdas wire DynamoDB and S3.

pub mod alerts_table;
pub mod database;
pub mod directory;
pub mod notifier;
pub mod state_table;
pub mod totals_tables;
