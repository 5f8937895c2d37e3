//! Data: images and their preprocessing, class tables.
pub mod imagenet;
pub mod preprocess;
