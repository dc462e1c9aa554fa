//! Fetching public rating data sets.
