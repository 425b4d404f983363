//! [`tally_core::capacity`] checked against the worked examples and rules
//! in AWS's DynamoDB Developer Guide.
//!
//! Why: tally's budgets (docs/design.md §8) are in DynamoDB capacity units, and
//! the stages report what AWS would bill by computing it from item sizes,
//! because a test server's own consumed-capacity figures are not real. If
//! these functions drifted from DynamoDB's published rules, every reported
//! figure and every budget check built on them would drift with them. Each
//! test quotes the example it checks and names the guide page it comes
//! from; a number written as "KB" in the guide is KiB (1,024 bytes), as the
//! guide's own arithmetic shows ("8 KB (4 KB × 2)", "1 KB + 4 KB").
//!
//! Pages quoted:
//!
//! - "DynamoDB item sizes and formats" (earlier revisions: "Item Sizes and
//!   Capacity Unit Consumption");
//! - "DynamoDB read and write operations" / "Managing Throughput Settings
//!   on Provisioned Tables" (capacity unit consumption for reads and writes);
//! - "Read/write capacity mode" (request and capacity units, transactional
//!   requests);
//! - "Amazon DynamoDB Transactions: How it works", section "Capacity
//!   management for transactions".

use std::collections::HashMap;

use serde_dynamo::{AttributeValue, Item};
use tally_core::aggregate::{Basis, Exact, PartialItem, SequenceNumber, TotalItem};
use tally_core::capacity::{consistent_read_units, item_size, number_size, write_units};
use tally_core::key::Date;

const KB: usize = 1024;

fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect::<HashMap<_, _>>()
        .into()
}

// ---- "DynamoDB item sizes and formats" ----------------------------------

#[test]
fn strings_are_the_utf8_bytes_of_name_and_value() {
    // "Strings are Unicode with UTF-8 binary encoding. The size of a string
    // is (number of UTF-8-encoded bytes of attribute name) + (number of
    // UTF-8-encoded bytes)."
    assert_eq!(
        item_size(&item(vec![(
            "Counter",
            AttributeValue::S("COUNTER1".into())
        )])),
        7 + 8
    );
    // Non-ASCII: "zähler" is 7 bytes, "計數" 6.
    assert_eq!(
        item_size(&item(vec![("zähler", AttributeValue::S("計數".into()))])),
        7 + 6
    );
}

#[test]
fn numbers_take_a_byte_per_two_significant_digits_plus_one() {
    // "Numbers are variable length, with up to 38 significant digits.
    // Leading and trailing zeroes are trimmed. The size of a number is
    // approximately (number of UTF-8-encoded bytes of attribute name) +
    // (1 byte per two significant digits) + (1 byte)."
    assert_eq!(number_size("191122"), 6 / 2 + 1);
    assert_eq!(number_size("12"), 1 + 1);
    // An odd count of digits still needs the byte for the last one.
    assert_eq!(number_size("12345"), 3 + 1);
    // Leading and trailing zeroes are trimmed.
    assert_eq!(number_size("0001000"), 1 + 1);
    assert_eq!(number_size("120000"), 1 + 1);
    assert_eq!(number_size("1.5000"), 1 + 1);
    // The largest number: 38 significant digits.
    assert_eq!(number_size(&"9".repeat(38)), 19 + 1);
    // With its name, as an attribute: "Value" (5) + the number.
    assert_eq!(
        item_size(&item(vec![("Value", AttributeValue::N("191122".into()))])),
        5 + 4
    );
}

#[test]
fn binary_values_count_their_raw_bytes_not_base64() {
    // "A binary value must be encoded in base64 format before it can be
    // sent to DynamoDB, but the value's raw byte length is used for
    // calculating size. The size of a binary attribute is (number of
    // UTF-8-encoded bytes of attribute name) + (number of raw bytes)."
    assert_eq!(
        item_size(&item(vec![("Blob", AttributeValue::B(vec![0u8; 300]))])),
        4 + 300
    );
}

#[test]
fn null_and_boolean_attributes_are_one_byte() {
    // "The size of a null attribute or a Boolean attribute is (number of
    // UTF-8-encoded bytes of attribute name) + (1 byte)."
    assert_eq!(
        item_size(&item(vec![("Deleted", AttributeValue::Bool(true))])),
        7 + 1
    );
    assert_eq!(
        item_size(&item(vec![("Nothing", AttributeValue::Null(true))])),
        7 + 1
    );
}

#[test]
fn lists_and_maps_add_three_bytes_and_one_per_element() {
    // "An attribute of type List or Map requires 3 bytes of overhead,
    // regardless of its contents. The size of a List or Map is (number of
    // UTF-8-encoded bytes of attribute name) + sum (size of nested elements)
    // + (3 bytes). The size of an empty List or Map is (number of
    // UTF-8-encoded bytes of attribute name) + (3 bytes)."
    // The current revision adds that each List or Map element also takes
    // 1 byte of overhead (as its translated editions read).
    assert_eq!(
        item_size(&item(vec![("Counters", AttributeValue::M(HashMap::new()))])),
        8 + 3
    );
    assert_eq!(
        item_size(&item(vec![("Basis", AttributeValue::L(Vec::new()))])),
        5 + 3
    );
    // A map's element is sized like an attribute: its name and its value.
    let counters: HashMap<String, AttributeValue> = [
        ("COUNTER1".to_owned(), AttributeValue::N("12345".into())),
        ("計數".to_owned(), AttributeValue::N("7".into())),
    ]
    .into();
    assert_eq!(
        item_size(&item(vec![("Counters", AttributeValue::M(counters))])),
        8 + 3 + (8 + 4 + 1) + (6 + 2 + 1)
    );
    let basis = vec![
        AttributeValue::N("1".into()),
        AttributeValue::N("22".into()),
        AttributeValue::N("333".into()),
    ];
    assert_eq!(
        item_size(&item(vec![("Basis", AttributeValue::L(basis))])),
        5 + 3 + (2 + 1) + (2 + 1) + (3 + 1)
    );
}

#[test]
fn an_item_is_the_sum_of_its_attributes() {
    // "The total size of an item is the sum of the lengths of its attribute
    // names and values, plus any applicable overhead as described below."
    let it = item(vec![
        ("Counter", AttributeValue::S("bids-won".into())),
        ("Date", AttributeValue::S("2015-11-16".into())),
        ("Value", AttributeValue::N("191122".into())),
        ("Gone", AttributeValue::Bool(false)),
    ]);
    assert_eq!(item_size(&it), (7 + 8) + (4 + 10) + (5 + 4) + (4 + 1));
}

// ---- Reads: "DynamoDB read and write operations" -------------------------

#[test]
fn strongly_consistent_reads_round_up_to_4_kb() {
    // "Item sizes for reads are rounded up to the next 4 KB multiple. For
    // example, reading a 3,500-byte item consumes the same throughput as
    // reading a 4 KB item."
    assert_eq!(consistent_read_units(Some(3_500)), 1);
    assert_eq!(consistent_read_units(Some(4 * KB)), 1);
    // "A strongly consistent read of an item that is 8 KB (4 KB × 2)
    // consumes 2 read capacity units."
    assert_eq!(consistent_read_units(Some(8 * KB)), 2);
    // GetItem: "if you read an item that is 3.5 KB, DynamoDB rounds the item
    // size to 4 KB. If you read an item of 10 KB, DynamoDB rounds the item
    // size to 12 KB."
    assert_eq!(consistent_read_units(Some(3 * KB + KB / 2)), 1);
    assert_eq!(consistent_read_units(Some(10 * KB)), 3);
    // "The items are 3 KB in size, and you want strongly consistent reads
    // ... 3 KB / 4 KB = 0.75, or 1 read capacity unit."
    assert_eq!(consistent_read_units(Some(3 * KB)), 1);
}

#[test]
fn reading_an_item_that_does_not_exist_costs_one_unit() {
    // "If you perform a read operation on an item that does not exist,
    // DynamoDB will still consume provisioned read throughput: A strongly
    // consistent read request consumes one read capacity unit."
    assert_eq!(consistent_read_units(None), 1);
}

#[test]
fn batch_get_rounds_each_item_before_adding() {
    // BatchGetItem: "DynamoDB first rounds up the size of each item to the
    // next 4 KB boundary, and then calculates the total size. ... if
    // BatchGetItem reads a 1.5 KB item and a 6.5 KB item, DynamoDB will
    // calculate the size as 12 KB (4 KB + 8 KB), not 8 KB (1.5 KB + 6.5 KB)."
    let items = [KB + KB / 2, 6 * KB + KB / 2];
    let batch: u64 = items.iter().map(|b| consistent_read_units(Some(*b))).sum();
    assert_eq!(batch, 12 / 4);
    assert_ne!(batch, consistent_read_units(Some(items.iter().sum())));
}

#[test]
fn a_query_is_billed_on_the_total_it_returns() {
    // Query: "All of the items returned are treated as a single read
    // operation, where DynamoDB computes the total size of all items and
    // then rounds up to the next 4 KB boundary. For example, suppose your
    // query returns 10 items whose combined size is 40.8 KB. DynamoDB rounds
    // the item size for the operation to 44 KB. If a query returns 1500
    // items of 64 bytes each, the cumulative size is 96 KB."
    let combined = (40.8 * KB as f64).ceil() as usize;
    assert_eq!(consistent_read_units(Some(combined)), 44 / 4);
    assert_eq!(consistent_read_units(Some(1_500 * 64)), 96 / 4);
}

#[test]
fn transactional_reads_are_twice_strongly_consistent_ones() {
    // "Read/write capacity mode": "if your item size is 8 KB, you require 2
    // read capacity units to sustain one strongly consistent read per
    // second, 1 read capacity unit if you choose eventually consistent
    // reads, or 4 read capacity units for a transactional read request."
    // capacity.rs has no transactional-read helper; tally makes no
    // transactional reads. The rule, on its strongly consistent figure:
    assert_eq!(2 * consistent_read_units(Some(8 * KB)), 4);
}

// ---- Writes: "DynamoDB read and write operations" ------------------------

#[test]
fn writes_round_up_to_1_kb() {
    // "Item sizes for writes are rounded up to the next 1 KB multiple. For
    // example, writing a 500-byte item consumes the same throughput as
    // writing a 1 KB item."
    assert_eq!(write_units(500), 1);
    assert_eq!(write_units(KB), 1);
    // "For PutItem, UpdateItem, and DeleteItem operations, DynamoDB rounds
    // the item size up to the next 1 KB. For example, if you put or delete
    // an item of 1.6 KB, DynamoDB rounds the item size up to 2 KB."
    assert_eq!(write_units((1.6 * KB as f64).ceil() as usize), 2);
    // "the items are 512 bytes in size ... 512 bytes / 1 KB = 0.5, or 1".
    assert_eq!(write_units(512), 1);
    // "a 3.5 KB item" needs 4 units (the BatchWriteItem example below).
    assert_eq!(write_units(3 * KB + KB / 2), 4);
}

#[test]
fn batch_write_rounds_each_item_before_adding() {
    // BatchWriteItem: "DynamoDB first rounds up the size of each item to the
    // next 1 KB boundary, and then calculates the total size. ... if
    // BatchWriteItem writes a 500 byte item and a 3.5 KB item, DynamoDB will
    // calculate the size as 5 KB (1 KB + 4 KB), not 4 KB (500 bytes +
    // 3.5 KB)."
    let items = [500, 3 * KB + KB / 2];
    let batch: u64 = items.iter().map(|b| write_units(*b)).sum();
    assert_eq!(batch, 5);
    assert_eq!(write_units(items.iter().sum()), 4);
}

fn date() -> Date {
    Date::parse("2015-11-16").expect("a valid date")
}

/// A partial item holding `counters` counters with 20-byte names.
fn partial(counters: usize) -> PartialItem {
    let mut partial = PartialItem::empty(&date(), 7);
    for i in 0..counters {
        let name = format!("counter-{i:012}");
        partial.sums.insert(name.clone(), Exact(123_456_789));
        partial.contributors.insert(name, 3);
    }
    partial.version = 5;
    partial.applied_through = SequenceNumber::parse("4421584500000000017450439091").unwrap();
    partial
}

#[test]
fn a_put_over_an_item_is_billed_on_the_larger_of_the_two() {
    // PutItem: "If an item with the same primary key exists in the table,
    // the operation replaces the item. For calculating provisioned
    // throughput consumption, the item size that matters is the larger of
    // the two." UpdateItem: "The provisioned throughput consumed reflects
    // the larger of these item sizes."
    let small = partial(2);
    let large = partial(200);
    assert!(small.item_size() < KB);
    assert!(large.item_size() > 4 * KB);
    let large_units = write_units(large.item_size());
    // Shrinking an item is billed on the old, larger one; growing it on
    // the new one; a first write on the new one alone.
    assert_eq!(small.write_units_over(Some(&large)), large_units);
    assert_eq!(large.write_units_over(Some(&small)), large_units);
    assert_eq!(small.write_units_over(None), 1);
}

#[test]
fn a_failed_conditional_write_is_billed_on_the_existing_item() {
    // "If the expression evaluates to false, DynamoDB will still consume
    // write capacity units from the table: If the item exists, the number
    // of write capacity units consumed depends on the size of the item.
    // (For example, a failed conditional write of a 1 KB item would consume
    // one write capacity unit; if the item were twice that size, the failed
    // conditional write would consume two write capacity units.) If the
    // item does not exist, DynamoDB will consume one write capacity unit."
    // (A later revision of the provisioned-throughput page words the first
    // case as "the size of the new item"; the capacity page keeps "the
    // item", i.e. the one that exists. tally bills the existing item.)
    assert_eq!(TotalItem::failed_write_units(None), 1);
    let total = TotalItem {
        counter: "bids-won".into(),
        date: date(),
        value: Some(Exact(191_122)),
        contributors: 4,
        basis: Basis(vec![1; 64]),
    };
    assert_eq!(TotalItem::failed_write_units(Some(&total)), 1);
    assert_eq!(write_units(KB), 1);
    assert_eq!(write_units(2 * KB), 2);
}

// ---- Transactions --------------------------------------------------------

#[test]
fn transactional_writes_are_twice_standard_ones() {
    // "Read/write capacity mode": "Transactional write requests require 2
    // write capacity units to perform one write per second for items up to
    // 1 KB. ... if your item size is 2 KB, you require 2 write capacity
    // units to sustain one write request per second or 4 write capacity
    // units for a transactional write request."
    assert_eq!(write_units(2 * KB), 2);
    assert_eq!(2 * write_units(2 * KB), 4);
    // "Amazon DynamoDB Transactions: How it works", "Capacity management
    // for transactions": "DynamoDB performs two underlying reads or writes
    // of every item in the transaction: one to prepare the transaction and
    // one to commit the transaction. ... suppose that your application
    // executes one transaction per second, and each transaction writes
    // three 500-byte items in your table. Each item requires two write
    // capacity units (WCUs): one to prepare the transaction and one to
    // commit the transaction. Therefore, you would need to provision six
    // WCUs to the table."
    let transaction: u64 = [500, 500, 500].iter().map(|b| 2 * write_units(*b)).sum();
    assert_eq!(transaction, 6);
    // capacity.rs has no transactional helper: the rules stage, the one
    // caller of TransactWriteItems (a put of an alert record and a
    // condition check of the day's mark), doubles the units itself.
}
