//! `deploy/template.yaml` against the code it deploys and the guards it
//! promises. cfn-lint and `sam validate --lint` (run by
//! `scripts/lint-template`) check that the template is a valid template;
//! they let through an invalid `Runtime` or `StartingPosition` and know
//! nothing of tally. These tests check what tally depends on:
//!
//! - **names**: each function gets the environment its `settings` module
//!   reads (every variable it requires, no TALLY_ variable it does not
//!   read), naming the right table, topic, bucket and prefix; each
//!   function is built from the binary of its name; the event sources are
//!   the right streams and topic;
//! - **tables**: key schemas, the `ByDate` index and its projection,
//!   streams, time to live, exactly as the adapters' `create_*` functions
//!   make them on the AWS API server (so code and template cannot drift);
//! - **values cfn-lint does not check**: runtime, architecture, memory,
//!   handler, timeouts, JSON logs, the stream mappings' starting position,
//!   parallelization factor (1: the aggregate stage's exactly-once scheme),
//!   partial batch responses, bisection, retries and on-failure queues;
//! - **least privilege and no way in**: no wildcard action or resource in
//!   any role, each role exactly the actions its function's code makes; the
//!   upload topic's policy pinned to this bucket and account; the bucket's
//!   public access block and TLS-only policy; encryption at rest on every
//!   topic, queue and table; TLS-only policies on topics and queues;
//! - **alarms**: on every function's errors, each stream's iterator age,
//!   each dead-letter queue, and on tally's own metrics, whose names must
//!   be metrics the functions emit (`tally_aws::metrics`);
//! - **the clock**: the schedule that ticks the rules function with an
//!   event it decodes as a tick, its role (it may only invoke that
//!   function), the heartbeat alarm on-call rely on (missing data is
//!   breaching, to the operations topic) and the rules role's listing of
//!   the uploads, kept to the counters prefix.
//!
//! The template uses the long form of intrinsic functions (`Fn::Sub:`, not
//! `!Sub`), so it parses as plain YAML; a test fails if a short form creeps in.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::TableDescription;
use marked_yaml::{LoaderOptions, Node, parse_yaml_with_options};
use serde_json::{Map, Value, json};
use tally_aws::metrics::Stage;
use tally_tests::{sdk_config, unique};

const TEMPLATE: &str = include_str!("../../../deploy/template.yaml");

// ------------------------------------------------------------------ parsing

/// The template as JSON, every scalar a string (`128`, `true`).
fn template() -> Value {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let node = parse_yaml_with_options(0, TEMPLATE, options)
        .unwrap_or_else(|e| panic!("deploy/template.yaml does not parse: {e}"));
    to_json(&node)
}

fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(scalar) => Value::String(scalar.as_str().to_owned()),
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.as_str().to_owned(), to_json(value)))
                .collect(),
        ),
    }
}

fn resources(t: &Value) -> &Map<String, Value> {
    t["Resources"]
        .as_object()
        .unwrap_or_else(|| panic!("no Resources"))
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    resources(t)
        .get(id)
        .unwrap_or_else(|| panic!("no resource {id}"))
}

fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// A function's properties as SAM sees them: `Globals.Function` overlaid by its own.
fn function(t: &Value, id: &str) -> Value {
    let mut merged = t["Globals"]["Function"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let own = resource(t, id)["Properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{id} has no Properties"));
    for (key, value) in own {
        merged.insert(key.clone(), value.clone());
    }
    Value::Object(merged)
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a scalar"))
}

fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

fn get_att(id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [id, attribute] })
}

/// A list, or a single value as a list of one (policy Action and Resource).
fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

/// The three functions: logical id, binary, stage.
const FUNCTIONS: [(&str, &str, Stage); 3] = [
    ("IngestFunction", "ingest", Stage::Ingest),
    ("AggregateFunction", "aggregate", Stage::Aggregate),
    ("RulesFunction", "rules", Stage::Rules),
];

// ------------------------------------------------- evaluating the intrinsics

/// Evaluates the intrinsic functions a value uses, for one assignment of the
/// template's conditions: parameters take their defaults (required ones an
/// example value), resources a placeholder naming them. `None` is
/// `AWS::NoValue`.
struct Evaluator<'a> {
    template: &'a Value,
    conditions: bool,
}

impl Evaluator<'_> {
    fn parameter(&self, name: &str) -> Option<String> {
        let parameter = self.template["Parameters"].get(name)?;
        Some(match parameter.get("Default").map(text) {
            Some(default) => default.to_owned(),
            None if name == "CountersBucketName" => "example-counters".to_owned(),
            None => panic!("parameter {name} has no default and no example value here"),
        })
    }

    fn reference(&self, name: &str) -> Option<String> {
        if name == "AWS::NoValue" {
            return None;
        }
        if let Some(pseudo) = name.strip_prefix("AWS::") {
            return Some(format!("<{pseudo}>"));
        }
        if let Some(value) = self.parameter(name) {
            return Some(value);
        }
        assert!(
            resources(self.template).contains_key(name),
            "Ref to {name}, which is neither a parameter nor a resource"
        );
        Some(format!("<{name}>"))
    }

    fn eval(&self, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Object(map) if map.len() == 1 => {
                let (function, argument) = map.iter().next()?;
                match function.as_str() {
                    "Ref" => self.reference(text(argument)),
                    "Fn::GetAtt" => Some(format!("<{}>", argument[0].as_str()?)),
                    "Fn::If" => {
                        let condition = text(&argument[0]);
                        assert!(
                            self.template["Conditions"].get(condition).is_some(),
                            "Fn::If on an undefined condition {condition}"
                        );
                        self.eval(&argument[if self.conditions { 1 } else { 2 }])
                    }
                    "Fn::Sub" => Some(self.substitute(text(argument))),
                    other => panic!("no evaluation of {other} here"),
                }
            }
            other => panic!("cannot evaluate {other}"),
        }
    }

    fn substitute(&self, pattern: &str) -> String {
        let mut out = String::new();
        let mut rest = pattern;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {pattern}"));
            let name = &rest[start + 2..start + end];
            let value = match name.split_once('.') {
                Some((id, _)) => format!("<{id}>"),
                None => self.reference(name).unwrap_or_default(),
            };
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Every parameter, resource or resource attribute a `Fn::Sub` pattern names.
fn sub_names(pattern: &str) -> Vec<&str> {
    pattern
        .split("${")
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .collect()
}

// ----------------------------------------------------------------- the form

#[test]
fn the_template_uses_long_form_intrinsics_and_names_only_what_exists() {
    for (number, line) in TEMPLATE.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for short in [
            "!Ref", "!Sub", "!GetAtt", "!If", "!Equals", "!Not", "!Join", "!Select",
        ] {
            assert!(
                !line.contains(short),
                "line {}: use the long form (Fn::Sub:, Ref:), so any YAML parser reads the template: {line}",
                number + 1
            );
        }
    }
    let t = template();
    assert_eq!(t["Transform"], "AWS::Serverless-2016-10-31");
    // Every Ref, GetAtt and ${...} names a parameter, a resource or a pseudo parameter.
    let known = |name: &str| {
        name.starts_with("AWS::")
            || t["Parameters"].get(name).is_some()
            || resources(&t).contains_key(name)
    };
    fn walk(value: &Value, check: &mut dyn FnMut(&str)) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("Ref", Value::String(name)) => check(name),
                        ("Fn::GetAtt", Value::Array(parts)) => check(text(&parts[0])),
                        ("Fn::Sub", Value::String(pattern)) => {
                            for name in sub_names(pattern) {
                                check(name.split('.').next().unwrap_or(name));
                            }
                        }
                        _ => {}
                    }
                    walk(inner, check);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, check)),
            _ => {}
        }
    }
    walk(&t["Resources"], &mut |name| {
        assert!(known(name), "{name} is referenced but not defined")
    });
    walk(&t["Outputs"], &mut |name| {
        assert!(known(name), "{name} is referenced but not defined")
    });
}

// ---------------------------------------------------------------- the names

#[test]
fn each_function_gets_exactly_the_environment_its_code_reads() {
    let t = template();
    for conditions in [true, false] {
        let evaluator = Evaluator {
            template: &t,
            conditions,
        };
        for (id, binary, _) in FUNCTIONS {
            let properties = function(&t, id);
            let variables = properties["Environment"]["Variables"]
                .as_object()
                .unwrap_or_else(|| panic!("{id} has no environment"));
            let environment: BTreeMap<String, String> = variables
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), evaluator.eval(value)?)))
                .collect();
            let read: &[&str] = match binary {
                "ingest" => tally_ingest::settings::VARIABLES,
                "aggregate" => tally_aggregate::settings::VARIABLES,
                _ => tally_rules::settings::VARIABLES,
            };
            for name in environment.keys() {
                assert!(
                    read.contains(&name.as_str()),
                    "{id} is given {name}, which {binary} does not read (it reads {read:?})"
                );
            }
            // Every variable a function requires is set: its settings load.
            let lookup = |name: &str| environment.get(name).cloned();
            let loaded = match binary {
                "ingest" => tally_ingest::settings::Settings::from_lookup(lookup)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                "aggregate" => tally_aggregate::settings::Settings::from_lookup(lookup)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                _ => tally_rules::settings::Settings::from_lookup(lookup)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = loaded {
                panic!("{id} would not start (conditions {conditions}): {e}");
            }
        }
    }
}

#[test]
fn the_environment_names_the_right_resources() {
    let t = template();
    let expected: &[(&str, &[(&str, Value)])] = &[
        (
            "IngestFunction",
            &[
                ("TALLY_STATE_TABLE", reference("StateTable")),
                ("TALLY_COUNTERS_PREFIX", reference("CountersPrefix")),
                ("TALLY_BUCKET", reference("CountersBucketName")),
            ],
        ),
        (
            "AggregateFunction",
            &[
                ("TALLY_PARTIALS_TABLE", reference("PartialsTable")),
                ("TALLY_TOTALS_TABLE", reference("TotalsTable")),
                // Read by the scheduled reconcile only.
                ("TALLY_STATE_TABLE", reference("StateTable")),
            ],
        ),
        (
            "RulesFunction",
            &[
                ("TALLY_PARTIALS_TABLE", reference("PartialsTable")),
                ("TALLY_TOTALS_TABLE", reference("TotalsTable")),
                ("TALLY_ALERTS_TABLE", reference("AlertsTable")),
                // Ref of a topic is its ARN.
                ("TALLY_ALERT_TOPIC_ARN", reference("AlertTopic")),
                ("TALLY_SNAPSHOT_BUCKET", reference("CountersBucketName")),
                ("TALLY_SNAPSHOT_PREFIX", reference("SnapshotPrefix")),
                // Where a tick lists the uploads.
                ("TALLY_BUCKET", reference("CountersBucketName")),
                ("TALLY_COUNTERS_PREFIX", reference("CountersPrefix")),
                ("TALLY_STATE_TABLE", reference("StateTable")),
                (
                    "TALLY_RULES_BUCKET",
                    json!({"Fn::If": ["RulesFromBucket", {"Ref": "CountersBucketName"}, {"Ref": "AWS::NoValue"}]}),
                ),
                (
                    "TALLY_RULES_PREFIX",
                    json!({"Fn::If": ["RulesFromBucket", {"Ref": "RulesPrefix"}, {"Ref": "AWS::NoValue"}]}),
                ),
            ],
        ),
    ];
    for (id, variables) in expected {
        let environment = &function(&t, id)["Environment"]["Variables"];
        for (name, value) in *variables {
            assert_eq!(&environment[name], value, "{id} {name}");
        }
        assert_eq!(
            environment.as_object().map(Map::len),
            Some(variables.len()),
            "{id}: {environment}"
        );
    }
    // The bucket's default prefixes are the code's defaults.
    let parameters = &t["Parameters"];
    assert_eq!(
        parameters["CountersPrefix"]["Default"],
        tally_ingest::IngestConfig::default().prefix
    );
    assert_eq!(parameters["SnapshotPrefix"]["Default"], "totals");
}

#[test]
fn each_function_is_built_from_its_binary_and_fed_by_its_source() {
    let t = template();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for (id, binary, _) in FUNCTIONS {
        let r = resource(&t, id);
        assert_eq!(r["Type"], "AWS::Serverless::Function");
        assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(r["Metadata"]["BuildProperties"]["Binary"], binary, "{id}");
        let code = text(&r["Properties"]["CodeUri"]);
        let manifest = format!("{root}/deploy/{code}/Cargo.toml");
        let manifest =
            std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{id}: {manifest}: {e}"));
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{binary}\"")),
            "{id}: {code}/Cargo.toml has no binary {binary}"
        );
    }
    let events = |id: &str| function(&t, id)["Events"].clone();
    let ingest = events("IngestFunction");
    assert_eq!(ingest.as_object().map(Map::len), Some(1));
    assert_eq!(ingest["Uploads"]["Type"], "SNS");
    assert_eq!(
        ingest["Uploads"]["Properties"]["Topic"],
        reference("UploadTopic")
    );
    let aggregate = events("AggregateFunction");
    assert_eq!(aggregate.as_object().map(Map::len), Some(1));
    assert_eq!(
        aggregate["StateStream"]["Properties"]["Stream"],
        get_att("StateTable", "StreamArn")
    );
    let rules = events("RulesFunction");
    assert_eq!(rules.as_object().map(Map::len), Some(1));
    assert_eq!(
        rules["TotalsStream"]["Properties"]["Stream"],
        get_att("TotalsTable", "StreamArn")
    );
    // The bucket sends created and removed events under the counters prefix
    // (with its slash: `counters2/` is not `counters/`) to the upload topic.
    let notifications = &resource(&t, "CountersBucket")["Properties"]["NotificationConfiguration"];
    assert!(notifications.get("LambdaConfigurations").is_none());
    assert!(notifications.get("QueueConfigurations").is_none());
    let topics = list(&notifications["TopicConfigurations"]);
    let events: BTreeSet<&str> = topics.iter().map(|c| text(&c["Event"])).collect();
    assert_eq!(
        events,
        BTreeSet::from(["s3:ObjectCreated:*", "s3:ObjectRemoved:*"])
    );
    for configuration in topics {
        assert_eq!(configuration["Topic"], reference("UploadTopic"));
        assert_eq!(
            configuration["Filter"]["S3Key"]["Rules"],
            json!([{"Name": "prefix", "Value": {"Fn::Sub": "${CountersPrefix}/"}}])
        );
    }
}

// ----------------------------------------------------------------- the tables

/// (key attribute, HASH or RANGE) pairs.
fn keys_of_template(schema: &Value) -> Vec<(String, String)> {
    list(schema)
        .iter()
        .map(|k| {
            (
                text(&k["AttributeName"]).to_owned(),
                text(&k["KeyType"]).to_owned(),
            )
        })
        .collect()
}

fn keys_of_code(schema: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Vec<(String, String)> {
    schema
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect()
}

/// Compares a template table with the one the adapters' create function makes.
fn same_table(t: &Value, id: &str, made: &TableDescription) {
    let properties = &resource(t, id)["Properties"];
    assert_eq!(
        keys_of_template(&properties["KeySchema"]),
        keys_of_code(made.key_schema()),
        "{id}: key schema"
    );
    let attributes: BTreeSet<(String, String)> = list(&properties["AttributeDefinitions"])
        .iter()
        .map(|a| {
            (
                text(&a["AttributeName"]).to_owned(),
                text(&a["AttributeType"]).to_owned(),
            )
        })
        .collect();
    let made_attributes: BTreeSet<(String, String)> = made
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(attributes, made_attributes, "{id}: attribute definitions");
    let stream = properties["StreamSpecification"]["StreamViewType"].as_str();
    let made_stream = made
        .stream_specification()
        .filter(|s| s.stream_enabled())
        .and_then(|s| s.stream_view_type())
        .map(|v| v.as_str());
    assert_eq!(stream, made_stream, "{id}: stream");
    let indexes: Vec<Value> = list(&properties["GlobalSecondaryIndexes"])
        .iter()
        .map(|index| {
            let projection = &index["Projection"];
            let mut non_key: Vec<&str> = list(&projection["NonKeyAttributes"])
                .into_iter()
                .map(text)
                .collect();
            non_key.sort_unstable();
            json!({
                "name": index["IndexName"],
                "keys": keys_of_template(&index["KeySchema"]),
                "projection": projection["ProjectionType"],
                "non_key": non_key,
            })
        })
        .collect();
    let made_indexes: Vec<Value> = made
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let projection = index.projection();
            let mut non_key: Vec<&str> = projection
                .map(|p| p.non_key_attributes().iter().map(String::as_str).collect())
                .unwrap_or_default();
            non_key.sort_unstable();
            json!({
                "name": index.index_name(),
                "keys": keys_of_code(index.key_schema()),
                "projection": projection.and_then(|p| p.projection_type()).map(|p| p.as_str()),
                "non_key": non_key,
            })
        })
        .collect();
    assert_eq!(indexes, made_indexes, "{id}: global secondary indexes");
}

#[tokio::test]
async fn the_tables_are_the_ones_the_adapters_create() {
    let t = template();
    let sdk = sdk_config().await;
    let client = tally_aws::config::dynamodb(&sdk);
    let tables = [
        ("StateTable", unique("deploy-state")),
        ("PartialsTable", unique("deploy-partials")),
        ("TotalsTable", unique("deploy-totals")),
        ("AlertsTable", unique("deploy-alerts")),
    ];
    tally_aws::state_table::create_state_table(&client, &tables[0].1)
        .await
        .unwrap();
    tally_aws::totals_tables::create_partials_table(&client, &tables[1].1)
        .await
        .unwrap();
    tally_aws::totals_tables::create_totals_table(&client, &tables[2].1)
        .await
        .unwrap();
    tally_aws::alerts_table::create_alerts_table(&client, &tables[3].1)
        .await
        .unwrap();
    for (id, name) in &tables {
        let made = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap_or_else(|| panic!("{name}: no description"));
        same_table(&t, id, &made);
    }
    // Named in the code, so a rename of either side shows here too.
    let totals = &resource(&t, "TotalsTable")["Properties"];
    assert_eq!(
        totals["GlobalSecondaryIndexes"][0]["IndexName"],
        tally_aws::totals_tables::BY_DATE
    );
    let state = &resource(&t, "StateTable")["Properties"];
    assert_eq!(
        keys_of_template(&state["KeySchema"]),
        [
            (tally_core::state::attr::PART.to_owned(), "HASH".to_owned()),
            (
                tally_core::state::attr::INSTANCE.to_owned(),
                "RANGE".to_owned()
            ),
        ]
    );
}

#[test]
fn tables_are_durable_encrypted_and_billed_as_chosen() {
    let t = template();
    assert_eq!(t["Parameters"]["BillingMode"]["Default"], "PAY_PER_REQUEST");
    assert_eq!(t["Parameters"]["DeletionProtection"]["Default"], "true");
    let tables = of_type(&t, "AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 4);
    for (id, table) in tables {
        let p = &table["Properties"];
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], "true",
            "{id}"
        );
        assert_eq!(p["SSESpecification"]["SSEEnabled"], "true", "{id}");
        assert_eq!(
            p["DeletionProtectionEnabled"],
            reference("DeletionProtection"),
            "{id}"
        );
        if id == "AlertsTable" {
            assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
            // Records carry their expiry (aws/src/alerts_table.rs).
            assert_eq!(
                p["TimeToLiveSpecification"],
                json!({"AttributeName": "Expires", "Enabled": "true"})
            );
        } else {
            assert_eq!(p["BillingMode"], reference("BillingMode"), "{id}");
            let provisioned = &p["ProvisionedThroughput"]["Fn::If"];
            assert_eq!(provisioned[0], "Provisioned", "{id}");
            assert_eq!(provisioned[2], reference("AWS::NoValue"), "{id}");
        }
    }
    for id in ["StateTable", "TotalsTable"] {
        assert_eq!(
            resource(&t, id)["Properties"]["StreamSpecification"]["StreamViewType"],
            "NEW_AND_OLD_IMAGES"
        );
    }
}

// ----------------------------------------------- values cfn-lint lets through

#[test]
fn functions_run_as_the_budgets_and_the_stages_need() {
    let t = template();
    for (id, _, _) in FUNCTIONS {
        let f = function(&t, id);
        assert_eq!(f["Runtime"], "provided.al2023", "{id}");
        assert_eq!(f["Architectures"], json!(["arm64"]), "{id}");
        assert_eq!(f["Handler"], "bootstrap", "{id}");
        // docs/design.md §8: the functions run at 128 MB.
        assert_eq!(f["MemorySize"], "128", "{id}");
        assert!(
            f.get("Policies").is_none(),
            "{id}: permissions belong in its role"
        );
        let logging = &f["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{id}");
        // The metrics line has no level, so Lambda files it as INFO: a
        // stricter level would drop tally's metrics and silence their alarms.
        assert!(
            ["TRACE", "DEBUG", "INFO"].contains(&text(&logging["ApplicationLogLevel"])),
            "{id}: {}",
            logging["ApplicationLogLevel"]
        );
        let group = text(&logging["LogGroup"]["Ref"]);
        let group = resource(&t, group);
        assert_eq!(group["Type"], "AWS::Logs::LogGroup", "{id}");
        assert_eq!(
            group["Properties"]["RetentionInDays"],
            reference("LogRetentionDays"),
            "{id}"
        );
    }
    let timeout = |id: &str| -> u64 {
        text(&function(&t, id)["Timeout"])
            .parse()
            .unwrap_or_else(|e| panic!("{id}: {e}"))
    };
    // Four calls per upload, each bounded by the SDK's 40 s operation timeout.
    assert!((40..=120).contains(&timeout("IngestFunction")));
    assert!((60..=300).contains(&timeout("AggregateFunction")));
    // A redelivered batch may wait out a 60 s outbox lease (plus 5 s) and then
    // publish within the 45 s budget: about two minutes (docs/design.md §6).
    assert!((120..=300).contains(&timeout("RulesFunction")));
    // Ingest is invoked asynchronously by SNS: its failures go to a queue too.
    let invoke = &function(&t, "IngestFunction")["EventInvokeConfig"];
    assert_eq!(
        invoke["DestinationConfig"]["OnFailure"],
        json!({"Type": "SQS", "Destination": get_att("IngestDeadLetterQueue", "Arn")})
    );
}

#[test]
fn stream_mappings_keep_the_exactly_once_scheme() {
    let t = template();
    for (id, event, queue) in [
        (
            "AggregateFunction",
            "StateStream",
            "AggregateDeadLetterQueue",
        ),
        ("RulesFunction", "TotalsStream", "RulesDeadLetterQueue"),
    ] {
        let e = &function(&t, id)["Events"][event];
        assert_eq!(e["Type"], "DynamoDB", "{id}");
        let p = &e["Properties"];
        // Every change must reach the totals: from the oldest record, never LATEST.
        assert_eq!(p["StartingPosition"], "TRIM_HORIZON", "{id}");
        // Above 1 Lambda orders records only per item, not per hash key,
        // and the aggregate stage needs a (date, bucket)'s records in
        // order, one invocation at a time (docs/design.md §5).
        assert_eq!(p["ParallelizationFactor"], "1", "{id}");
        assert_eq!(
            p["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"]),
            "{id}"
        );
        assert_eq!(p["BisectBatchOnFunctionError"], "true", "{id}");
        assert_eq!(
            p["MaximumRetryAttempts"],
            reference("StreamMaximumRetryAttempts")
        );
        assert_eq!(p["BatchSize"], reference("StreamBatchSize"));
        assert_eq!(
            p["MaximumBatchingWindowInSeconds"],
            reference("StreamBatchingWindowSeconds")
        );
        assert_eq!(
            p["DestinationConfig"]["OnFailure"]["Destination"],
            get_att(queue, "Arn"),
            "{id}"
        );
        assert!(p.get("TumblingWindowInSeconds").is_none());
        assert!(
            p.get("FilterCriteria").is_none(),
            "{id}: every record matters"
        );
    }
    let parameters = &t["Parameters"];
    // docs/design.md §5: each batch writes each changed total once, so 100 or more.
    let batch: u64 = text(&parameters["StreamBatchSize"]["Default"])
        .parse()
        .unwrap();
    assert!(batch >= 100);
    let retries: i64 = text(&parameters["StreamMaximumRetryAttempts"]["Default"])
        .parse()
        .unwrap();
    assert!(retries >= 1, "a throttled batch must be retried");
}

// ------------------------------------------------ least privilege, no way in

/// A statement list with `Fn::If` branches flattened (both are possible).
fn statements(document: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for statement in list(&document["Statement"]) {
        match statement.get("Fn::If") {
            Some(branches) => {
                for branch in [&branches[1], &branches[2]] {
                    if branch != &reference("AWS::NoValue") {
                        out.push(branch);
                    }
                }
            }
            None => out.push(statement),
        }
    }
    out
}

/// A resource as a canonical string: `StateTable.Arn`, `ref:AlertTopic`, or
/// the `Fn::Sub` pattern.
fn canonical(resource: &Value) -> String {
    if let Some(id) = resource.get("Ref") {
        return format!("ref:{}", text(id));
    }
    if let Some(parts) = resource.get("Fn::GetAtt") {
        return format!("{}.{}", text(&parts[0]), text(&parts[1]));
    }
    if let Some(pattern) = resource.get("Fn::Sub") {
        return text(pattern).to_owned();
    }
    text(resource).to_owned()
}

/// No wildcard where an ARN exists: not `*`, and a `*` only in the
/// resource part of an ARN (after its first `/`: objects under a prefix,
/// a table's streams), never in its service, region, account or name.
fn assert_no_wildcard_resource(role: &str, resource: &str) {
    assert_ne!(resource, "*", "{role}: Resource \"*\"");
    let head = resource.split('/').next().unwrap_or(resource);
    assert!(
        !head.contains('*'),
        "{role}: wildcard outside a resource path: {resource}"
    );
    assert!(
        resource.starts_with("arn:")
            || resource.starts_with("${")
            || resource.starts_with("ref:")
            || resource.ends_with(".Arn"),
        "{role}: {resource} is not an ARN"
    );
}

/// A role's statements as (action, resource) pairs, checked for wildcards.
fn grants(t: &Value, role: &str) -> BTreeSet<(String, String)> {
    let r = resource(t, role);
    assert_eq!(r["Type"], "AWS::IAM::Role");
    let p = &r["Properties"];
    assert!(
        p.get("ManagedPolicyArns").is_none(),
        "{role}: managed policies grant what the template does not show"
    );
    assert!(p.get("PermissionsBoundary").is_none());
    let trust = statements(&p["AssumeRolePolicyDocument"]);
    assert_eq!(trust.len(), 1, "{role}");
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "lambda.amazonaws.com"})
    );
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    let mut pairs = BTreeSet::new();
    for policy in list(&p["Policies"]) {
        for statement in statements(&policy["PolicyDocument"]) {
            assert_eq!(statement["Effect"], "Allow", "{role}: {statement}");
            for forbidden in ["NotAction", "NotResource", "NotPrincipal"] {
                assert!(statement.get(forbidden).is_none(), "{role}: {forbidden}");
            }
            let actions = list(&statement["Action"]);
            let resources = list(&statement["Resource"]);
            assert!(!actions.is_empty() && !resources.is_empty(), "{role}");
            for action in &actions {
                let action = text(action);
                assert!(
                    !action.contains('*') && action.split_once(':').is_some(),
                    "{role}: wildcard or malformed action {action}"
                );
            }
            for resource in &resources {
                let resource = canonical(resource);
                assert_no_wildcard_resource(role, &resource);
                for action in &actions {
                    pairs.insert((text(action).to_owned(), resource.clone()));
                }
            }
        }
    }
    pairs
}

fn pairs(expected: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    expected
        .iter()
        .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
        .collect()
}

#[test]
fn each_role_allows_exactly_what_its_function_does() {
    let t = template();
    let counters = "arn:${AWS::Partition}:s3:::${CountersBucketName}";
    let uploads = "arn:${AWS::Partition}:s3:::${CountersBucketName}/${CountersPrefix}/*";
    // Each function has its own role, and only it.
    let mut seen = BTreeSet::new();
    for (id, _, _) in FUNCTIONS {
        let role = &function(&t, id)["Role"]["Fn::GetAtt"];
        assert_eq!(role[1], "Arn", "{id}");
        assert!(seen.insert(text(&role[0]).to_owned()), "{id} shares a role");
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            "AggregateRole".to_owned(),
            "IngestRole".to_owned(),
            "RulesRole".to_owned()
        ])
    );
    // The fourth and fifth are the reconcile and tick schedules' (checked below).
    assert_eq!(of_type(&t, "AWS::IAM::Role").len(), 5);
    assert!(of_type(&t, "AWS::IAM::Policy").is_empty());
    assert!(of_type(&t, "AWS::IAM::ManagedPolicy").is_empty());

    // ingest: aws/src/state_table.rs (GetItem, conditional PutItem) and
    // aws/src/bucket.rs (GetObject, by version when the event names one;
    // HeadObject, which is s3:GetObject). ListBucket on the bucket, without
    // a prefix condition, so that S3 answers 404 rather than 403 for a key
    // that is gone. ListBucketVersions (ListObjectVersions) of the key whose
    // upload was rejected, confined to the counters prefix (checked below).
    // The state table's Query is reconcile's, not ingest's.
    assert_eq!(
        grants(&t, "IngestRole"),
        pairs(&[
            ("logs:CreateLogStream", "IngestLogGroup.Arn"),
            ("logs:PutLogEvents", "IngestLogGroup.Arn"),
            ("dynamodb:GetItem", "StateTable.Arn"),
            ("dynamodb:PutItem", "StateTable.Arn"),
            ("s3:GetObject", uploads),
            ("s3:GetObjectVersion", uploads),
            ("s3:ListBucket", counters),
            ("s3:ListBucketVersions", counters),
            ("sqs:SendMessage", "IngestDeadLetterQueue.Arn"),
        ])
    );
    // aggregate: aws/src/totals_tables.rs: partial (GetItem), put_partial
    // (PutItem), partials (BatchGetItem), totals_of (BatchGetItem),
    // put_total (PutItem). The stream is read by the event source mapping
    // with this role. The scheduled reconcile adds two queries: the day's
    // state, one hash key per bucket (aws/src/state_table.rs `day`), and
    // the day's totals through the ByDate index (`totals`), which IAM
    // checks against the index's ARN.
    let state_stream = "${StateTable.Arn}/stream/*";
    let totals_stream = "${TotalsTable.Arn}/stream/*";
    assert_eq!(
        grants(&t, "AggregateRole"),
        pairs(&[
            ("logs:CreateLogStream", "AggregateLogGroup.Arn"),
            ("logs:PutLogEvents", "AggregateLogGroup.Arn"),
            ("dynamodb:DescribeStream", state_stream),
            ("dynamodb:GetRecords", state_stream),
            ("dynamodb:GetShardIterator", state_stream),
            ("dynamodb:ListStreams", state_stream),
            ("dynamodb:GetItem", "PartialsTable.Arn"),
            ("dynamodb:PutItem", "PartialsTable.Arn"),
            ("dynamodb:BatchGetItem", "PartialsTable.Arn"),
            ("dynamodb:BatchGetItem", "TotalsTable.Arn"),
            ("dynamodb:PutItem", "TotalsTable.Arn"),
            ("dynamodb:Query", "StateTable.Arn"),
            ("dynamodb:Query", "${TotalsTable.Arn}/index/ByDate"),
            ("sqs:SendMessage", "AggregateDeadLetterQueue.Arn"),
        ])
    );
    // rules: the day's partials read twice by BatchGetItem; the alert
    // records (aws/src/alerts_table.rs: Query, GetItem of the mark, PutItem,
    // TransactWriteItems of a ConditionCheck and a Put, which IAM checks as
    // ConditionCheckItem and PutItem); Publish to the encrypted alert topic
    // (SNS asks KMS for a data key on the publisher's behalf); the snapshot
    // PUTs; with rules in the bucket, ListObjectsV2 and GetObject under
    // their prefix. It reads no totals: only their stream. A tick lists the
    // uploads (ListObjectsV2 under the counters prefix, checked below) and
    // reads the state item of an instance that looks stale (GetItem).
    assert_eq!(
        grants(&t, "RulesRole"),
        pairs(&[
            ("logs:CreateLogStream", "RulesLogGroup.Arn"),
            ("logs:PutLogEvents", "RulesLogGroup.Arn"),
            ("dynamodb:DescribeStream", totals_stream),
            ("dynamodb:GetRecords", totals_stream),
            ("dynamodb:GetShardIterator", totals_stream),
            ("dynamodb:ListStreams", totals_stream),
            ("dynamodb:BatchGetItem", "PartialsTable.Arn"),
            ("dynamodb:Query", "AlertsTable.Arn"),
            ("dynamodb:GetItem", "AlertsTable.Arn"),
            ("dynamodb:PutItem", "AlertsTable.Arn"),
            ("dynamodb:ConditionCheckItem", "AlertsTable.Arn"),
            ("dynamodb:GetItem", "StateTable.Arn"),
            ("sns:Publish", "ref:AlertTopic"),
            ("kms:GenerateDataKey", "TopicKey.Arn"),
            ("kms:Decrypt", "TopicKey.Arn"),
            (
                "s3:PutObject",
                "arn:${AWS::Partition}:s3:::${CountersBucketName}/${SnapshotPrefix}/*"
            ),
            ("s3:ListBucket", counters),
            (
                "s3:GetObject",
                "arn:${AWS::Partition}:s3:::${CountersBucketName}/${RulesPrefix}*"
            ),
            ("sqs:SendMessage", "RulesDeadLetterQueue.Arn"),
        ])
    );
    // Each listing is confined to its prefix: the rules files', and the
    // uploads' (a tick's); neither lists the snapshots or anything else.
    let listings: BTreeSet<String> =
        statements(&resource(&t, "RulesRole")["Properties"]["Policies"][0]["PolicyDocument"])
            .into_iter()
            .filter(|s| list(&s["Action"]).contains(&&json!("s3:ListBucket")))
            .map(|s| {
                assert_eq!(s["Action"], "s3:ListBucket", "{s}");
                assert_eq!(s["Resource"], json!({"Fn::Sub": counters}), "{s}");
                let condition = s["Condition"].as_object().map(Map::len);
                assert_eq!(condition, Some(1), "{s}");
                let prefix = &s["Condition"]["StringLike"]["s3:prefix"]["Fn::Sub"];
                assert_eq!(
                    s["Condition"]["StringLike"].as_object().map(Map::len),
                    Some(1)
                );
                text(prefix).to_owned()
            })
            .collect();
    assert_eq!(
        listings,
        BTreeSet::from([
            "${CountersPrefix}/*".to_owned(),
            "${RulesPrefix}*".to_owned()
        ])
    );
}

#[test]
fn a_rejected_upload_may_list_its_key_versions_under_the_counters_prefix_only() {
    // Versioned buckets: ingest lists the rejected key's versions to find
    // the newest accepted one. ListBucketVersions is a bucket action, so its
    // resource is the bucket and the prefix is a condition.
    let t = template();
    let policy = &resource(&t, "IngestRole")["Properties"]["Policies"][0]["PolicyDocument"];
    let listing: Vec<&Value> = statements(policy)
        .into_iter()
        .filter(|s| list(&s["Action"]).contains(&&json!("s3:ListBucketVersions")))
        .collect();
    assert_eq!(
        listing.len(),
        1,
        "one statement grants s3:ListBucketVersions"
    );
    let statement = listing[0];
    assert_eq!(statement["Action"], "s3:ListBucketVersions");
    assert_eq!(
        statement["Resource"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::${CountersBucketName}"})
    );
    assert_eq!(
        statement["Condition"],
        json!({"StringLike": {"s3:prefix": {"Fn::Sub": "${CountersPrefix}/*"}}})
    );
}

#[test]
fn schedules_reconcile_yesterday_with_repair_check_today_and_alarm_on_drift() {
    use tally_aggregate::scheduled::{Day, Invocation, SETTLE, decode_invocation};

    let t = template();
    // Each schedule of the aggregate function (the rules function's tick is
    // checked below), by the day its input asks it to reconcile.
    let mut by_day: BTreeMap<&str, (&str, &Value)> = BTreeMap::new();
    for (id, schedule) in of_type(&t, "AWS::Scheduler::Schedule") {
        let p = &schedule["Properties"];
        if p["Target"]["Arn"] == get_att("RulesFunction", "Arn") {
            continue;
        }
        assert_eq!(p["ScheduleExpressionTimezone"], "UTC", "{id}");
        assert_eq!(p["FlexibleTimeWindow"]["Mode"], "OFF", "{id}");
        // It invokes the aggregate function with an event the function decodes.
        let target = &p["Target"];
        assert_eq!(target["Arn"], get_att("AggregateFunction", "Arn"), "{id}");
        assert_eq!(
            target["RoleArn"],
            get_att("ReconcileScheduleRole", "Arn"),
            "{id}"
        );
        assert!(
            text(&target["RetryPolicy"]["MaximumRetryAttempts"])
                .parse::<u64>()
                .is_ok_and(|n| n >= 1),
            "{id}: a failed delivery is retried"
        );
        let input: Value = serde_json::from_str(text(&target["Input"]))
            .unwrap_or_else(|e| panic!("{id}: Input is not JSON: {e}"));
        let day = match decode_invocation(input.clone()) {
            Ok(Invocation::Reconcile(request)) => match request.day {
                Day::Yesterday => "yesterday",
                Day::Today => "today",
            },
            Ok(_) => panic!("{id}: {input} decodes as a stream batch"),
            Err(e) => panic!("{id}: {input}: {e}"),
        };
        assert!(
            by_day.insert(day, (id, p)).is_none(),
            "two schedules of {day}"
        );
    }

    // Yesterday: a daily cron after midnight UTC, once ingest's late
    // deliveries of yesterday are over (its events live at most
    // MaximumEventAgeInSeconds), so none is still on its way to the stream.
    let (id, p) = by_day
        .get("yesterday")
        .unwrap_or_else(|| panic!("no schedule reconciles yesterday"));
    assert_eq!(
        p["State"], "ENABLED",
        "{id}: the safety net is not optional"
    );
    let expression = text(&p["ScheduleExpression"]);
    let fields: Vec<&str> = expression
        .strip_prefix("cron(")
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{id}: not a cron expression: {expression}"))
        .split(' ')
        .collect();
    assert_eq!(fields.len(), 6, "{expression}");
    assert_eq!(
        &fields[2..],
        ["*", "*", "?", "*"],
        "{id}: daily: {expression}"
    );
    let minute: u64 = fields[0]
        .parse()
        .unwrap_or_else(|e| panic!("{expression}: {e}"));
    let hour: u64 = fields[1]
        .parse()
        .unwrap_or_else(|e| panic!("{expression}: {e}"));
    let event_age: u64 =
        text(&function(&t, "IngestFunction")["EventInvokeConfig"]["MaximumEventAgeInSeconds"])
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
    let start = hour * 3600 + minute * 60;
    assert!(
        start > event_age && start < 12 * 3600,
        "{id}: starts at {hour:02}:{minute:02} UTC, not after ingest's last retry of yesterday ({event_age} s)"
    );

    // Today: hourly, and the function has time for its two looks.
    let (id, p) = by_day
        .get("today")
        .unwrap_or_else(|| panic!("no schedule checks today"));
    assert_eq!(p["ScheduleExpression"], "rate(1 hour)", "{id}");
    // On by default; a fleet whose counters all move every minute turns it off.
    assert_eq!(p["State"], reference("ReconcileToday"), "{id}");
    assert_eq!(t["Parameters"]["ReconcileToday"]["Default"], "ENABLED");
    let timeout: u64 = text(&function(&t, "AggregateFunction")["Timeout"])
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        timeout >= SETTLE.as_secs() + 30,
        "AggregateFunction: a {timeout} s timeout leaves no room for today's check, which waits {} s",
        SETTLE.as_secs()
    );
    assert_eq!(by_day.len(), 2);

    // The schedule's role may only invoke that function, and only the
    // scheduler of this account may take it.
    let role = &resource(&t, "ReconcileScheduleRole")["Properties"];
    assert!(role.get("ManagedPolicyArns").is_none());
    let trust = statements(&role["AssumeRolePolicyDocument"]);
    assert_eq!(trust.len(), 1);
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "scheduler.amazonaws.com"})
    );
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        reference("AWS::AccountId")
    );
    let mut granted = BTreeSet::new();
    for policy in list(&role["Policies"]) {
        for statement in statements(&policy["PolicyDocument"]) {
            assert_eq!(statement["Effect"], "Allow");
            for action in list(&statement["Action"]) {
                for resource in list(&statement["Resource"]) {
                    granted.insert((text(action).to_owned(), canonical(resource)));
                }
            }
        }
    }
    assert_eq!(
        granted,
        pairs(&[("lambda:InvokeFunction", "AggregateFunction.Arn")])
    );

    // The drift it found goes to operations.
    let alarm = &resource(&t, "ReconcileDriftAlarm")["Properties"];
    assert_eq!(alarm["Namespace"], tally_aws::metrics::NAMESPACE);
    assert_eq!(alarm["MetricName"], "ReconcileDrift");
    assert_eq!(
        alarm["Dimensions"],
        json!([{"Name": tally_aws::metrics::DIMENSION, "Value": {"Ref": "AggregateFunction"}}])
    );
    assert_eq!(alarm["Statistic"], "Sum");
    assert_eq!(alarm["Threshold"], "0");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "OperationsTopic"}]));
}

/// Whether a statement denies requests made without TLS.
fn denies_without_tls(statement: &Value) -> bool {
    statement["Effect"] == "Deny"
        && statement["Principal"] == "*"
        && statement["Condition"]["Bool"]["aws:SecureTransport"] == "false"
}

/// Resource policies never allow everyone.
fn assert_allows_no_one_unnamed(id: &str, document: &Value) {
    for statement in statements(document) {
        if statement["Effect"] == "Allow" {
            let principal = &statement["Principal"];
            assert!(
                principal != "*" && principal.get("AWS") != Some(&json!("*")),
                "{id}: allows everyone: {statement}"
            );
            for action in list(&statement["Action"]) {
                let action = text(action);
                assert!(
                    action != "*" && !action.ends_with(":*"),
                    "{id}: wildcard action {action}"
                );
            }
        }
    }
}

#[test]
fn the_upload_topic_takes_events_only_from_this_bucket_in_this_account() {
    let t = template();
    let policy = &resource(&t, "UploadTopicPolicy")["Properties"];
    assert_eq!(policy["Topics"], json!([{"Ref": "UploadTopic"}]));
    let document = &policy["PolicyDocument"];
    assert_allows_no_one_unnamed("UploadTopicPolicy", document);
    let allows: Vec<&Value> = statements(document)
        .into_iter()
        .filter(|s| s["Effect"] == "Allow")
        .collect();
    assert_eq!(allows.len(), 1, "only S3 publishes");
    let allow = allows[0];
    assert_eq!(allow["Principal"], json!({"Service": "s3.amazonaws.com"}));
    assert_eq!(allow["Action"], "sns:Publish");
    assert_eq!(allow["Resource"], reference("UploadTopic"));
    // The confused deputy: the bucket's ARN and its owner's account.
    let condition = &allow["Condition"];
    let source_arn = [&condition["ArnEquals"], &condition["ArnLike"]]
        .into_iter()
        .map(|operator| &operator["aws:SourceArn"])
        .find(|arn| !arn.is_null())
        .unwrap_or_else(|| panic!("no aws:SourceArn condition"));
    assert_eq!(
        source_arn,
        &json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::${CountersBucketName}"})
    );
    assert_eq!(
        condition["StringEquals"]["aws:SourceAccount"],
        reference("AWS::AccountId")
    );
    // The bucket the policy names is the one the template creates.
    assert_eq!(
        resource(&t, "CountersBucket")["Properties"]["BucketName"],
        reference("CountersBucketName")
    );
    assert!(
        statements(document).iter().any(|s| denies_without_tls(s)),
        "the upload topic must deny publishing without TLS"
    );
}

#[test]
fn the_bucket_blocks_public_access_and_requires_tls() {
    let t = template();
    let buckets = of_type(&t, "AWS::S3::Bucket");
    assert_eq!(buckets.len(), 1);
    for (id, bucket) in buckets {
        let p = &bucket["Properties"];
        assert_eq!(
            p["PublicAccessBlockConfiguration"],
            json!({
                "BlockPublicAcls": "true",
                "BlockPublicPolicy": "true",
                "IgnorePublicAcls": "true",
                "RestrictPublicBuckets": "true",
            }),
            "{id}"
        );
        assert!(
            p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                ["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
                .is_string(),
            "{id}: encryption at rest"
        );
        assert_eq!(
            p["OwnershipControls"]["Rules"][0]["ObjectOwnership"], "BucketOwnerEnforced",
            "{id}: no ACLs"
        );
        let policies: Vec<(&str, &Value)> = of_type(&t, "AWS::S3::BucketPolicy")
            .into_iter()
            .filter(|(_, policy)| policy["Properties"]["Bucket"] == reference(id))
            .collect();
        assert_eq!(policies.len(), 1, "{id}: one bucket policy");
        let document = &policies[0].1["Properties"]["PolicyDocument"];
        assert_allows_no_one_unnamed(policies[0].0, document);
        let deny = statements(document)
            .into_iter()
            .find(|s| denies_without_tls(s))
            .unwrap_or_else(|| panic!("{id}: no statement denies requests without TLS"));
        assert_eq!(deny["Action"], "s3:*");
        let covered: BTreeSet<String> =
            list(&deny["Resource"]).into_iter().map(canonical).collect();
        assert_eq!(
            covered,
            BTreeSet::from([
                format!("arn:${{AWS::Partition}}:s3:::${{{id}}}"),
                format!("arn:${{AWS::Partition}}:s3:::${{{id}}}/*"),
            ])
        );
    }
}

#[test]
fn topics_queues_and_tables_are_encrypted_and_deny_plain_connections() {
    let t = template();
    let topics = of_type(&t, "AWS::SNS::Topic");
    assert_eq!(topics.len(), 3);
    let topic_policies = of_type(&t, "AWS::SNS::TopicPolicy");
    for (id, topic) in &topics {
        assert!(
            topic["Properties"].get("KmsMasterKeyId").is_some(),
            "{id}: not encrypted at rest"
        );
        let guarded = topic_policies.iter().any(|(_, policy)| {
            list(&policy["Properties"]["Topics"]).contains(&&reference(id))
                && statements(&policy["Properties"]["PolicyDocument"])
                    .iter()
                    .any(|s| {
                        denies_without_tls(s) && list(&s["Resource"]).contains(&&reference(id))
                    })
        });
        assert!(guarded, "{id}: no policy denies requests without TLS");
    }
    for (id, policy) in &topic_policies {
        assert_allows_no_one_unnamed(id, &policy["Properties"]["PolicyDocument"]);
    }
    let queues = of_type(&t, "AWS::SQS::Queue");
    assert_eq!(queues.len(), 3);
    let queue_policies = of_type(&t, "AWS::SQS::QueuePolicy");
    for (id, queue) in &queues {
        let p = &queue["Properties"];
        assert!(
            p["SqsManagedSseEnabled"] == "true" || p.get("KmsMasterKeyId").is_some(),
            "{id}: not encrypted at rest"
        );
        let guarded = queue_policies.iter().any(|(_, policy)| {
            list(&policy["Properties"]["Queues"]).contains(&&reference(id))
                && statements(&policy["Properties"]["PolicyDocument"])
                    .iter()
                    .any(|s| {
                        denies_without_tls(s) && list(&s["Resource"]).contains(&&get_att(id, "Arn"))
                    })
        });
        assert!(guarded, "{id}: no policy denies requests without TLS");
    }
    for (id, policy) in &queue_policies {
        assert_allows_no_one_unnamed(id, &policy["Properties"]["PolicyDocument"]);
    }
    for (id, table) in of_type(&t, "AWS::DynamoDB::Table") {
        assert_eq!(
            table["Properties"]["SSESpecification"]["SSEEnabled"], "true",
            "{id}"
        );
    }
    // The topics' key: a key policy's Resource is the key itself, written
    // "*" (the one place a "*" resource is allowed); its actions are named,
    // and the services it lets in act only for this account's bucket and alarms.
    let keys = of_type(&t, "AWS::KMS::Key");
    assert_eq!(keys.len(), 1);
    let key = &keys[0].1["Properties"];
    assert_eq!(key["EnableKeyRotation"], "true");
    assert_allows_no_one_unnamed("TopicKey", &key["KeyPolicy"]);
    for statement in statements(&key["KeyPolicy"]) {
        assert_eq!(statement["Resource"], "*");
        if let Some(service) = statement["Principal"].get("Service") {
            assert_eq!(
                statement["Condition"]["StringEquals"]["aws:SourceAccount"],
                reference("AWS::AccountId"),
                "{service}"
            );
            assert!(
                statement["Condition"]["ArnLike"]["aws:SourceArn"].is_object(),
                "{service}"
            );
            for action in list(&statement["Action"]) {
                assert!(
                    ["kms:GenerateDataKey", "kms:Decrypt"].contains(&text(action)),
                    "{service}: {action}"
                );
            }
        }
    }
    for (id, _) in &topics {
        assert_eq!(
            resource(&t, id)["Properties"]["KmsMasterKeyId"],
            reference(keys[0].0),
            "{id}: S3 and CloudWatch can publish only to a topic under a key they may use"
        );
    }
}

// ------------------------------------------------------------------- alarms

#[test]
fn alarms_watch_errors_iterator_age_dead_letters_and_tallys_own_figures() {
    let t = template();
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    let watches = |namespace: &str, metric: &str, dimension: &str, value: &Value| {
        alarms.iter().any(|(_, alarm)| {
            let p = &alarm["Properties"];
            p["Namespace"] == namespace
                && p["MetricName"] == metric
                && list(&p["Dimensions"])
                    .iter()
                    .any(|d| d["Name"] == dimension && &d["Value"] == value)
        })
    };
    for (id, _, _) in FUNCTIONS {
        assert!(
            watches("AWS/Lambda", "Errors", "FunctionName", &reference(id)),
            "{id}: no alarm on its errors"
        );
    }
    for id in ["AggregateFunction", "RulesFunction"] {
        assert!(
            watches("AWS/Lambda", "IteratorAge", "FunctionName", &reference(id)),
            "{id}: no alarm on its iterator age"
        );
    }
    for (id, _) in of_type(&t, "AWS::SQS::Queue") {
        assert!(
            watches(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                &get_att(id, "QueueName")
            ),
            "{id}: no alarm on its depth"
        );
    }
    // The two alarms on tally's own figures.
    assert!(watches(
        tally_aws::metrics::NAMESPACE,
        "UploadsRejected",
        tally_aws::metrics::DIMENSION,
        &reference("IngestFunction")
    ));
    assert!(watches(
        tally_aws::metrics::NAMESPACE,
        "RuleErrors",
        tally_aws::metrics::DIMENSION,
        &reference("RulesFunction")
    ));
    for (id, alarm) in &alarms {
        let p = &alarm["Properties"];
        assert_eq!(
            p["AlarmActions"],
            json!([{"Ref": "OperationsTopic"}]),
            "{id}: must notify operations"
        );
        // Every metric of tally's namespace is one its function emits.
        if p["Namespace"] == tally_aws::metrics::NAMESPACE {
            let dimension = list(&p["Dimensions"])[0];
            assert_eq!(dimension["Name"], tally_aws::metrics::DIMENSION, "{id}");
            let function = text(&dimension["Value"]["Ref"]);
            let (_, _, stage) = FUNCTIONS
                .iter()
                .find(|(f, _, _)| *f == function)
                .unwrap_or_else(|| panic!("{id}: {function} is not a function"));
            let metric = text(&p["MetricName"]);
            // The aggregate function also runs the scheduled reconcile, and
            // the rules function the ticks.
            let also: &[Stage] = match stage {
                Stage::Aggregate => &[Stage::Reconcile],
                Stage::Rules => &[Stage::Tick],
                _ => &[],
            };
            assert!(
                std::iter::once(stage)
                    .chain(also)
                    .any(|s| s.metrics().iter().any(|m| m.name == metric)),
                "{id}: {function} emits no metric {metric}"
            );
        }
    }
}

#[test]
fn every_metric_reads_fields_the_stage_reports_really_have() {
    // A renamed report field would leave its metric at zero forever.
    let reports = [
        (
            Stage::Ingest,
            serde_json::to_value(tally_ingest::IngestReport::default()).unwrap(),
        ),
        (
            Stage::Aggregate,
            serde_json::to_value(tally_aggregate::AggregateReport::default()).unwrap(),
        ),
        (
            Stage::Reconcile,
            serde_json::to_value(tally_aggregate::scheduled::ScheduledReport::default()).unwrap(),
        ),
        (
            Stage::Rules,
            serde_json::to_value(tally_rules::RulesReport::default()).unwrap(),
        ),
        (
            Stage::Tick,
            serde_json::to_value(tally_rules::invocation::TickReport {
                rules: tally_rules::RulesReport {
                    newest_upload_age_seconds: Some(0),
                    ..tally_rules::RulesReport::default()
                },
                heartbeat: 0,
            })
            .unwrap(),
        ),
    ];
    for (stage, report) in reports {
        let line = tally_aws::metrics::line(stage, stage.name(), &report, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_str(&line).unwrap();
        for metric in stage.metrics() {
            assert_eq!(document[metric.name], 0, "{stage:?} {}", metric.name);
        }
    }
}

// -------------------------------------------------------------- the ticks

/// A scheduler role's grants; only this account's scheduler may take it.
fn scheduler_role_grants(t: &Value, id: &str) -> BTreeSet<(String, String)> {
    let role = &resource(t, id)["Properties"];
    assert!(role.get("ManagedPolicyArns").is_none(), "{id}");
    let trust = statements(&role["AssumeRolePolicyDocument"]);
    assert_eq!(trust.len(), 1, "{id}");
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "scheduler.amazonaws.com"})
    );
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        reference("AWS::AccountId"),
        "{id}"
    );
    let mut granted = BTreeSet::new();
    for policy in list(&role["Policies"]) {
        for statement in statements(&policy["PolicyDocument"]) {
            assert_eq!(statement["Effect"], "Allow", "{id}");
            for action in list(&statement["Action"]) {
                for resource in list(&statement["Resource"]) {
                    granted.insert((text(action).to_owned(), canonical(resource)));
                }
            }
        }
    }
    granted
}

#[test]
fn a_schedule_ticks_the_rules_function_every_minute_with_an_event_it_takes() {
    use tally_rules::invocation::{Invocation, TICK_EVENT, decode_invocation};

    let t = template();
    let ticks: Vec<(&str, &Value)> = of_type(&t, "AWS::Scheduler::Schedule")
        .into_iter()
        .filter(|(_, s)| s["Properties"]["Target"]["Arn"] == get_att("RulesFunction", "Arn"))
        .collect();
    assert_eq!(ticks.len(), 1, "one schedule ticks the rules function");
    let (id, schedule) = ticks[0];
    let p = &schedule["Properties"];
    assert_eq!(p["ScheduleExpression"], reference("TickSchedule"), "{id}");
    assert_eq!(t["Parameters"]["TickSchedule"]["Default"], "rate(1 minute)");
    assert_eq!(p["State"], "ENABLED", "{id}: the clock is not optional");
    assert_eq!(p["FlexibleTimeWindow"]["Mode"], "OFF", "{id}");
    let target = &p["Target"];
    assert_eq!(
        target["RoleArn"],
        get_att("TickScheduleRole", "Arn"),
        "{id}"
    );
    // The input is the tick the function decodes, and the one the tools send.
    let input: Value = serde_json::from_str(text(&target["Input"]))
        .unwrap_or_else(|e| panic!("{id}: Input is not JSON: {e}"));
    assert_eq!(input, serde_json::from_str::<Value>(TICK_EVENT).unwrap());
    assert!(
        matches!(decode_invocation(input.clone()), Ok(Invocation::Tick)),
        "{id}: {input} is not a tick to the rules function"
    );
    // A tick that failed is retried, but not into the next tick's minute.
    let retry = &target["RetryPolicy"];
    let attempts: u64 = text(&retry["MaximumRetryAttempts"]).parse().unwrap();
    let age: u64 = text(&retry["MaximumEventAgeInSeconds"]).parse().unwrap();
    assert!((1..=3).contains(&attempts), "{id}: {attempts} retries");
    assert_eq!(age, 60, "{id}: the next tick is a minute away");
    // Its role may only invoke the rules function.
    assert_eq!(
        scheduler_role_grants(&t, "TickScheduleRole"),
        pairs(&[("lambda:InvokeFunction", "RulesFunction.Arn")])
    );
}

#[test]
fn a_dead_clock_pages_operations_and_so_does_a_silent_fleet() {
    let t = template();
    let evaluator = Evaluator {
        template: &t,
        conditions: false,
    };
    let dimension =
        json!([{"Name": tally_aws::metrics::DIMENSION, "Value": {"Ref": "RulesFunction"}}]);
    let emitted = |metric: &str| Stage::Tick.metrics().iter().any(|m| m.name == metric);

    let alarm = &resource(&t, "TickHeartbeatAlarm")["Properties"];
    assert_eq!(alarm["Namespace"], tally_aws::metrics::NAMESPACE);
    assert_eq!(alarm["MetricName"], "Heartbeat");
    assert!(emitted("Heartbeat"));
    assert_eq!(alarm["Dimensions"], dimension);
    assert_eq!(alarm["Statistic"], "Sum");
    assert_eq!(alarm["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(alarm["Threshold"], "1");
    // A dead schedule sends nothing at all: that must page.
    assert_eq!(alarm["TreatMissingData"], "breaching");
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "OperationsTopic"}]));
    assert_eq!(alarm["OKActions"], json!([{"Ref": "OperationsTopic"}]));
    // At the default tick: one missed tick does not page, a dead clock does
    // within five minutes.
    let period: u64 = evaluate_number(&evaluator, &alarm["Period"]);
    let periods: u64 = text(&alarm["EvaluationPeriods"]).parse().unwrap();
    let to_alarm: u64 = text(&alarm["DatapointsToAlarm"]).parse().unwrap();
    assert_eq!(period, 60);
    assert!(
        to_alarm >= 2 && to_alarm <= periods,
        "{to_alarm} of {periods}"
    );
    assert!(
        period * to_alarm <= 180,
        "pages after {} s",
        period * to_alarm
    );
    // The period follows a slower tick.
    let slower = Evaluator {
        template: &t,
        conditions: true,
    };
    assert_eq!(evaluate_number(&slower, &alarm["Period"]), 300);

    let alarm = &resource(&t, "NewestUploadAgeAlarm")["Properties"];
    assert_eq!(alarm["Namespace"], tally_aws::metrics::NAMESPACE);
    assert_eq!(alarm["MetricName"], "NewestUploadAge");
    assert!(emitted("NewestUploadAge"));
    assert_eq!(alarm["Dimensions"], dimension);
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["Threshold"], reference("NewestUploadMaxAgeSeconds"));
    assert_eq!(
        t["Parameters"]["NewestUploadMaxAgeSeconds"]["Default"],
        "900"
    );
    // No upload listed keeps the state: a fresh stack does not page, a
    // fleet that went silent stays paged.
    assert_eq!(alarm["TreatMissingData"], "ignore");
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "OperationsTopic"}]));
}

/// A number the template may choose by condition (`Fn::If`).
fn evaluate_number(evaluator: &Evaluator<'_>, value: &Value) -> u64 {
    let mut value = value;
    while let Some(branches) = value.get("Fn::If") {
        value = &branches[if evaluator.conditions { 1 } else { 2 }];
    }
    text(value)
        .parse()
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}
