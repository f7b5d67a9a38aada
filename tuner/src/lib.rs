//! Fine-tune a small transformer under governance: admission, depth
//! profiles, gradient routing, measurement, memorisation rollback and
//! gradient sketches, on candle.
//!
//! Not built yet (its own issue); it exports nothing today.
