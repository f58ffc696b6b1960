//! The engine's insides, for its own CLI, tests, benches and fuzz targets: the packed model and
//! the reference forward, the weights loader, the CLI's input reader and `.npy` writer, RSS
//! readers, per-op timing. Not a stable API (hidden from the docs); users need none of it.
//! The files stay where they were in `src/`; this module only gathers them under one name.

#[path = "input.rs"]
pub mod input;
#[path = "mem.rs"]
pub mod mem;
#[path = "model/mod.rs"]
pub mod model;
#[path = "npy.rs"]
pub mod npy;
#[path = "timing.rs"]
pub mod timing;
#[path = "weights.rs"]
pub mod weights;
