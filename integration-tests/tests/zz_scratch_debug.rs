#![cfg(feature = "broker")]
use evalstream_integration_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
#[test]
fn scratch() {
    let t = unique_name("scratch");
    create_topic(&t, 1);
    let d = produce_raw(&t, &[RawRecord::new("a"), RawRecord::new("b"), RawRecord::new("c")]);
    eprintln!("delivered {d:?}");
    let c: BaseConsumer = client_config().set("group.id", "x").create().unwrap();
    eprintln!("wm {:?}", c.fetch_watermarks(&t, 0, std::time::Duration::from_secs(5)));
    let r = read_topic_with(&t, Isolation::ReadUncommitted);
    eprintln!("read {}", r.len());
    std::thread::sleep(std::time::Duration::from_secs(2));
    eprintln!("wm {:?}", c.fetch_watermarks(&t, 0, std::time::Duration::from_secs(5)));
    let r = read_topic_with(&t, Isolation::ReadCommitted);
    eprintln!("read {}", r.len());
}
