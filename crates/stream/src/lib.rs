//! Kafka streaming layer.
