"""File formats the engine reads and writes: atomic writes, OBJ, FLAME pickles, images, video."""
