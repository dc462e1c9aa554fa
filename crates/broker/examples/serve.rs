//! Starts a broker and serves until standard input closes, for trying any
//! Kafka client against it by hand:
//!
//! ```sh
//! cargo run -p recstream-broker --example serve -- [TOPIC[:PARTITIONS]]...
//! ```
//!
//! It prints `bootstrap.servers` on the first line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

use recstream_broker::{Broker, BrokerConfig};

fn main() {
    let broker = Broker::start(BrokerConfig::default()).expect("the broker starts");
    for arg in std::env::args().skip(1) {
        let (name, partitions) = match arg.split_once(':') {
            Some((n, p)) => (n.to_string(), p.parse().expect("a partition count")),
            None => (arg, 1),
        };
        broker
            .create_topic(&name, partitions, &[])
            .expect("topic created");
    }
    println!("{}", broker.bootstrap());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
