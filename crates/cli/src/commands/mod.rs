//! One module per subcommand: each parses its own arguments and wires library calls together.

pub mod bench;
pub mod data;
pub mod eval;
pub mod generate;
pub mod learn;
pub mod model;
pub mod recommend;
pub mod retrain;
pub mod run;
pub mod serve;
pub mod tools;
pub mod train;
