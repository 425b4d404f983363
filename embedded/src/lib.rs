//! tally's embedded adapters: the core ports on one machine.
//!
//! - [`directory`]: a local directory laid out like the bucket
//!   (`counters/<date>/<instance>`) as the object store;
//! - [`sqlite`]: SQLite as the state table, with a change log that plays the
//!   part of its DynamoDB stream (old and new image of every write);
//! - [`database`]: the same SQLite file's other tables: partial items,
//!   totals and their change log, alert records and marks, checkpoints;
//! - [`notifier`]: alerts as JSON lines, to stdout or a file.
//!
//! They exist so that the same stage code runs with no AWS account: `tally
//! demo` and `tally run` wire them where the Lambdas wire DynamoDB and S3.

pub mod database;
pub mod directory;
pub mod notifier;
pub mod sqlite;
