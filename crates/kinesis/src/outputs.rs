//! Where a Kinesis worker's replies and dead letters go: a Kinesis stream
//! (through the key-ordered [`Sink`]) or a Kafka topic (through a
//! producer), behind one `send` that resolves once the output is
//! acknowledged or refused.

use futures::future::BoxFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};
use recstream_stream::kafka::{KafkaSettings, LoggingContext};

use crate::sink::Sink;

/// Where replies or dead letters go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Kinesis stream, keyed by the uid (a dead letter: the request's key).
    Kinesis(String),
    /// A Kafka topic.
    Kafka {
        /// The cluster.
        settings: KafkaSettings,
        /// The topic.
        topic: String,
    },
}

/// A writer of replies or dead letters to a [`Target`]; cheap to clone.
#[derive(Clone)]
pub struct Writer(Inner);

#[derive(Clone)]
enum Inner {
    Kinesis(Sink),
    Kafka {
        producer: FutureProducer<LoggingContext>,
        topic: String,
    },
}

/// An output delivered, or why not.
pub type Delivered = Result<(), String>;

impl Writer {
    /// A writer to `target`: a sink holding up to `capacity` records
    /// queued, or a Kafka producer.
    pub fn new(
        target: &Target,
        client: &aws_sdk_kinesis::Client,
        capacity: usize,
    ) -> Result<Writer, rdkafka::error::KafkaError> {
        Ok(Writer(match target {
            Target::Kinesis(stream) => {
                Inner::Kinesis(Sink::start(client.clone(), stream, capacity))
            }
            Target::Kafka { settings, topic } => Inner::Kafka {
                producer: settings
                    .producer()
                    .create_with_context(LoggingContext::new("kinesis-worker"))?,
                topic: topic.clone(),
            },
        }))
    }

    /// Where it writes, for messages.
    pub fn name(&self) -> String {
        match &self.0 {
            Inner::Kinesis(sink) => format!("Kinesis stream {:?}", sink.stream()),
            Inner::Kafka { topic, .. } => format!("Kafka topic {topic:?}"),
        }
    }

    /// Sends one output; resolves when it is acknowledged or refused.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Delivered> {
        match &self.0 {
            Inner::Kinesis(sink) => {
                let answer = sink.send(key.unwrap_or_default(), payload).await;
                Box::pin(async move {
                    match answer.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the Kinesis sink stopped".to_string()),
                    }
                })
            }
            Inner::Kafka { producer, topic } => {
                let mut record = FutureRecord::to(topic).payload(&payload);
                if let Some(key) = key {
                    record = record.key(key);
                }
                match recstream_stream::delivery::send_with_backpressure(producer, record).await {
                    Ok(delivery) => Box::pin(async move {
                        match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("the producer stopped".to_string()),
                        }
                    }),
                    Err(e) => {
                        let reason = e.to_string();
                        Box::pin(async move { Err(reason) })
                    }
                }
            }
        }
    }
}
