"""stormproof: run long multi-stage HPC workflows to the end on cheap, interruptible capacity."""

__version__ = "0.1.0"
