//! Myriad engine.
